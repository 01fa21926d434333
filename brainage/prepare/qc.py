"""Quality control of prepared T1 volumes: template correlation, brain coverage, a PNG per subject, an HTML overview.

A failed affine registration (wrong orientation header, cropped head, failed skull strip) leaves the brain out of
register with the ICBM152 2009a template (Fonov et al. 2011). Two numbers catch it, both computed inside the template
brain mask on the output grid: ``qc_ncc``, the normalised (Pearson) correlation of the prepared image with the template
T1, and ``qc_coverage``, the fraction of template brain voxels that hold brain in the prepared image. The thresholds
(:data:`NCC_THRESHOLD`, :data:`COVERAGE_THRESHOLD`) were set on synthetic heads (:mod:`brainage.prepare.phantom`):
well-registered heads reach NCC ~0.99 and coverage ~1.0, a head rotated by 90 degrees reaches NCC ~0.55; they are not
yet calibrated on real scans (change them with ``--qc-ncc`` / ``--qc-coverage``).

Research use only, not for diagnosis.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass

import numpy as np

from brainage.reference.templates import icbm152_on_grid

__all__ = ["COVERAGE_THRESHOLD", "NCC_THRESHOLD", "QCResult", "assess", "qc_html", "qc_png"]

NCC_THRESHOLD = 0.7
COVERAGE_THRESHOLD = 0.9
_EDGE_LEVELS = (0.1, 0.75)  # template contours drawn on the PNG: brain outline and the grey / white-matter boundary


@dataclass(frozen=True)
class QCResult:
    ncc: float
    coverage: float
    status: str  # "ok" | "fail"
    reason: str


def assess(data: np.ndarray, spacing: float, ncc_threshold: float = NCC_THRESHOLD,
           coverage_threshold: float = COVERAGE_THRESHOLD) -> QCResult:
    """QC of a prepared volume ``data`` on ``mni_grid(spacing)`` against the template inside its brain mask."""
    template, _ = icbm152_on_grid(spacing)
    if data.shape != template.shape:
        raise ValueError(f"prepared volume has shape {data.shape}; expected the {spacing} mm MNI grid {template.shape}")
    inside = template > 0.05
    x, y = data[inside].astype(np.float64), template[inside].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    ncc = float((x * y).sum() / denominator) if denominator > 0 else 0.0
    coverage = float((data[inside] > 0).mean())
    reasons = []
    if ncc < ncc_threshold:
        reasons.append(f"template correlation {ncc:.3f} < {ncc_threshold} (registration or skull strip failed?)")
    if coverage < coverage_threshold:
        reasons.append(f"brain covers {coverage:.1%} of the template brain < {coverage_threshold:.0%} (cropped head "
                       "or skull strip too tight?)")
    return QCResult(round(ncc, 6), round(coverage, 6), "fail" if reasons else "ok", "; ".join(reasons))


def qc_png(data: np.ndarray, spacing: float, title: str) -> bytes:
    """PNG bytes: three orthogonal slices through the template centre, brain in grey, template contours in colour."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    template, _ = icbm152_on_grid(spacing)
    centre = [int(c) for c in np.round(np.argwhere(template > 0.05).mean(axis=0))]
    positive = data[data > 0]
    vmax = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    views = [(data[centre[0]], template[centre[0]]), (data[:, centre[1]], template[:, centre[1]]),
             (data[:, :, centre[2]], template[:, :, centre[2]])]  # sagittal, coronal, axial: each (a, b)
    figure = Figure(figsize=(9, 3.4), dpi=80)
    for index, (brain, edges) in enumerate(views):
        axis = figure.add_subplot(1, 3, index + 1)
        axis.imshow(brain.T, origin="lower", cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
        axis.contour(edges.T, levels=list(_EDGE_LEVELS), colors=["#ff3b30", "#ffcc00"], linewidths=0.7)
        axis.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.02)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def qc_html(rows: list[dict], pngs: dict[str, bytes]) -> str:
    """Self-contained HTML overview: one card per manifest row (failures first), PNGs inlined as base64.

    ``rows`` are manifest rows (subject_id, session, qc_status, qc_ncc, qc_coverage, qc_reason, source_path, key);
    ``pngs`` maps a row's ``key`` to its PNG bytes. Every user string is escaped.
    """
    ordered = sorted(rows, key=lambda r: (r["qc_status"] == "ok", str(r["subject_id"]), str(r["session"])))
    failed = sum(r["qc_status"] != "ok" for r in rows)
    cards = []
    for row in ordered:
        png = pngs.get(row["key"])
        image = (f'<img alt="QC {html.escape(row["key"])}" src="data:image/png;base64,'
                 f'{base64.b64encode(png).decode("ascii")}">' if png else "<p>(no image)</p>")
        ncc = row.get("qc_ncc")
        ncc_text = "n/a" if ncc is None or ncc != ncc else f"{float(ncc):.3f}"
        cov = row.get("qc_coverage")
        cov_text = "n/a" if cov is None or cov != cov else f"{float(cov):.1%}"
        cards.append(
            f'<div class="card {html.escape(row["qc_status"])}"><h3>{html.escape(str(row["subject_id"]))} '
            f'{html.escape(str(row["session"] or ""))} &mdash; {html.escape(row["qc_status"])}</h3>'
            f"<p>NCC {ncc_text} &middot; coverage {cov_text}</p>"
            f'<p class="reason">{html.escape(str(row.get("qc_reason") or ""))}</p>'
            f'<p class="src">{html.escape(str(row.get("source_path") or ""))}</p>{image}</div>')
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>brainage prepare QC</title><style>"
        "body{font-family:sans-serif;margin:1em}.card{display:inline-block;vertical-align:top;margin:4px;padding:6px;"
        "border:2px solid #3a3;width:740px}.card.fail{border-color:#d22}.card img{width:720px}"
        ".reason{color:#b00}.src{color:#666;font-size:80%}h3{margin:2px 0;font-size:100%}</style></head><body>"
        f"<h1>brainage prepare: QC overview</h1><p>{len(rows)} scans, {failed} flagged. Red contour: template brain "
        "outline; yellow: template grey/white-matter boundary. Research use only, not for diagnosis.</p>"
        + "".join(cards) + "</body></html>\n")
