"""The admin routes under ``/_emulator/``: test helpers over HTTP.

They never need a key, never meet a simulated fault and are not recorded in ``calls``
(see the manual in ``emulator/__init__.py``).
"""

from __future__ import annotations

import re

from ._http import ApiError, HttpHandler, Route


class AdminApi(HttpHandler):
    """The operations of :data:`ROUTES`."""

    def op_calls(self) -> None:
        self._send_json({"calls": [list(c) for c in self.state.calls()]})

    def op_reset_calls(self) -> None:
        self._drain()
        self.state.reset_calls()
        self._send_json({})

    def op_batches(self) -> None:
        state = self.state
        self._send_json({"batches": [state.batch_summary(r) for r in state.store.all_batches()]})

    def op_files(self) -> None:
        self._send_json({"files": self.state.file_summaries()})

    def op_workers(self) -> None:
        self._send_json(self.state.workers())

    def op_health(self) -> None:
        self._send_json({"ok": True})

    def op_set_state(self, id: str) -> None:
        state = self.state
        body = self._read_json(required=True)
        new_state = body.get("state")
        if not isinstance(new_state, str):
            raise ApiError(
                400,
                "INVALID_ARGUMENT",
                'Body must be {"state": "EXPIRED"} (or {"state": "FAILED", "message": ..., '
                '"code": 13}).',
            )
        message = body.get("message")
        code = body.get("code", 13)
        if message is not None and not isinstance(message, str):
            raise ApiError(400, "INVALID_ARGUMENT", '"message" must be a string.')
        try:
            state.set_state(id, new_state, message, code)
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None
        except KeyError:
            raise ApiError(404, "NOT_FOUND", f"batches/{id} does not exist.") from None
        row = state.store.get_batch(id)
        self._send_json(state.batch_summary(row) if row is not None else {})


def _exactly(path: str) -> re.Pattern[str]:
    return re.compile(re.escape(path) + r"\Z")


#: The admin routes (a GET body is drained before the operation runs).
ROUTES: tuple[Route, ...] = (
    Route("GET", _exactly("/_emulator/calls"), AdminApi.op_calls, needs_key=False),
    Route("POST", _exactly("/_emulator/reset-calls"), AdminApi.op_reset_calls, needs_key=False),
    Route("GET", _exactly("/_emulator/batches"), AdminApi.op_batches, needs_key=False),
    Route("GET", _exactly("/_emulator/files"), AdminApi.op_files, needs_key=False),
    Route("GET", _exactly("/_emulator/workers"), AdminApi.op_workers, needs_key=False),
    Route("GET", _exactly("/_emulator/health"), AdminApi.op_health, needs_key=False),
    Route(
        "POST",
        re.compile(r"^/_emulator/batches/(?P<id>[A-Za-z0-9_-]+):setState$"),
        AdminApi.op_set_state,
        needs_key=False,
    ),
)
