"""The Models API: ``models.get`` and ``models.list`` of the models the emulator knows.

The known models are the ``models`` option (``None``: every model name exists). A batch
may only be created on a known model whose methods include the batch's operation, and is
otherwise refused with the service's 404 (see :func:`check_model`).
"""

from __future__ import annotations

import re
from typing import Any

from ._config import DEFAULT_MODELS, EmulatorConfig
from ._http import VERSION, ApiError, HttpHandler, Route

_GENERATE_METHODS = ("generateContent", "countTokens", "createCachedContent",
                     "batchGenerateContent")
_EMBED_METHODS = ("embedContent", "countTextTokens", "countTokens", "asyncBatchEmbedContent")


def is_embedding_model(model_id: str) -> bool:
    """Whether a model id names an embedding model (``gemini-embedding-001``, ...)."""
    return "embedding" in model_id


def model_json(name: str) -> dict[str, Any]:
    """The Model resource of ``models/<id>`` (or ``tunedModels/<id>``), camelCase."""
    model_id = name.split("/", 1)[1] if "/" in name else name
    full = name if "/" in name else f"models/{name}"
    pretty = " ".join(p.capitalize() if not p[0].isdigit() else p for p in model_id.split("-"))
    if is_embedding_model(model_id):
        return {
            "name": full,
            "version": "001",
            "displayName": pretty,
            "description": f"{pretty} (served by the local emulator: synthetic vectors).",
            "inputTokenLimit": 2048,
            "outputTokenLimit": 1,
            "supportedGenerationMethods": list(_EMBED_METHODS),
        }
    return {
        "name": full,
        "version": "001",
        "displayName": pretty,
        "description": f"{pretty} (served by the local emulator: synthetic answers).",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": list(_GENERATE_METHODS),
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": True,
    }


def _not_found(name: str, method: str, version: str) -> ApiError:
    return ApiError(
        404,
        "NOT_FOUND",
        f"{name} is not found for API version {version}, or is not supported for {method}. "
        "Call ListModels to see the list of available models and their supported methods.",
    )


def check_model(config: EmulatorConfig, name: str, method: str, version: str) -> None:
    """Refuses (404, as the service) a batch ``method`` on a model that is not known or
    does not support it. ``name`` is ``models/<id>`` or ``tunedModels/<id>``."""
    if config.models is None:
        return
    if not config.knows_model(name):
        raise _not_found(name, method, version)
    methods = model_json(name)["supportedGenerationMethods"]
    if method not in methods:
        raise _not_found(name, method, version)


class ModelsApi(HttpHandler):
    """The operations on ``models/*`` (see :data:`ROUTES`)."""

    def op_model_get(self, model: str) -> None:
        self._drain()
        name = f"models/{model}"
        if not self.state.config.knows_model(name):
            raise _not_found(name, "get", self._version)
        self._send_json(model_json(name))

    def op_model_list(self) -> None:
        self._drain()
        models = self.state.config.models
        if models is None:
            models = DEFAULT_MODELS  # every name exists; list the usual ones
        names = [m for m in models if "/" not in m]  # tunedModels are listed elsewhere
        size = self._page_size(50)
        token = self._query.get("pageToken") or None
        start = 0
        if token:
            if not token.isdigit() or int(token) > len(names):
                raise ApiError(
                    400,
                    "INVALID_ARGUMENT",
                    f"Invalid page token {token!r}: pass the nextPageToken of the previous page.",
                )
            start = int(token)
        page = names[start : start + size]
        out: dict[str, Any] = {}
        if page:
            out["models"] = [model_json(m) for m in page]
        if start + size < len(names):
            out["nextPageToken"] = str(start + size)
        self._send_json(out)


#: The Models API's routes (a ``models/x:batch...`` create is a route of ``_batches_api``).
ROUTES: tuple[Route, ...] = (
    Route("GET", re.compile(rf"^/{VERSION}/models$"), ModelsApi.op_model_list),
    Route(
        "GET", re.compile(rf"^/{VERSION}/models/(?P<model>[A-Za-z0-9_.@-]+)$"),
        ModelsApi.op_model_get,
    ),
)
