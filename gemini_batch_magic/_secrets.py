"""Where the API key comes from, and keeping it out of everything we show.

A leaf module (it imports nothing of the package): the backend reads the key through
:func:`api_key`; every message a widget, magic, panel or the CLI shows goes through
:func:`redact`. The key itself is never stored, logged or shown.
"""

from __future__ import annotations

import os

__all__ = ["KEY_VARS", "api_key", "redact"]

#: The environment variables an API key is read from, in order.
KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


def api_key() -> tuple[str | None, str | None]:
    """``(key, variable it came from)``, or ``(None, None)`` when none is set."""
    for var in KEY_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value, var
    return None, None


def redact(text: object) -> str:
    """``str(text)`` with any API key from the environment replaced by ``***``.

    Used for every message a widget or magic shows, so a key echoed back in an error
    message from a proxy or the SDK never reaches a notebook.
    """
    out = str(text)
    for var in KEY_VARS:
        key = os.environ.get(var, "").strip()
        if len(key) >= 4:
            out = out.replace(key, "***")
    return out
