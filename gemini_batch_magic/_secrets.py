"""Where the API key comes from, and keeping it out of everything we show.

A leaf module (it imports nothing of the package): the backend reads the key through
:func:`api_key` (the environment, else Google Colab's secrets); every message a widget,
magic, panel or the CLI shows goes through :func:`redact`. The key itself is never stored,
logged or shown: runs keep only its :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
import os
import sys

__all__ = ["COLAB_SECRET", "KEY_VARS", "api_key", "fingerprint", "redact"]

#: The environment variables an API key is read from, in order.
KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


#: The Colab secret read when no key is in the environment (Colab's "Secrets" panel).
COLAB_SECRET = "GEMINI_API_KEY"


def api_key() -> tuple[str | None, str | None]:
    """``(key, where it came from)``, or ``(None, None)`` when there is none.

    The environment first (``GEMINI_API_KEY``, then ``GOOGLE_API_KEY``); in Google Colab
    with neither set, the notebook's secret ``GEMINI_API_KEY`` (source
    ``"Colab secret GEMINI_API_KEY"``).
    """
    for var in KEY_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value, var
    secret = _colab_secret()
    if secret:
        return secret, f"Colab secret {COLAB_SECRET}"
    return None, None


def _colab_secret() -> str | None:
    if "google.colab" not in sys.modules:  # only inside a Colab runtime
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(COLAB_SECRET)
    except Exception:  # no such secret, or notebook access not granted
        return None
    text = str(value or "").strip()
    return text or None


def fingerprint(key: str | None) -> str | None:
    """A short, one-way fingerprint of ``key`` (kept with runs to tell keys apart)."""
    if not key:
        return None
    return hashlib.sha256(b"gembatch-key\0" + key.encode()).hexdigest()[:12]


def redact(text: object) -> str:
    """``str(text)`` with any API key from the environment replaced by ``***``.

    Used for every message a widget or magic shows, so a key echoed back in an error
    message from a proxy or the SDK never reaches a notebook.
    """
    out = str(text)
    keys = [os.environ.get(var, "").strip() for var in KEY_VARS]
    if "google.colab" in sys.modules:
        keys.append(_colab_secret() or "")
    for key in keys:
        if len(key) >= 4:
            out = out.replace(key, "***")
    return out
