"""``%gembatch help``: the magics' manual (reStructuredText) for a notebook or a terminal.

The manual is the magics module's docstring, written in the small part of
reStructuredText it uses: section titles underlined with ``=``, paragraphs, ``::``
literal blocks, ``*`` bullet lists, definition lists (an option line, its indented
description), simple tables (``====  ====`` borders) and inline ````code````, ``*em*``,
``**strong**`` and ``:role:`~target``` references. :func:`manual_html` renders that as
HTML (no docutils needed), :func:`manual_text` as plain text without the markup.
"""

from __future__ import annotations

import html
import re

__all__ = ["manual_html", "manual_text"]

_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
_CODE = re.compile(r"``(.+?)``")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EM = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")
_UNDERLINE = re.compile(r"^=+$")
_BORDER = re.compile(r"^=+( +=+)+$")


def _role_text(match: re.Match[str]) -> str:
    """``:class:`~a.b.C``` -> ``C``; ``:func:`a.b``` -> ``a.b`` (as Sphinx shows them)."""
    tilde, target = match.group(1), match.group(2)
    return target.rsplit(".", 1)[-1] if tilde else target


def _inline_html(text: str) -> str:
    out = []
    pos = 0
    for m in re.finditer(r"``(.+?)``|:[a-z]+:`(~?)([^`]+)`", text):
        out.append(_plain_html(text[pos:m.start()]))
        if m.group(1) is not None:
            code = m.group(1)
        else:
            code = m.group(3).rsplit(".", 1)[-1] if m.group(2) else m.group(3)
        out.append(f"<code>{html.escape(code)}</code>")
        pos = m.end()
    out.append(_plain_html(text[pos:]))
    return "".join(out).replace("$", "&#36;")


def _plain_html(text: str) -> str:
    text = html.escape(text)
    text = _STRONG.sub(r"<b>\1</b>", text)
    return _EM.sub(r"<em>\1</em>", text)


def _inline_text(text: str) -> str:
    text = _ROLE.sub(_role_text, text)
    text = _CODE.sub(r"\1", text)
    text = _STRONG.sub(r"\1", text)
    return _EM.sub(r"\1", text)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _blocks(source: str) -> list[tuple[str, object]]:
    """(kind, content) blocks: title, para, literal, bullets, deflist, table."""
    lines = source.expandtabs().strip("\n").splitlines()
    blocks: list[tuple[str, object]] = []
    i, literal_next = 0, False
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if literal_next and _indent(line) > 0:
            base = _indent(line)
            body = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) >= base):
                body.append(lines[i][base:])
                i += 1
            blocks.append(("literal", "\n".join(body).rstrip()))
            literal_next = False
            continue
        literal_next = False
        if i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1].strip()) and \
                not _BORDER.match(line.strip()):
            blocks.append(("title", line.strip()))
            i += 2
            continue
        if _BORDER.match(line.strip()):
            border = line
            spans = [(m.start(), m.end()) for m in re.finditer(r"=+", border)]
            rows: list[list[str]] = []
            i += 1
            while i < len(lines) and not _BORDER.match(lines[i].strip()):
                raw = lines[i]
                cells = [raw[a: (spans[k + 1][0] if k + 1 < len(spans) else None)].strip()
                         for k, (a, _) in enumerate(spans)]
                if rows and not cells[0]:  # a continuation of the row above
                    rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells,
                                                                          strict=True)]
                elif raw.strip():
                    rows.append(cells)
                i += 1
            i += 1  # the closing border
            blocks.append(("table", rows))
            continue
        if line.lstrip().startswith("* "):
            items: list[str] = []
            while i < len(lines) and lines[i].strip():
                text = lines[i].strip()
                if text.startswith("* "):
                    items.append(text[2:])
                else:
                    items[-1] += " " + text
                i += 1
            if items and items[-1].endswith("::"):
                items[-1] = items[-1][:-1]
                literal_next = True
            blocks.append(("bullets", items))
            continue
        if i + 1 < len(lines) and lines[i + 1].strip() and _indent(lines[i + 1]) > _indent(line):
            entries: list[tuple[str, str]] = []
            while i + 1 < len(lines) and lines[i].strip() and _indent(lines[i + 1]) > \
                    _indent(lines[i]):
                term = lines[i].strip()
                i += 1
                base = _indent(lines[i])
                desc = []
                while i < len(lines) and lines[i].strip() and _indent(lines[i]) >= base:
                    desc.append(lines[i].strip())
                    i += 1
                entries.append((term, " ".join(desc)))
            blocks.append(("deflist", entries))
            continue
        para = []
        while i < len(lines) and lines[i].strip():
            para.append(lines[i].strip())
            i += 1
        text = " ".join(para)
        if text.endswith("::"):
            text = text[:-1]
            literal_next = True
        blocks.append(("para", text))
    return blocks


