"""HTML builders: user strings are escaped, figures are embedded, the page is self-contained and written atomically."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from brainage.report import render as R
from brainage.report.figures import prediction_scatter_png

EVIL = "<script>alert(1)</script>"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.srcs += [v for k, v in attrs if k in ("src", "href")]

    def handle_data(self, data):
        self.text.append(data)


def _parse(document: str) -> _Collect:
    parser = _Collect()
    parser.feed(document)
    return parser


def test_user_strings_are_shown_as_text_not_markup(tmp_path):
    frame = pd.DataFrame({"subject_id": [EVIL, "sub-02"], "predicted_age": [41.5, float("nan")],
                          "region": ['L-"x"&<b>', "R-y"], "share": [0.9, 0.3]})
    sections = [
        (f"Cohort {EVIL}", [R.paragraph("file ", EVIL, R.text(" & more")), R.table(frame, heat=["share"]),
                            R.heading(EVIL, 4), R.details(EVIL, R.bullet_list([EVIL])), EVIL]),
    ]
    document = R.page(f"title {EVIL}", sections, meta=[f"inputs: {EVIL}"])
    parsed = _parse(document)
    assert "script" not in parsed.tags and "<script" not in document
    text = "".join(parsed.text)
    assert text.count(EVIL) == 11  # title, h1, meta, contents, h2, p, td, h4, summary, li, bare str: all plain text
    assert 'L-"x"&<b>' in text and "b" not in parsed.tags
    assert "41.5" in document and "<td></td>" in document  # NaN shown as an empty cell
    path = R.write_html(tmp_path / "out" / "index.html", document)
    assert path.read_text() == document and not list((tmp_path / "out").glob(".*tmp"))


def test_figures_are_embedded_and_the_page_needs_no_network():
    png = prediction_scatter_png([20, 40, 60], [25, 38, 66])
    document = R.page("t", [("Figures", [R.figure(png, "scatter <1>")])])
    (src,) = [s for s in _parse(document).srcs if not s.startswith("#")]  # "#...": the contents' in-page links
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == png
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", document) and "@import" not in document
    assert "scatter &lt;1&gt;" in document and R.DISCLAIMER.split(".")[0] in document
    with pytest.raises(ValueError, match="PNG"):
        R.figure(b"GIF89a", "not a png")


def test_heat_shading_scales_with_the_value():
    document = R.table(pd.DataFrame({"region": ["a", "b"], "f": [1.0, 0.5]}), heat=["f"])
    alphas = [float(a) for a in re.findall(r"rgba\(214,69,25,([0-9.]+)\)", document)]
    assert alphas == pytest.approx([0.85, 0.425])
    with pytest.raises(ValueError, match="heat columns"):
        R.table(pd.DataFrame({"a": [1]}), heat=["b"])


def test_tables_scroll_sideways_inside_the_page():
    """A wide table scrolls in its own box instead of widening the page; ``scroll`` also caps its height."""
    frame = pd.DataFrame({f"column {i}": [1.0] for i in range(30)})
    assert R.table(frame).startswith('<div class="wide"><table>')
    assert R.table(frame, scroll=True).startswith('<div class="scroll"><table>')
    assert ".wide{max-width:100%;overflow-x:auto}" in R.CSS and ".scroll{max-height:480px;overflow:auto" in R.CSS
