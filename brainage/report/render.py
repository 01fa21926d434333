"""Self-contained HTML for attribution reports: inline CSS, PNG figures as base64 data URIs, no script, no network.

Safety: every builder escapes what it is given with ``html.escape`` (subject ids, file names, column values and
region names come from users' files); only :class:`Markup` returned by these builders is inserted verbatim. The page
is written atomically (``brainage.contracts.atomic``) so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from numbers import Number
from pathlib import Path

import pandas as pd

from brainage.contracts.atomic import write_text_atomic

__all__ = ["DISCLAIMER", "Markup", "text", "strong", "heading", "paragraph", "figure", "table", "details",
           "bullet_list", "row", "note", "page", "write_html", "format_p_value", "format_interval"]

DISCLAIMER = (
    "Research use only. Brain-age predictions and expert-region attributions are not validated for clinical use and "
    "must not be used for diagnosis or treatment decisions."
)

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;padding:0 18px 40px;
color:#1d1d1f;line-height:1.45}
h1{font-size:1.6em;margin:18px 0 4px}h2{border-bottom:2px solid #d0d7de;padding-bottom:4px;margin-top:34px}
h3{margin:22px 0 8px}
.disclaimer{background:#fff4e5;border-left:4px solid #f0a020;padding:8px 12px;margin:12px 0}
.meta{color:#555;font-size:.92em}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}
th,td{border:1px solid #d0d7de;padding:3px 7px;text-align:right}
th{background:#f3f5f7;position:sticky;top:0}td.t,th.t{text-align:left}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.scroll{max-height:480px;overflow:auto;display:inline-block}.wide{max-width:100%;overflow-x:auto}
nav.toc{background:#f6f8fa;border:1px solid #d0d7de;padding:6px 16px;margin:14px 0;display:inline-block}
nav.toc ol{margin:4px 0;padding-left:20px}nav.toc a{color:#0b5cad;text-decoration:none}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.row>div{flex:0 1 auto}
.note{background:#eef5fb;border-left:4px solid #5b8fc7;padding:6px 12px;margin:10px 0}
.lead{font-size:1.05em}
"""


class Markup(str):
    """HTML produced by this module's builders: inserted verbatim, never escaped again.

    ``markup + x`` stays Markup; a plain string ``x`` is escaped first.
    """

    def __add__(self, other: object) -> Markup:
        return Markup(str.__add__(self, _safe(other)))

    def __radd__(self, other: object) -> Markup:
        return Markup(_safe(other) + str(self))


def _safe(value: object) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value), quote=True)


def text(value: object) -> Markup:
    """Escaped text."""
    return Markup(html.escape(str(value), quote=True))


def strong(value: object) -> Markup:
    """Escaped text in bold."""
    return Markup(f"<strong>{_safe(value)}</strong>")


def heading(value: object, level: int = 3) -> Markup:
    if level not in (3, 4):
        raise ValueError(f"sub-headings are <h3> or <h4>, got level {level}")
    return Markup(f"<h{level}>{_safe(value)}</h{level}>")


def paragraph(*parts: object, cls: str = "") -> Markup:
    """A <p> of escaped strings and Markup pieces."""
    attr = f' class="{html.escape(cls)}"' if cls else ""
    return Markup(f"<p{attr}>" + "".join(_safe(p) for p in parts) + "</p>")


def bullet_list(items: Iterable[object]) -> Markup:
    return Markup("<ul>" + "".join(f"<li>{_safe(i)}</li>" for i in items) + "</ul>")


def figure(png: bytes, caption: str = "", alt: str = "") -> Markup:
    """An <img> with the PNG embedded as a base64 data URI."""
    if not png.startswith(b"\x89PNG"):
        raise ValueError("figure expects PNG bytes (signature \\x89PNG)")
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{_safe(caption)}</figcaption>" if caption else ""
    return Markup(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt or caption)}">{cap}</figure>')


def details(summary: object, body: Markup | str, open_: bool = False) -> Markup:
    return Markup(f"<details{' open' if open_ else ''}><summary>{_safe(summary)}</summary>{_safe(body)}</details>")


def _cell(value: object, digits: int) -> str:
    if isinstance(value, Number) and not isinstance(value, bool):
        value = float(value)
        if math.isnan(value):
            return ""
        if abs(value) >= 10**digits or (value.is_integer() and abs(value) < 1e12):
            return f"{value:.0f}"  # counts and large values as integers, never 1.23e+04
        return f"{value:.{digits}g}"
    return html.escape("" if value is None else str(value), quote=True)


