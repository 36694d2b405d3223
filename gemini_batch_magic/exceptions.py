"""The exceptions gemini_batch_magic raises, all rooted in :class:`GemBatchError`.

The whole tree::

    GemBatchError                      base of everything this package raises
    ├── InputError (ValueError)        bad input; raised before any request is sent or written
    │   ├── ColumnError (KeyError)     a column or template placeholder that does not exist
    │   ├── TemplateError              a template that is not a plain {column} template
    │   ├── EmptyPromptError           NaN / None / empty prompts (or pass on_empty="skip")
    │   ├── PromptTypeError (TypeError) prompt values that are not text
    │   ├── DuplicateKeyError          keys that are not unique
    │   └── RequestTooLargeError       one request larger than the inline and file limits
    ├── ConfigError (ValueError)       an invalid setting, model name or option value
    ├── CostLimitError                 the estimate exceeds ``max_cost``; nothing was sent
    │   └── ConfirmationRequired       the estimate exceeds ``confirm_above``: confirm first
    ├── RunNotFoundError (LookupError) no run with that id or batch name in the registry
    ├── RunNotDoneError                the run is still live (wait for it first)
    ├── BackendError                   the Gemini API (or the emulator) refused a call
    └── WaitTimeout (TimeoutError)     ``wait(timeout=...)`` ran out; the run goes on

Every error carries its context as keyword-only attributes, which code reads instead of the
message text (the wording is for people and may change): ``code`` (the HTTP status code of a
refused call), ``status`` (the service's status, e.g. ``"FAILED_PRECONDITION"``),
``batch_name``, ``run_id``, ``rows`` (the row labels at fault), ``size`` and ``limit`` (bytes
or counts). Any of them is None where it does not apply.

Errors from the ``google-genai`` SDK are wrapped in :class:`BackendError` with
``raise ... from``, so the original ``google.genai.errors.APIError`` stays reachable as
``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "ColumnError",
    "ConfigError",
    "ConfirmationRequired",
    "CostLimitError",
    "DuplicateKeyError",
    "EmptyPromptError",
    "GemBatchError",
    "InputError",
    "PromptTypeError",
    "RequestTooLargeError",
    "RunNotDoneError",
    "RunNotFoundError",
    "TemplateError",
    "WaitTimeout",
]


class GemBatchError(Exception):
    """Base class of every error gemini_batch_magic raises."""

    #: The names of the context fields every error carries (None where they do not apply).
    FIELDS: tuple[str, ...] = ("code", "status", "batch_name", "run_id", "rows", "size",
                               "limit")

    def __init__(
        self,
        message: str = "",
        *,
        code: int | None = None,
        status: str | None = None,
        batch_name: str | None = None,
        run_id: str | None = None,
        rows: list[Any] | None = None,
        size: int | None = None,
        limit: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.batch_name = batch_name
        self.run_id = run_id
        self.rows = rows
        self.size = size
        self.limit = limit

    def fields(self) -> dict[str, Any]:
        """The context fields that are set, e.g. ``{"code": 400, "status": "INVALID_ARGUMENT"}``."""
        return {k: getattr(self, k) for k in self.FIELDS if getattr(self, k) is not None}

    def __reduce__(self) -> Any:  # keep the fields across pickling (e.g. from a worker)
        return (_rebuild, (type(self), self.args, self.fields()))


class InputError(GemBatchError, ValueError):
    """The input cannot be turned into requests; nothing was sent or written."""


class ColumnError(InputError, KeyError):
    """A named column, or a template placeholder, is not a column of the DataFrame."""

    def __str__(self) -> str:  # KeyError would repr() the message and add quotes
        return str(self.args[0]) if self.args else ""


class TemplateError(InputError):
    """A prompt template uses syntax other than plain ``{column}`` placeholders."""


class EmptyPromptError(InputError):
    """Some prompts are NaN, None or empty."""


class PromptTypeError(InputError, TypeError):
    """Some prompt values are not text."""


class DuplicateKeyError(InputError):
    """The row keys (index or key column) are not unique.

    ``key`` is a repeated value (when one is named) and ``rows`` where it occurs: index
    labels, or ``(file, row)`` pairs for a file run.
    """

    FIELDS = (*GemBatchError.FIELDS, "key")

    def __init__(self, message: str = "", *, key: Any = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.key = key


class RequestTooLargeError(InputError):
    """A single request is larger than the service accepts."""


class ConfigError(GemBatchError, ValueError):
    """A setting, model name or option has an invalid value."""


class CostLimitError(GemBatchError):
    """The estimated cost exceeds ``max_cost``; nothing was submitted."""


class ConfirmationRequired(CostLimitError):
    """The estimate is above ``confirm_above`` and the run was not confirmed; nothing was sent.

    ``estimate`` is the :class:`~gemini_batch_magic.Estimate` that needs a yes, ``limit`` the
    threshold (USD). Confirm with ``confirm=True`` (Python) or ``--yes`` (magic, CLI), or in a
    notebook with the Submit button the magic shows.
    """

    estimate: Any = None


class RunNotFoundError(GemBatchError, LookupError):
    """No run with this id or batch name is in the registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RunNotDoneError(GemBatchError):
    """The run is still live: wait for it (``run.wait()``) before asking for this."""


class BackendError(GemBatchError):
    """The Gemini API, or the emulator standing in for it, refused a call."""

    #: True when the failure was transient (a timeout, 429 or 5xx): trying later may work.
    retryable: bool = False
    #: the ``reason`` of the service's ``google.rpc.ErrorInfo``, e.g. ``"API_KEY_INVALID"``
    reason: str | None = None


class WaitTimeout(GemBatchError, TimeoutError):
    """``wait(timeout=...)`` returned before the run finished; the run itself goes on."""


def _rebuild(cls: type[GemBatchError], args: tuple[Any, ...], fields: dict[str, Any]) -> Any:
    err = cls(*args, **fields)
    return err
