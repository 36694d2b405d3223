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
    ├── RunNotFoundError (LookupError) no run with that id or batch name in the registry
    ├── BackendError                   the Gemini API (or the emulator) refused a call
    └── WaitTimeout (TimeoutError)     ``wait(timeout=...)`` ran out; the run goes on

Errors from the ``google-genai`` SDK are wrapped in :class:`BackendError` with
``raise ... from``, so the original ``google.genai.errors.APIError`` stays reachable as
``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ColumnError",
    "ConfigError",
    "CostLimitError",
    "DuplicateKeyError",
    "EmptyPromptError",
    "GemBatchError",
    "InputError",
    "PromptTypeError",
    "RequestTooLargeError",
    "RunNotFoundError",
    "TemplateError",
    "WaitTimeout",
]


class GemBatchError(Exception):
    """Base class of every error gemini_batch_magic raises."""


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
    """The row keys (index or key column) are not unique."""


class RequestTooLargeError(InputError):
    """A single request is larger than the service accepts."""


class ConfigError(GemBatchError, ValueError):
    """A setting, model name or option has an invalid value."""


class CostLimitError(GemBatchError):
    """The estimated cost exceeds ``max_cost``; nothing was submitted."""


class RunNotFoundError(GemBatchError, LookupError):
    """No run with this id or batch name is in the registry."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class BackendError(GemBatchError):
    """The Gemini API, or the emulator standing in for it, refused a call."""


class WaitTimeout(GemBatchError, TimeoutError):
    """``wait(timeout=...)`` returned before the run finished; the run itself goes on."""
