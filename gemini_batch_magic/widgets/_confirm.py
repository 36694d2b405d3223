"""The confirmation of a costly run: its estimate and a "Submit ($6.49)" button.

A view: it is handed an estimate (read by duck type: ``cost_usd``, ``requests``, ``model``,
``input_tokens``, ``output_tokens``, ``shards``, ``mode``, ``price_note``) and a callback
that sends the run; it imports no engine module. ``%%gembatch`` shows it instead of sending
when the estimate is above ``confirm_above`` in an interactive notebook; the jobs panel can
show the same for its submit form::

    ConfirmSubmit(exc.estimate, lambda: gbm.submit(df, ..., confirm=True),
                  limit=settings.confirm_above)

Clicking Submit calls the callback once; a run it returns (anything with ``watch``) is then
shown below as its live :class:`~._progress_widget.ProgressWidget`; an error it raises is
shown in red and Submit can be clicked again. "Don't send" closes the question.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from .._secrets import redact

try:  # guarded as in _progress_widget: fail when a widget is built, not on import
    import ipywidgets as w
except ImportError:  # pragma: no cover - ipywidgets is a dependency of the package
    w = None  # type: ignore[assignment]

__all__ = ["ConfirmSubmit", "usd"]


def usd(amount: float | None) -> str:
    """``$6.49``; cents are kept for small amounts (``$0.0031``)."""
    if amount is None:
        return "an unknown amount"
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


class ConfirmSubmit:
    """Ask before sending a run estimated above ``limit`` (USD).

    ``ConfirmSubmit(estimate, on_submit, limit=5.0)`` displays itself (``display_now=False``
    only builds it). ``on_submit()`` sends the run and returns it. Parts, for tests and
    layouts: ``box`` (the VBox, CSS class ``gembatch-confirm``), ``summary``,
    ``submit_button`` (``gembatch-confirm-submit``), ``dismiss_button``, ``message``;
    after a successful click ``value`` is what ``on_submit`` returned and ``progress`` its
    widget, and ``sent`` is true. :meth:`click` does what clicking Submit does.
    """

    def __init__(self, estimate: Any, on_submit: Callable[[], Any], *,
                 limit: float | None = None, note: str | None = None,
                 display_now: bool = True) -> None:
        if w is None:
            raise ImportError(
                "ConfirmSubmit needs ipywidgets>=8.1, a dependency of gemini_batch_magic that "
                "is not importable here: reinstall gemini_batch_magic (or install "
                "'ipywidgets>=8.1') and restart the kernel")
        self.estimate = estimate
        self.limit = limit
        self.on_submit = on_submit
        self.sent = False  #: True once on_submit has returned
        self.value: Any = None
        self.progress: Any = None
        cost = usd(getattr(estimate, "cost_usd", None))
        self.summary = w.HTML(self._summary_html(note))
        self.submit_button = w.Button(description=f"Submit ({cost})", icon="paper-plane",
                                      button_style="warning", layout=w.Layout(width="auto"),
                                      tooltip=f"Send these {estimate.requests:,} requests")
        self.submit_button.add_class("gembatch-confirm-submit")
        self.submit_button.on_click(self._on_submit)
        self.dismiss_button = w.Button(description="Don't send", layout=w.Layout(width="auto"))
        self.dismiss_button.on_click(self._on_dismiss)
        self.message = w.HTML()
        self.box = w.VBox([self.summary, w.HBox([self.submit_button, self.dismiss_button]),
                           self.message])
        self.box.add_class("gembatch-confirm")
        if display_now:
            from IPython.display import display

            display(self)

    def _summary_html(self, note: str | None) -> str:
        est = self.estimate
        limit = f" (above <code>confirm_above</code> = {usd(self.limit)})" if self.limit else ""
        extra = f"<br><small>{html.escape(note)}</small>" if note else ""
        return (
            f"<b>Estimated {usd(est.cost_usd)}</b>{limit}: {est.requests:,} requests to "
            f"<code>{html.escape(str(est.model))}</code>, ~{est.input_tokens:,} input + "
            f"~{est.output_tokens:,} output tokens, {est.shards} {html.escape(str(est.mode))} "
            f"shard(s).<br><small>{html.escape(str(est.price_note))}. Nothing has been sent."
            f"</small>{extra}")

    # -- events -------------------------------------------------------------------------
    def click(self) -> Any:
        """Send the run, as clicking Submit does; returns what ``on_submit`` returned."""
        self._on_submit()
        return self.value

    def _on_submit(self, _button: Any = None) -> None:
        if self.sent:  # a second click never sends twice
            return
        self.submit_button.disabled = self.dismiss_button.disabled = True
        self.message.value = "<small>sending…</small>"
        try:
            value = self.on_submit()
        except Exception as exc:  # shown, not lost in a comm handler's log
            self.message.value = (f"<span style='color:#dc3545'>not sent: "
                                  f"{html.escape(redact(exc))}</span>")
            self.submit_button.disabled = self.dismiss_button.disabled = False
            return
        self.sent, self.value = True, value
        self.submit_button.description = "Submitted"
        self.dismiss_button.layout.display = "none"
        self.message.value = ""
        if hasattr(value, "watch"):  # a run: follow it here
            from ._progress_widget import ProgressWidget

            self.progress = ProgressWidget(value, display_now=False)
            self.box.children = (*self.box.children, self.progress)
        else:
            self.message.value = f"<small>{html.escape(redact(repr(value)))}</small>"

    def _on_dismiss(self, _button: Any = None) -> None:
        self.submit_button.disabled = self.dismiss_button.disabled = True
        self.message.value = "<small>not sent.</small>"

    # -- display ------------------------------------------------------------------------
    def text(self) -> str:
        """What a front end without widgets shows."""
        est = self.estimate
        above = f", above confirm_above={usd(self.limit)}" if self.limit else ""
        return (f"estimated {usd(est.cost_usd)} for {est.requests:,} requests to {est.model}"
                f"{above}: not sent. Submit ({usd(est.cost_usd)}) needs a notebook with "
                "widgets; or send it with --yes (magic, CLI) or confirm=True (Python)")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return box_mimebundle(self.box, self.text(), include, exclude)

    def __repr__(self) -> str:
        return f"<ConfirmSubmit {self.text()}>"


def box_mimebundle(box: Any, text: str, include: Any = None,
                   exclude: Any = None) -> dict[str, Any]:
    """``box``'s widget bundle with ``text`` as its ``text/plain`` (what a frontend without
    widgets shows)."""
    bundle: Any = box._repr_mimebundle_(include=include, exclude=exclude)
    if isinstance(bundle, tuple):
        bundle = bundle[0]
    data = dict(bundle or {})
    data["text/plain"] = text
    return data