def manual_html(source: str) -> str:
    """The manual as HTML (class ``gembatch-manual``; dollar signs stay literal)."""
    parts = []
    first = True
    for kind, content in _blocks(source):
        if kind == "title":
            tag = "h3" if first else "h4"
            parts.append(f"<{tag}>{_inline_html(str(content))}</{tag}>")
        elif kind == "para":
            parts.append(f"<p>{_inline_html(str(content))}</p>")
        elif kind == "literal":
            parts.append(f"<pre>{html.escape(str(content)).replace('$', '&#36;')}</pre>")
        elif kind == "bullets":
            items = "".join(f"<li>{_inline_html(x)}</li>" for x in content)  # type: ignore[attr-defined]
            parts.append(f"<ul>{items}</ul>")
        elif kind == "deflist":
            items = "".join(f"<dt>{_inline_html(t)}</dt><dd>{_inline_html(d)}</dd>"
                            for t, d in content)  # type: ignore[attr-defined]
            parts.append(f"<dl>{items}</dl>")
        elif kind == "table":
            rows = "".join("<tr>" + "".join(
                f"<td style='text-align:left;vertical-align:top;padding:2px 16px 2px 0'>"
                f"{_inline_html(c)}</td>" for c in row) + "</tr>"
                for row in content)  # type: ignore[attr-defined]
            parts.append(f"<table>{rows}</table>")
        first = first and kind != "title"
    return ("<div class='gembatch-manual mathjax_ignore tex2jax_ignore' "
            "style='max-width:820px;font-size:13px;line-height:1.5'>" + "".join(parts)
            + "</div>")


def manual_text(source: str) -> str:
    """The manual as plain text: the same layout without the inline markup."""
    out: list[str] = []
    for kind, content in _blocks(source):
        if kind == "title":
            title = _inline_text(str(content))
            out += [title, "=" * len(title)]
        elif kind == "para":
            out.append(_wrap(_inline_text(str(content))))
        elif kind == "literal":
            out.append("\n".join("    " + x if x else "" for x in str(content).splitlines()))
        elif kind == "bullets":
            out.append("\n".join(_wrap(_inline_text(x), "  * ", "    ")
                                 for x in content))  # type: ignore[attr-defined]
        elif kind == "deflist":
            out.append("\n".join(f"{_inline_text(t)}\n{_wrap(_inline_text(d), '    ', '    ')}"
                                 for t, d in content))  # type: ignore[attr-defined]
        elif kind == "table":
            rows = [[_inline_text(c) for c in row] for row in content]  # type: ignore[attr-defined]
            width = max(len(r[0]) for r in rows)
            out.append("\n".join(_wrap(" ".join(r[1:]), f"  {r[0]:<{width}}  ",
                                       " " * (width + 4)) for r in rows))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _wrap(text: str, first: str = "", rest: str = "") -> str:
    import textwrap

    return textwrap.fill(text, width=92, initial_indent=first, subsequent_indent=rest,
                         break_on_hyphens=False, break_long_words=False)