def _shade(value: object, top: float, diverging: bool) -> str:
    """Background of a heat cell: red for positive values; blue for negative ones in diverging columns."""
    if top <= 0 or not isinstance(value, Number) or math.isnan(float(value)):
        return ""
    value = float(value)
    if value < 0 and not diverging:
        return ""
    colour = "214,69,25" if value >= 0 else "40,100,190"
    return f' style="background:rgba({colour},{min(abs(value) / top, 1.0) * 0.85:.3f})"'


def table(frame: pd.DataFrame, heat: Sequence[str] = (), digits: int = 3, scroll: bool = False,
          diverging: Sequence[str] = ()) -> Markup:
    """An HTML table of ``frame`` (escaped).

    Wide tables scroll sideways inside the page (``scroll``: also downwards, at most 480 px high). ``heat`` columns
    get a red background proportional to their (positive) value relative to the largest value over
    all heat columns; ``diverging`` columns are shaded red above and blue below zero, relative to their largest
    absolute value.
    """
    missing = [c for c in (*heat, *diverging) if c not in frame.columns]
    if missing:
        raise ValueError(f"heat columns {missing} are not in the table columns {list(frame.columns)}")
    top = max((float(frame[c].max()) for c in heat if len(frame)), default=0.0)
    spread = max((float(frame[c].abs().max()) for c in diverging if len(frame)), default=0.0)
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(f'<th class="{"" if c in numeric else "t"}">{html.escape(str(c))}</th>' for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, values):
            style = ""
            if column in diverging:
                style = _shade(value, spread, diverging=True)
            elif column in heat:
                style = _shade(value, top, diverging=False)
            cls = "" if column in numeric else ' class="t"'
            cells.append(f"<td{cls}{style}>{_cell(value, digits)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return Markup(f'<div class="{"scroll" if scroll else "wide"}">{body}</div>')


def row(*blocks: Markup | str) -> Markup:
    """Blocks side by side (wrapping on narrow screens)."""
    return Markup('<div class="row">' + "".join(f"<div>{_safe(b)}</div>" for b in blocks) + "</div>")


def note(*parts: object) -> Markup:
    """A highlighted paragraph (a reading aid)."""
    return paragraph(*parts, cls="note")


def format_p_value(p: float, shuffles: int) -> str:
    """A permutation p-value ``(1 + #{null >= observed}) / (1 + shuffles)``: "< 1/(shuffles+1)" at its floor, where
    no shuffle reached the observed value (the p-value is then only known to be below that)."""
    if shuffles < 1:
        raise ValueError(f"a permutation p-value needs at least one shuffle, got {shuffles}")
    if p <= 1.0 / (shuffles + 1) * (1 + 1e-9):
        return f"< 1/{shuffles + 1}"
    return f"{p:.2g}"


def format_interval(low: float, high: float, digits: int = 2, integer: bool = False) -> str:
    """``[low, high]`` ("" when either end is missing)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (low, high)):
        return ""
    if integer:
        return f"{round(low)}-{round(high)}"
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def _anchor(heading: str, used: set[str]) -> str:
    anchor = "".join(ch if ch.isalnum() else "-" for ch in heading.lower()).strip("-") or "section"
    unique, n = anchor, 2
    while unique in used:
        unique, n = f"{anchor}-{n}", n + 1
    used.add(unique)
    return unique


def page(title: str, sections: Sequence[tuple[str, Sequence[Markup | str]]], meta: Sequence[str] = (),
         toc: bool = True) -> str:
    """The full document: title, meta lines, the research-use disclaimer, a table of contents (``toc``), then
    ``(heading, blocks)`` sections."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<div class="meta">{html.escape(m)}</div>' for m in meta),
        f'<div class="disclaimer"><strong>{html.escape(DISCLAIMER)}</strong></div>',
    ]
    used: set[str] = set()
    anchors = [_anchor(heading, used) for heading, _ in sections]
    if toc and sections:
        items = "".join(f'<li><a href="#{a}">{html.escape(h)}</a></li>' for a, (h, _) in zip(anchors, sections))
        parts.append(f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>')
    for anchor, (heading, blocks) in zip(anchors, sections):
        parts.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>')
        parts.extend(_safe(b) for b in blocks)
    parts.append(f'<div class="disclaimer">{html.escape(DISCLAIMER)}</div></body></html>')
    return "\n".join(parts)


def write_html(path: str | Path, document: str) -> Path:
    """Write the page atomically (``brainage.contracts.atomic``: temporary file, fsync, rename)."""
    return write_text_atomic(path, document)
