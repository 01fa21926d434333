"""Self-contained HTML for attribution reports: inline CSS, PNG figures as base64 data URIs, no script, no network.

Safety: every builder escapes what it is given with ``html.escape`` (subject ids, file names, column values and
region names come from users' files); only :class:`Markup` returned by these builders is inserted verbatim. The page
is written atomically (temporary file + ``os.replace``) so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Iterable, Sequence
from numbers import Number
from pathlib import Path

import pandas as pd

__all__ = ["DISCLAIMER", "Markup", "text", "heading", "paragraph", "figure", "table", "details", "bullet_list", "page",
           "write_html"]

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
.scroll{max-height:480px;overflow:auto;display:inline-block}
"""


class Markup(str):
    """HTML produced by this module's builders: inserted verbatim, never escaped again."""


def _safe(value: object) -> str:
    return value if isinstance(value, Markup) else html.escape(str(value), quote=True)


def text(value: object) -> Markup:
    """Escaped text."""
    return Markup(html.escape(str(value), quote=True))


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
        return f"{int(value)}" if value.is_integer() and abs(value) < 1e12 else f"{value:.{digits}g}"
    return html.escape("" if value is None else str(value), quote=True)


def table(frame: pd.DataFrame, heat: Sequence[str] = (), digits: int = 3, scroll: bool = False) -> Markup:
    """An HTML table of ``frame`` (escaped); ``heat`` columns get a background shade proportional to their value
    relative to the largest value over all heat columns."""
    missing = [c for c in heat if c not in frame.columns]
    if missing:
        raise ValueError(f"heat columns {missing} are not in the table columns {list(frame.columns)}")
    top = max((float(frame[c].max()) for c in heat if len(frame)), default=0.0)
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])}
    head = "".join(f'<th class="{"" if c in numeric else "t"}">{html.escape(str(c))}</th>' for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, values):
            style = ""
            if column in heat and top > 0 and isinstance(value, Number) and not math.isnan(float(value)):
                style = f' style="background:rgba(214,69,25,{max(0.0, float(value)) / top * 0.85:.3f})"'
            cls = "" if column in numeric else ' class="t"'
            cells.append(f"<td{cls}{style}>{_cell(value, digits)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return Markup(f'<div class="scroll">{body}</div>' if scroll else body)


def page(title: str, sections: Sequence[tuple[str, Sequence[Markup | str]]], meta: Sequence[str] = ()) -> str:
    """The full document: title, meta lines, the research-use disclaimer, then ``(heading, blocks)`` sections."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<div class="meta">{html.escape(m)}</div>' for m in meta),
        f'<div class="disclaimer"><strong>{html.escape(DISCLAIMER)}</strong></div>',
    ]
    for heading, blocks in sections:
        anchor = "".join(ch if ch.isalnum() else "-" for ch in heading.lower())
        parts.append(f'<h2 id="{html.escape(anchor)}">{html.escape(heading)}</h2>')
        parts.extend(_safe(b) for b in blocks)
    parts.append(f'<div class="disclaimer">{html.escape(DISCLAIMER)}</div></body></html>')
    return "\n".join(parts)


def write_html(path: str | Path, document: str) -> Path:
    """Write atomically: a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(document)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
