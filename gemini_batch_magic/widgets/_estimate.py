"""The view of an estimate (``Estimate._repr_html_`` / ``_repr_mimebundle_``, the panel's form).

Read by duck type, like the other views: ``model``, ``rows``, ``requests``, ``skipped``,
``bytes``, ``mode``, ``shards``, ``input_tokens``, ``output_tokens``, ``cost_usd`` (None
when unpriced) and ``price_note``. Nothing here imports the engine.

No text a math renderer can take for LaTeX: JupyterLab typesets ``$...$`` found in HTML
output, which ate "$0.15/1M input, $1.25/1M output". Every ``$`` is written as the entity
``&#36;`` and the block carries ``mathjax_ignore``/``tex2jax_ignore`` (the classes MathJax
3 and 2 skip), so the dollar signs stay literal.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["estimate_headline", "estimate_html", "estimate_text", "format_bytes",
           "format_money"]


def format_bytes(n: int) -> str:
    """``5896799`` -> ``5.9 MB`` (powers of 1,000, as the service's limits are written)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{n:,} B"  # pragma: no cover


def format_money(usd: float | None) -> str:
    """``0.19362`` -> ``$0.19``; ``0.0019362`` -> ``$0.0019``; ``1234.5`` -> ``$1,234.50``;
    None -> ``unknown``."""
    if usd is None:
        return "unknown"
    if usd == 0:
        return "$0.00"
    if usd < 0.01:
        return f"${usd:.2g}"
    return f"${usd:,.2f}"


def _tokens(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:,.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:,.0f}k"
    return f"{n:,}"


def estimate_headline(est: Any) -> str:
    """``20,000 requests · 5.9 MB · file · 1 shard · ~$0.19 at batch prices``."""
    cost = (f"~{format_money(est.cost_usd)} at batch prices" if est.cost_usd is not None
            else "cost unknown (no batch price for this model)")
    return " · ".join([
        f"{est.requests:,} request{'s' if est.requests != 1 else ''}",
        format_bytes(est.bytes), est.mode,
        f"{est.shards} shard{'s' if est.shards != 1 else ''}", cost])


def _rows(est: Any) -> list[tuple[str, str]]:
    skipped = f" ({est.skipped:,} empty prompts skipped)" if est.skipped else ""
    return [
        ("model", est.model),
        ("requests", f"{est.requests:,} of {est.rows:,} rows{skipped}"),
        ("request data", f"{format_bytes(est.bytes)}, sent {est.mode}"
                         + (" (uploaded as a file)" if est.mode == "file" else "")),
        ("batch jobs", f"{est.shards} shard{'s' if est.shards != 1 else ''}"),
        ("tokens", f"~{_tokens(est.input_tokens)} input + ~{_tokens(est.output_tokens)} "
                   "output"),
        ("cost", f"~{format_money(est.cost_usd)} at batch prices" if est.cost_usd is not None
                 else "unknown"),
        ("prices", est.price_note),
    ]


def estimate_text(est: Any) -> str:
    """The estimate as plain text: the headline, then one ``label: value`` line each."""
    width = max(len(k) for k, _ in _rows(est))
    lines = [f"Estimate: {estimate_headline(est)}"]
    lines += [f"  {k:<{width}}  {v}" for k, v in _rows(est)]
    return "\n".join(lines)


def _dollars(text: str) -> str:
    """HTML-escaped ``text`` with every ``$`` as an entity (never read as TeX)."""
    return html.escape(text).replace("$", "&#36;")


def estimate_html(est: Any) -> str:
    """The estimate as a small HTML block: a headline and a table with human units.

    Styled inline (a cell's HTML output has no stylesheet of ours); CSS classes
    ``gembatch-estimate``, ``gembatch-estimate-headline``.
    """
    cells = "".join(
        f"<tr style='background:none'><th style='text-align:left;padding:1px 14px 1px 0;font-weight:600;"
        f"color:var(--jp-ui-font-color2,#59636e);white-space:nowrap;border:none;"
        f"background:none'>{_dollars(k)}</th>"
        f"<td style='text-align:left;padding:1px 0;border:none;background:none'>"
        f"{_dollars(v)}</td></tr>"
        for k, v in _rows(est))
    return (
        "<div class='gembatch-estimate mathjax_ignore tex2jax_ignore' style='font-size:13px;"
        "line-height:1.45;max-width:760px'>"
        "<div class='gembatch-estimate-headline' style='font-weight:600;margin-bottom:4px'>"
        f"Estimate: {_dollars(estimate_headline(est))}</div>"
        "<table style='border-collapse:collapse;font-size:12px;margin:0'>"
        f"{cells}</table></div>")
