"""Informational notices: through ``logging``, shown as a quiet line in a notebook.

A notice is not an error ("an identical run already exists", "no failed rows to retry",
"no API key: using the embedded emulator"), so it must not land in the red stderr box a
notebook uses for errors. :func:`notice` logs it at INFO on the package's logger
(``gemini_batch_magic.*``), where one :class:`NoticeHandler` shows it: in a Jupyter
kernel as a small grey line (a display), elsewhere on stderr as before. Silence them as
any log message: ``logging.getLogger("gemini_batch_magic").setLevel(logging.WARNING)``.

Our logger's WARNING and above still reach the user as without us: the handler shows
them when the root logger has no handler of its own (what ``logging.lastResort`` does).
"""

from __future__ import annotations

import html
import logging
import sys

from .._env import in_notebook

__all__ = ["NoticeHandler", "notice"]

LOGGER = "gemini_batch_magic"
_FLAG = "gembatch_notice"


class NoticeHandler(logging.Handler):
    """Shows notices (and, like ``lastResort``, warnings nobody else handles)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _FLAG, False):
            return True
        return record.levelno >= logging.WARNING and not logging.getLogger().handlers

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if in_notebook():
                from IPython.display import display

                safe = html.escape(text).replace("$", "&#36;")
                display({"text/plain": f"gemini_batch_magic: {text}",
                         "text/html": "<div class='gembatch-notice mathjax_ignore' style='"
                                      "font-size:12px;color:var(--jp-ui-font-color2,#59636e)"
                                      f"'>ⓘ gemini_batch_magic: {safe}</div>"}, raw=True)
            else:
                print(f"gemini_batch_magic: {text}", file=sys.stderr, flush=True)
        except Exception:  # a notice must never break the call that made it
            self.handleError(record)


def _install() -> None:
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, NoticeHandler) for h in logger.handlers):
        logger.addHandler(NoticeHandler(logging.INFO))
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


def notice(logger: str, text: str) -> None:
    """Log ``text`` as a notice on ``logger`` (a ``gemini_batch_magic.*`` name)."""
    _install()
    logging.getLogger(logger).info(text, extra={_FLAG: True})
