"""Render stage of `brainage report`: one builder per section, each drawing from the :class:`ReportResult` alone.

Order (issue 14): the main result first -- which regions drive the predicted age and whether the experts specialise
-- then how to read the page, then the details (cohort, regions, experts, validation, groups, subjects, methods).
A builder returns ``(heading, blocks)`` or None when its section does not apply (no occlusion, no ground truth, no
groups); :func:`build_page` adds the table of contents.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from brainage.attribution.contraction import BLEED_SIGMA_MM, PULL_REACH_MM
from brainage.attribution.regional import (BRIGHTENING_GAIN_SHARE, BRIGHTENING_MIN, CAP_FROM_SUBJECTS,
                                           CONTRACTION_MIN, DARKENING_MAX, DRAWS, GROWTH_MARGIN, MARGIN_MM, MAX_VOXELS,
                                           NEAR_MIN_GAIN, NEAR_MM, SPILL_MM, SPILL_RATIO, SURE_SUBJECTS,
                                           VENTRICLE_MARGIN_MM)
from brainage.attribution.stats import top_regions
from brainage.report import render as R
from brainage.report.analysis import LayerResult, RegionResult, ReportResult
from brainage.report.figures import (
    brain_mask,
    dominant_expert_png,
    expert_grid_png,
    expert_map_png,
    group_png,
    prediction_scatter_png,
    stat_map_png,
    template_on_grid,
)

__all__ = ["Section", "Canvas", "SECTIONS", "build_page", "region_display", "both_signs", "CONTROL_EFFECT",
           "main_result", "how_to_read", "cohort", "regions", "regional", "experts", "validation", "groups",
           "subjects", "methods"]

Section = tuple[str, list]
CONTROL_EFFECT = "null regions (control)"  # the effect row of the regions no effect was planted in
SIGNIFICANT_P = 0.05
TOP_REGIONS = 10  # rows per sign in the region tables
MAP_THRESHOLD = 0.05  # regions within this fraction of the largest |contribution| stay uncoloured on the map
EFFECT_COLUMNS = {"contribution": "contribution (y)",
                  "share_positive": "share of scans predicted younger when occluded"}


class Canvas:
    """The main model grid's figure background (template) and brain mask, computed once on first use."""

    def __init__(self, result: ReportResult) -> None:
        self.shape, self.affine = result.shape, result.affine

    @functools.cached_property
    def mask(self) -> np.ndarray:
        return brain_mask(self.shape, self.affine)

    @functools.cached_property
    def background(self) -> np.ndarray:
        return template_on_grid(self.shape, self.affine)


# ---- shared formatting ----------------------------------------------------------------------------------------------

BAND_COLUMNS = ("region itself (y)", "boundary shell (y)")  # the two parts of a band method's contribution


def _years(value: float) -> str:
    return f"{value:+.2f} y"


def _ranked_columns(table: pd.DataFrame, names: pd.Series, label: str, values: pd.Series) -> dict:
    """The display columns every ranked region table shares: rank, region, hemisphere, voxels, the value (``label``),
    its 95% interval (``ci_low``/``ci_high``) and the rank interval."""
    return {
        "rank": table["rank"].astype(int),
        "region": names.astype(str),
        "hemisphere": table["hemisphere"].astype(str),
        "voxels": table["n_voxels"].astype(int),
        label: values,
        "95% interval": [R.format_interval(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"])],
        "rank interval": [R.format_interval(lo, hi, integer=True) for lo, hi in zip(table["rank_low"],
                                                                                    table["rank_high"])],
    }


def region_display(table: pd.DataFrame) -> pd.DataFrame:
    """Display columns of a region ranking frame (``RegionResult.table``: name, hemisphere, contribution, ci_low,
    ci_high, rank, rank_low, rank_high, null_corrected, n_voxels, method; band methods also show own and shell, the
    region itself and its boundary shell)."""
    shown = pd.DataFrame({
        **_ranked_columns(table, table["name"], "contribution (y)", table["contribution"].round(3)),
        "null-corrected (y)": table["null_corrected"].round(3),
        "method": table["method"].astype(str),
    }).reset_index(drop=True)
    if len(table) and table["method"].astype(str).str.startswith("band_").all():
        at = shown.columns.get_loc("95% interval") + 1
        shown.insert(at, BAND_COLUMNS[1], table["shell"].round(3).to_numpy())
        shown.insert(at, BAND_COLUMNS[0], table["own"].round(3).to_numpy())
    return shown


def _effect_display(effects: pd.DataFrame) -> pd.DataFrame:
    """Display columns of the planted-effect table: effect, regions, voxels, contribution, its interval, share."""
    shown = effects[["effect", "regions", "voxels", "contribution"]].copy()
    shown["95% interval"] = [R.format_interval(lo, hi) for lo, hi in zip(effects["ci_low"], effects["ci_high"])]
    shown["share_positive"] = effects["share_positive"]
    return shown.rename(columns=EFFECT_COLUMNS)


def both_signs(shown: pd.DataFrame, n: int = TOP_REGIONS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``n`` largest positive and the ``n`` largest negative contributions of a :func:`region_display` frame."""
    value = shown["contribution (y)"]
    positive = shown[value > 0].sort_values("contribution (y)", ascending=False, kind="stable").head(n)
    negative = shown[value < 0].sort_values("contribution (y)", ascending=True, kind="stable").head(n)
    return positive, negative


def _region_list(rows: pd.DataFrame, n: int = 3) -> str:
    items = []
    for _, row in rows.head(n).iterrows():
        interval = f" {row['95% interval']}" if row.get("95% interval") else ""
        items.append(f"{row['region']} ({_years(row['contribution (y)'])}{interval})")
    return ", ".join(items) or "none"


def _control_text(control: pd.Series) -> str:
    """The control row's contribution with its interval, e.g. ``-0.70 y [-0.90, -0.50]``."""
    return f"{_years(control['contribution'])} {R.format_interval(control['ci_low'], control['ci_high'])}".strip()


CONTROL_MEANING = (
    "A non-zero control is expected, not a fault of the method: with per-scan z-scoring inside the brain, a regional "
    "change (an enlarged ventricle, a thinner cortex) shifts the brain's mean and sd and with them the intensity of "
    "every voxel; and an atrophy displaces its neighbours, moving tissue into regions where nothing was planted. "
    "Both signs are shown: positive (red) means the regions as they are make the scan look older than the young "
    "reference, negative (blue) means they pull the prediction younger. Read regional values against this control, "
    "not against zero; the null-corrected column subtracts what a random voxel set of the same size contributes."
)


def _control(regions: RegionResult | None) -> pd.Series | None:
    if regions is None or regions.effects is None:
        return None
    rows = regions.effects[regions.effects["effect"] == CONTROL_EFFECT]
    return rows.iloc[0] if len(rows) else None


def _specialising(layers: Sequence[LayerResult]) -> list[LayerResult]:
    return [r for r in layers if r.mi.p_value <= SIGNIFICANT_P and r.mi.ratio > 1]


# ---- sections -------------------------------------------------------------------------------------------------------

def main_result(result: ReportResult, canvas: Canvas) -> Section:
    """Which regions drive the predicted age, whether the experts specialise, how well the model predicts here."""
    blocks = []
    if result.regions is not None:
        positive, negative = both_signs(region_display(result.regions.table), n=3)
        method = str(result.regions.table["method"].iloc[0]) if len(result.regions.table) else "attribution"
        blocks.append(R.paragraph(
            f"Regions that drive the predicted age ({method}; see 'Regions that drive the predicted age'): ",
            R.strong("older-looking"), f" (replacing them lowers the prediction): {_region_list(positive)}; ",
            R.strong("younger-looking"), f" (replacing them raises it): {_region_list(negative)}.", cls="lead"))
        control = _control(result.regions)
        if control is not None:
            blocks.append(R.paragraph(
                f"Control: occluding the null regions, where no age effect was planted, moves the prediction by "
                f"{_years(-float(control['contribution']))} (contribution {_control_text(control)}, 95% interval). "
                "Compare regional values with this control, not with zero (see 'Validation against ground truth')."))
    else:
        blocks.append(R.paragraph("Attribution was not run (--no-occlusion): the report does not rank regions by "
                                  "their effect on the predicted age."))
    special, layers = _specialising(result.layers), result.layers
    ratios = ", ".join(f"layer {r.layer} ×{r.mi.ratio:.1f} (p {R.format_p_value(r.mi.p_value, len(r.mi.shuffled))})"
                       for r in layers)
    blocks.append(R.paragraph(
        R.strong("Expert specialisation: "),
        f"expert-region mutual information is above its within-scan shuffled baseline in {len(special)} of "
        f"{len(layers)} MoE layers (ratio to the baseline: {ratios}).", cls="lead"))
    c = result.cohort
    if len(c.age):
        blocks.append(R.paragraph(f"Model accuracy on this cohort: MAE {c.mae:.2f} years on {len(c.age)} scans with a "
                                  f"known age (see 'Cohort')."))
    if result.regional is not None:
        ageing = result.regional.table[result.regional.table["ci_low"] > 0]
        unread = ageing[~(ageing["model_rank"] <= len(ageing))]  # ageing regions outside the model's top ranks
        blocks.append(R.paragraph(
            R.strong("Where the scans change with age"), " (model-free regional age models; see 'Where the scans "
            f"age'): {len(ageing)} regions tell age better than the median age (95% interval above 0), led by "
            f"{_gain_list(ageing)}"
            + (f"; of these, {', '.join(unread['region'].head(6))} rank below the model's top {len(ageing)} (see "
               "'Regions that drive the predicted age'), so the model reads them less than the scans show" if
               result.regions is not None and len(unread) else "") + "." + _near_ventricles_sentence(ageing)))
    if result.validation is not None and result.validation.precision is not None:
        v = result.validation
        found = "; ".join(f"{row['ranking']} {row['planted']:.2f}" for _, row in v.precision.iterrows())
        blocks.append(R.paragraph(f"Ground truth: precision@{v.k} ({found}; chance {v.chance:.2f})."))
    return "Main result", blocks


def _number(rows: pd.DataFrame, one: str, many: str) -> str:
    """``one`` for a single row, else ``many`` (a verb or phrase agreeing with a list of regions)."""
    return one if len(rows) == 1 else many


def _pulled_sentence(ageing: pd.DataFrame, column: str, what: Callable[[pd.DataFrame, str], str]) -> str:
    """The main result's note on the rows flagged in ``column`` for following a neighbour's pull (listed after the
    others): their names, ``what(rows, neighbours)`` they show (``neighbours``: their ``pulled_by``, joined) and where
    to credit the change."""
    rows = ageing[ageing[column]] if column in ageing else ageing.iloc[:0]
    if not len(rows):
        return ""
    return (f" {', '.join(rows['region'])} {what(rows, ', '.join(dict.fromkeys(rows['pulled_by'])))}, so "
            f"{_number(rows, 'it is', 'they are')} listed after the other regions; credit the neighbour's change.")


def _enlarged_sentence(ageing: pd.DataFrame) -> str:
    """The main result's note on lateral ventricles that a neighbour's pull enlarges (listed after the others)."""
    return _pulled_sentence(ageing, "enlarged_by_neighbour", lambda rows, neighbours: (
        f"{_number(rows, 'changes', 'change')} with age without growing on {_number(rows, 'its', 'their')} own: "
        + _number(rows, "its age-slope map follows", "their age-slope maps follow")
        + f" the pull of a neighbour ({neighbours}) more than {_number(rows, 'its', 'their')} own expansion, as when "
        "a neighbour contracts"))


def _spill_sentence(ageing: pd.DataFrame) -> str:
    """The main result's note on spill-over rows: regions whose gain lies beside the neighbour that pulls them."""
    return _pulled_sentence(ageing, "spill_over", lambda rows, neighbours: (
        f"{_number(rows, 'tells', 'tell')} age only beside a neighbour that pulls {_number(rows, 'it', 'them')} "
        f"({neighbours}): "
        f"{_number(rows, 'its', 'their')} voxels within {SPILL_MM:g} mm of it tell age, those farther away tell "
        f"under {SPILL_RATIO:g} of that, as when the neighbour contracts and drags {_number(rows, 'it', 'them')} "
        "along"))


def _near_ventricles_sentence(ageing: pd.DataFrame) -> str:
    """The main result's note on the ageing regions marked 'change near the ventricles', if any: the demoted ones
    (listed after the others) and those whose slope maps show a change of their own (kept in place); then the
    ventricles that a neighbour's pull enlarges."""
    if "demoted" not in ageing or not ageing["near_ventricles"].any():
        return _enlarged_sentence(ageing) + _spill_sentence(ageing)
    marked = ageing[ageing["near_ventricles"] & ~ageing["spill_over"]]  # spill-over rows: their own sentence
    demoted, kept = marked[marked["demoted"]], marked[~marked["demoted"]]
    return ((f" {', '.join(demoted['region'])} {_number(demoted, 'lies', 'lie')} within {NEAR_MM:g} mm of the "
             f"lateral ventricles without a change of {_number(demoted, 'its', 'their')} own in "
             f"{_number(demoted, 'its age-slope map', 'their age-slope maps')}, possibly displaced by growing "
             f"ventricles rather than ageing, and {_number(demoted, 'is', 'are')} listed after the other regions."
             if len(demoted) else "")
            + (f" {', '.join(kept['region'])} also {_number(kept, 'lies', 'lie')} within {NEAR_MM:g} mm of them but "
               + _number(kept, "keeps its place: its age-slope map shows a contraction or a darkening of its own, "
                               "or it tells more age than growing ventricles, or about as much while brightening",
                         "keep their place: their age-slope maps show a contraction or a darkening of their own, "
                         "or they tell more age than growing ventricles, or about as much while brightening")
               + " (see 'Where the scans age')."
               if len(kept) else "") + _enlarged_sentence(ageing) + _spill_sentence(ageing))


def _gain_list(rows: pd.DataFrame, n: int = 4) -> str:
    """'region (+gain y [low, high])' of the first ``n`` rows of a regional table."""
    return ", ".join(f"{row['region']} ({_years(row['gain'])} {R.format_interval(row['ci_low'], row['ci_high'])})"
                     for _, row in rows.head(n).iterrows()) or "none"


HOW_TO_READ = [
    "The model cuts each scan into 3D patches (tokens). In every mixture-of-experts (MoE) layer a router sends each "
    "patch to a few of its experts. 'Expert specialisation' shows, per layer, where in the brain each expert works: "
    "each expert has its own colour in every figure, and the colour is the more opaque the more scans send that "
    "voxel to the expert (transparent: none, full colour: all).",
    "Mutual information (bits) measures how much knowing the region tells you about the expert. It is compared with "
    "a baseline that shuffles the experts within each scan; a ratio well above 1 means the experts specialise "
    "anatomically. A permutation p-value shown as '< 1/(shuffles + 1)' means no shuffle reached the observed value.",
    "Regional age contribution: how many years a region's difference from a young reference adds to the predicted "
    "age (occlusion: the region is replaced by the reference and the scan predicted again; gradient methods: the "
    "attribution summed over the region). Positive (red): the region as it is makes the scan look older. Negative "
    "(blue): the region pulls the prediction younger (replacing it raises the predicted age). Intervals are 95% "
    "bootstrap intervals over scans; a rank interval says how stable a region's place in the list is; regions are "
    "ranked by the null-corrected contribution (the contribution minus what a random voxel set of the same size "
    "adds). These intervals resample scans, not training runs: retrained with another seed, the same model keeps "
    "the regions it reads strongly at the top but can read a weak effect more or less, moving it by tens of ranks "
    "(docs/report.md, 'Training seeds'). Before building on a mid-list rank, train a second model with another "
    "seed_everything and compare.",
    "A low rank means the model does not use the region, not that the region does not change with age. When several "
    "regions carry the same age information the model may read only some of them: on synthetic cohorts with planted "
    "effects it left some atrophies and darkenings unread while others ranked first (docs/report.md). The ranking "
    "explains this model's predictions, not the biology of ageing.",
    "Where the scans age (model-free): one ridge regression per atlas region, fitted to that region's interior "
    "voxels (away from its borders with other regions) and scored by cross-validation, tells how many years of "
    "error the region alone removes against predicting the median age (gain). It ranks where these scans change "
    "with age, whether or not the brain-age model uses it; a region high here and low in the model's ranking ages "
    "but is read little by the model. A region high on all its voxels but low on its interior borrows its age "
    "information from a neighbour across the border. Regions that a neighbour's atrophy displaces also change, so "
    "they can rank high here too.",
    "Cohort: MAE = mean absolute error in years; brain-age gap = predicted minus true age (positive: the brain looks "
    "older than its age).",
    "With a synthetic cohort, 'Validation against ground truth' checks the ranking against the regions where age "
    "effects were planted (precision@k: 1 = perfect, chance is shown) and occludes each planted effect at once.",
    "Every table is also a CSV in tables/, every map a NIfTI file in maps/ (MNI space, opens in any viewer).",
]

NORMALISATION_NOTE = (
    "Why a region without any age effect can still carry age information: each scan is z-scored inside the brain "
    "(mean 0, sd 1 over brain voxels) before the model sees it. Any regional change -- an enlarged ventricle, a "
    "thinner cortex -- shifts that mean and sd, and so the intensity of every brain voxel. After normalisation a "
    "'null' region therefore legitimately differs between young and old scans, and occluding it can move the "
    "prediction; an atrophy also displaces its neighbours into regions where nothing changed. Read regional "
    "contributions relative to the control row and the null-corrected column, not relative to zero."
)


def how_to_read(result: ReportResult, canvas: Canvas) -> Section:
    return "How to read this report", [R.bullet_list(HOW_TO_READ), R.note(NORMALISATION_NOTE)]


def cohort(result: ReportResult, canvas: Canvas) -> Section:
    c = result.cohort
    blocks = [R.paragraph(f"{c.predicted} of {c.scans} scans predicted; {len(result.layers)} MoE layers with "
                          f"{result.num_experts} experts; atlas with {result.num_regions} regions.")]
    if len(c.age):
        r_text = f"{c.pearson_r:.3f}" if c.pearson_r is not None else "n/a (under 3 scans)"
        blocks.append(R.paragraph(f"MAE {c.mae:.2f} years on {len(c.age)} scans with known age; mean brain-age gap "
                                  f"{c.mean_gap:+.2f} years; Pearson r = {r_text}."))
        blocks.append(R.figure(prediction_scatter_png(c.age, c.predicted_age),
                               "Predicted vs chronological age (dashed: identity)."))
    if len(c.failed):
        blocks.append(R.details(f"{len(c.failed)} inputs failed", R.table(c.failed, scroll=True)))
    return "Cohort", blocks


def _contribution_map(volume: np.ndarray, affine: np.ndarray, method: str) -> R.Markup:
    """The signed contribution map (red older-looking, blue younger-looking) with its caption."""
    threshold = MAP_THRESHOLD * float(np.abs(volume).max())
    cut = np.where(np.abs(volume) < threshold, 0.0, volume)  # cut here: nilearn's own threshold crowds the colorbar
    figure = stat_map_png(cut, affine, "", threshold=1e-6, cmap="RdBu_r", symmetric=True)
    return R.figure(figure, f"Age contribution per atlas region ({method}, years, mean over scans). Red: the region "
                            "makes the scan look older (replacing it by the reference lowers the predicted age). Blue: "
                            "the region pulls the prediction younger than the reference would (replacing it raises "
                            "the predicted age). "
                            f"Uncoloured: within ±{threshold:.2g} y ({100 * MAP_THRESHOLD:.0f}% of the largest value) "
                            "or no region.")


def regions(result: ReportResult, canvas: Canvas) -> Section | None:
    """Regional age contribution: the diverging map, the largest contributions of both signs and the control."""
    if result.regions is None:
        return None
    shown = region_display(result.regions.table)
    positive, negative = both_signs(shown)
    method = str(shown["method"].iloc[0]) if len(shown) else "attribution"
    value = "contribution (y)"
    blocks = [R.paragraph(
        f"Each region of each scan is compared with a reference image by {method} (", R.text(result.regions.described),
        "). Contribution = how many years the region's difference from the reference adds to the predicted age, "
        "averaged over scans, with its 95% bootstrap interval over scans. Regions are ranked by the null-corrected "
        "contribution: the contribution minus what a size-matched random voxel set of the same scan contributes "
        "(rank 1 = most positive; the rank interval is the 95% bootstrap interval of the rank).",
        *((" Band method: each region is occluded with its boundary shell (brain voxels within the band width), "
           "because an atrophy changes the voxels around a structure more than inside it (a growing ventricle "
           "pushes into its neighbours). The contribution is split into '" + BAND_COLUMNS[0] + "' and '"
           + BAND_COLUMNS[1] + "'; the shell overlaps the neighbouring regions, which keep their own rows, so read "
           "a structure and its displaced neighbours together.",) if BAND_COLUMNS[0] in shown.columns else ()))]
    blocks.append(_contribution_map(result.regions.volume, result.affine, method))
    blocks.append(R.row(
        R.heading(f"Largest positive contributions (red, older-looking, {len(positive)})", 4)
        + R.table(positive, diverging=[value]),
        R.heading(f"Largest negative contributions (blue, younger-looking, {len(negative)})", 4)
        + R.table(negative, diverging=[value])))
    control = _control(result.regions)
    if control is not None:
        blocks.append(R.note(f"Control row: the null regions, where nothing was planted, occluded together "
                             f"contribute {_control_text(control)} (95% interval). {CONTROL_MEANING} The planted "
                             "effects against this control: 'Validation against ground truth'."))
    blocks.append(R.details(f"All {len(shown)} regions", R.table(shown, diverging=[value], scroll=True)))
    return "Regions that drive the predicted age", blocks


def _near_ventricles_paragraph() -> R.Markup:
    """The regional section's paragraph on the mark 'change near the ventricles' and the slope-map checks."""
    return R.paragraph(
        "Growing ventricles displace their neighbours, whose voxels then change although they did not age "
        "themselves; the displacement reaches across the corpus callosum into the cingulate. 'Change near the "
        f"ventricles' marks a region with a gain of at least {NEAR_MIN_GAIN:g} y whose interior comes within "
        f"{NEAR_MM:g} mm of the lateral ventricles ('ventricles (mm)'): read it as possibly displaced. The mark "
        "says where a change lies, not why, so the order also looks at how the region's voxels change, in its "
        "age-slope map (each voxel's slope of intensity on age). 'Contraction share' is the part of that map that "
        "only the region's own contraction explains, beside a uniform change and tissue moving away from the "
        "ventricles (small-motion patterns of the mean image; Horn & Schunck 1981); 'darkening' is the map's mean "
        "over its root mean square (−1: the whole region darkens alike, as a loss of T1 contrast does). A marked "
        "region is listed after every unmarked region, its rank and rank interval counted from there, unless its "
        f"share is at least {CONTRACTION_MIN:g} or its darkening at most {DARKENING_MAX:g}, or it tells more age "
        f"than the lateral ventricles while they grow (their gain at least {NEAR_MIN_GAIN:g} y): a displacement "
        "tells less than the growth that causes it. The displaced cingulate brightens throughout but tells far less, "
        f"so a region whose darkening is at least {BRIGHTENING_MIN:g} also keeps its place when its gain reaches "
        f"{BRIGHTENING_GAIN_SHARE:g} of the larger ventricle gain (near the ceiling which of the two gains more is "
        "chance). On synthetic cohorts this demotes the displaced cingulate, caudate and "
        "thalamus, but also a thin "
        "contraction beside the ventricles whose map looks like displacement (a rostral anterior cingulate, a "
        "lingual gyrus; a caudate with a share of 0.11), and a brightening beside the ventricles that tells much less "
        "age than they do: a demoted region whose darkening is near +1 may be a brightening rather than displaced "
        "(docs/report.md, 'A displacement zone beside the ventricles', 'What the 10 mm zone costs a brightening', "
        "'The two exemptions together'). The lateral ventricles themselves can change without growing: a "
        "neighbour that contracts pulls their wall along. 'Expansion share' is the part of a ventricle's map that its "
        "own expansion explains, 'pull share' the largest part that tissue moving towards one neighbour explains "
        f"(neighbours within {PULL_REACH_MM:g} mm); a ventricle whose pull share is the larger ranks after the kept "
        "regions, its change credited to that neighbour (docs/report.md, 'Ventricles enlarged by a neighbour'). "
        "Any region's own pull share is read the same way, beside its own contraction: a contraction drags the "
        "tissue beside it along, so a neighbour of a weakly contracting region tells age from its voxels next to it "
        "and can outrank it. Each region's interior splits at "
        f"{SPILL_MM:g} mm from the neighbour with the largest pull (its twin in the other hemisphere left out), and "
        "each part's model is fitted on as many voxels as the other ('gain near the puller', 'gain far from it'). A "
        "region whose pull share exceeds its contraction share and whose far part tells under "
        f"{SPILL_RATIO:g} of what its near part tells is a spill-over: its change lies beside that neighbour, not "
        "throughout it, and it ranks after the kept regions (docs/report.md, 'Spill-over beside a contraction'). "
        "'Gain, away from the ventricles' leaves out each "
        f"region's voxels within {VENTRICLE_MARGIN_MM:g} mm of them: how much of its gain lies right beside them.")


def _enlarged_labels(table: pd.DataFrame) -> list[str]:
    """Per row: the label of a lateral ventricle that follows a neighbour's pull (the others' entries unused)."""
    return [f"ventricle enlarged by the pull of a neighbour (largest: {name}), not by its own growth: listed last"
            for name in table["pulled_by"]]


def _zone_columns(table: pd.DataFrame) -> dict[str, object]:
    """The regional table's columns on change near the ventricles, pulls and spill-over (an atlas with the lateral
    ventricles)."""
    return {
        "ventricles (mm)": table["ventricle_mm"].round(1),
        "change near the ventricles": np.select(
            [table["enlarged_by_neighbour"], ~table["near_ventricles"], table["spill_over"],
             table["demoted"] & (table["darkening"] >= BRIGHTENING_MIN), table["demoted"],
             table["contraction"] >= CONTRACTION_MIN, table["darkening"] <= DARKENING_MAX,
             table["darkening"] >= BRIGHTENING_MIN],  # kept: it rivals the ventricles (or is above them)
            [_enlarged_labels(table), "", "yes, and a spill-over: listed last",
             "yes, brightens throughout, much less than the ventricles tell: listed "
             "last (a brightening looks the same)", "yes: listed last", "yes, contracts: kept in place",
             "yes, darkens: kept in place",
             "yes, brightens throughout, about as much as the ventricles tell or more: kept in place"],
            "yes, tells more than the growing ventricles: kept in place"),
        "contraction share": table["contraction"].round(3), "darkening": table["darkening"].round(2),
        "expansion share": table["expansion"].round(3), "pull share": table["pull"].round(3),
        "pulled by": table["pulled_by"], "gain near the puller (y)": table["gain_near"].round(2),
        "gain far from it (y)": table["gain_far"].round(2),
        "spill-over": np.where(table["spill_over"], "yes: listed last", ""),
    }


def _evidence_order(table: pd.DataFrame) -> list[str]:
    """The regional section's paragraph on the order by evidence (none without contraction scores)."""
    if "evidence" not in table:
        return []
    return [R.strong("Order: evidence."), " A thin contraction can tell too little age for a model to learn it "
            "and still be there. Each scan's contraction score projects the region's voxels on the pattern that "
            "its own tissue moving inwards gives (beside a uniform change, tissue moving off the ventricles and "
            f"the blur, {BLEED_SIGMA_MM:g} mm, of any neighbour's darkening or brightening throughout, which a "
            "border voxel holds in part: a matched filter), and the contraction t is that score's correlation with "
            "age over the scans, as a t. The rows are ordered by evidence = the gain over its standard error plus "
            "the contraction t, the groups below kept (docs/report.md, 'Contraction evidence: a matched filter'); "
            "the rank interval is the evidence's, over the same bootstrap. A negative t lowers the evidence where "
            "the region's map does not change uniformly (its tissue is stretched towards a contracting neighbour) "
            "and adds nothing where it darkens or brightens throughout (a darkening's t is negative too). ",
            *([f"Here a lateral ventricle grows of its own (a gain of at least {NEAR_MIN_GAIN:g} y, its "
               f"expansion share at least {GROWTH_MARGIN:g} times its neighbours' pull), so each score is also "
               "taken beside the push's falloff: the ventricles push a neighbour less the farther it lies, so a thin "
               "region beside them is compressed as it moves, and only what that does not explain counts as its own "
               "contraction (docs/report.md, 'Contraction evidence beside a push'). "]
              if table["push_falloff"].any() else [])]


def regional(result: ReportResult, canvas: Canvas) -> Section | None:
    """Model-free regional age models: the gain map and table, beside the model's own ranking."""
    if result.regional is None:
        if not result.regional_note:
            return None
        return "Where the scans age (model-free)", [R.paragraph(f"Regional age models {result.regional_note}.")]
    table = result.regional.table
    shown = pd.DataFrame({
        **_ranked_columns(table, table["region"], "gain, interior (y)", table["gain"].round(2)),
        **({"contraction t": table["contraction_t"].round(2), "evidence": table["evidence"].round(1)}
           if "evidence" in table else {}),
        "gain, both hemispheres (y)": table["bilateral_gain"].round(2),
        "95% interval, both": [R.format_interval(lo, hi) for lo, hi in zip(table["bilateral_low"],
                                                                            table["bilateral_high"])],
        "rank among structures": [R.format_interval(lo, hi, integer=True) for lo, hi in zip(
            table["bilateral_rank_low"], table["bilateral_rank_high"])],
        "gain, all voxels (y)": table["gain_all"].round(2),
        "95% interval, all voxels": [R.format_interval(lo, hi) for lo, hi in zip(table["gain_all_low"],
                                                                                  table["gain_all_high"])],
        **({"gain, away from the ventricles (y)": table["gain_away"].round(2)} if "gain_away" in table else {}),
        **(_zone_columns(table) if "near_ventricles" in table else {}),
        "MAE (y)": table["mae"].round(2),
        "rank in the model's attribution": ["" if np.isnan(r) else str(int(r)) for r in table["model_rank"]],
    }).rename(columns={"voxels": "interior voxels"})
    figure = stat_map_png(result.regional.ageing_volume, result.affine, "", threshold=1e-6, cmap="Reds",
                          symmetric=False)
    heat = ["gain, interior (y)", "gain, both hemispheres (y)", "gain, all voxels (y)"]
    return "Where the scans age (model-free)", [
        R.paragraph(
            "One ridge regression per atlas region predicts age from that region's voxels, scored by "
            "cross-validation (", R.text(result.regional.described), "; Kaufmann et al. 2019, regional brain age). "
            "Gain = the median-age predictor's mean absolute error minus the region's, in years: how much age the "
            "region alone tells. The ranking uses each region's interior: misregistration and blur carry a strongly "
            "changing region (a darkening, a growing ventricle) a few millimetres into its neighbours, whose border "
            "voxels then tell age although nothing changed in them. The gain on all the region's voxels stands "
            "beside it: a region high there but low on its interior takes its age information from a neighbour. "
            "A contraction moves its neighbours too; so that a large neighbour cannot outrank a thin contracting "
            f"region by adding up a weak change over more voxels, each model uses at most {MAX_VOXELS} of the "
            f"region's interior voxels ({DRAWS} random draws, errors averaged), from {CAP_FROM_SUBJECTS} scans on; "
            "with fewer, the capped models read a weak change too poorly, so every interior voxel is used "
            "(docs/report.md, 'Size matching at fewer scans'). A neighbour whose gain lies only beside a contracting "
            "region ranks after the kept ones (a spill-over, below). The cap has a cost too: a "
            "large region whose own change is weak at each voxel but spread over many ranks lower than on all its "
            "interior voxels (the demo cohort: docs/report.md, 'Seeds of the shipped ranking'). ",
            *_evidence_order(table),
            "The 95% interval and the rank interval are bootstrap intervals over scans. This ranking does not use "
            "the brain-age model: it shows where the scans change with age, including changes the model leaves "
            "unread. The last column is the region's rank in 'Regions that drive the predicted age'."),
        R.paragraph(
            "'Gain, both hemispheres' averages the structure's left and right gains per scan, with its interval and "
            "its rank interval among structures. Ageing is mostly symmetric, and one hemisphere of a weak bilateral "
            "change can fall below a neighbour while the pair does not; a change in one hemisphere only shows there "
            "at half its gain. As an order it did not beat the per-region one on seven fresh synthetic cohorts "
            "(docs/report.md, 'A bilateral order'), so it is a column, not the ranking."),
        *([_near_ventricles_paragraph()] if "near_ventricles" in table else []),
        *([R.note(f"Only {result.regional.subjects} scans: on synthetic benchmark cohorts this ranking missed "
                  f"planted regions more often below {SURE_SUBJECTS} scans (24 cohorts at 40-400 scans: "
                  "docs/report.md, 'Size matching at fewer scans'). Read "
                  "the rank intervals, and give it more scans with a known age (--regional-input) if you have them.")]
          if result.regional.subjects < SURE_SUBJECTS else []),
        R.figure(figure, "Interior gain per atlas region (years of error removed against the median age, "
                         "cross-validated). Darker red: the region's interior tells more about age. Uncoloured: the "
                         "95% interval of the gain reaches 0 (no surer than the median age), or no region."),
        R.table(shown.head(TOP_REGIONS), heat=heat),
        R.details(f"All {len(shown)} regions", R.table(shown, heat=heat, scroll=True)),
    ]


def _expert_table(layer: LayerResult, num_experts: int) -> pd.DataFrame:
    """Per expert: share of atlas voxels (top-1) and its most enriched regions (log odds, q <= 0.05)."""
    rows = []
    total = float(layer.top1["voxels"].sum())
    for e in range(num_experts):
        top = top_regions(layer.enrichment, e, n=5, q_max=0.05)
        enriched = ", ".join(f"{name} ({odds:.1f})" for name, odds in zip(top["region"], top["log_odds"]))
        rows.append({"expert": e, "share of atlas voxels (%)": 100 * float(layer.top1[f"expert_{e}"].sum()) / total,
                     "most enriched regions (log odds, q <= 0.05)": enriched or "none"})
    return pd.DataFrame(rows)


def experts(result: ReportResult, canvas: Canvas) -> Section:
    """Expert-region mutual information per layer, the layers' expert maps as grids, enrichment per expert."""
    mi = pd.DataFrame([{"MoE layer": r.layer, "MI (bits)": r.mi.observed, "shuffled mean (bits)": r.mi.shuffled_mean,
                        "shuffled sd (bits)": r.mi.shuffled_std, "ratio": r.mi.ratio,
                        "p": R.format_p_value(r.mi.p_value, len(r.mi.shuffled)), "shuffles": len(r.mi.shuffled)}
                       for r in result.layers])
    frequency = {r.layer: r.frequency for r in result.layers}
    blocks = [
        R.paragraph("Mutual information I(expert; region) of the top-1 expert and the atlas region of each voxel, "
                    "against a baseline that shuffles each scan's expert labels over its tokens."),
        R.table(mi),
        R.figure(dominant_expert_png(frequency, canvas.background, canvas.mask, result.affine),
                 "Most frequent (top-1) expert per voxel, one row per MoE layer (axial slices, MNI z; left hemisphere "
                 "on the left). Opacity = share of scans that send the voxel to that expert: faint colour = the "
                 "scans disagree."),
        R.figure(expert_grid_png(frequency, canvas.background, canvas.mask, result.affine),
                 "Each expert on its own (columns), one row per MoE layer, axial slice at z = +8 mm: the opacity of "
                 "the expert's colour is the share of scans whose voxel it gets (transparent = never)."),
    ]
    last = result.layers[-1]
    blocks.append(R.heading(f"Experts of MoE layer {last.layer} (closest to the prediction)", 4))
    blocks.append(R.table(_expert_table(last, result.num_experts)))
    for layer in reversed(result.layers):
        fractions = [f"fraction_{e}" for e in range(result.num_experts)]
        body = [] if layer is last else [R.table(_expert_table(layer, result.num_experts))]
        body += [R.paragraph("Region x expert table (top-1, row fractions)"),
                 R.table(layer.top1[["region", "voxels", *fractions]], heat=fractions, scroll=True),
                 R.paragraph("Region x expert table (gate-weighted top-k, row fractions)"),
                 R.table(layer.gated[["region", "voxels", *fractions]], heat=fractions, scroll=True)]
        summary = f"MoE layer {layer.layer}: experts and region x expert tables"
        blocks.append(R.details(summary, R.Markup("".join(body))))
    return "Expert specialisation", blocks


def _effects_blocks(regions: RegionResult) -> list:
    blocks = [R.paragraph("All regions of one planted effect occluded together (does the model read the effect at "
                          "all, however its signal is split over regions?), with 95% bootstrap intervals over scans:"),
              R.table(_effect_display(regions.effects), diverging=[EFFECT_COLUMNS["contribution"]])]
    control = _control(regions)
    if control is not None:
        planted = regions.effects[~regions.effects["effect"].isin([CONTROL_EFFECT, "regions displaced by the warps"])]
        largest = float(planted["contribution"].abs().max()) if len(planted) else math.nan
        value = float(control["contribution"])
        compare = "with no planted effect to compare"
        if not math.isnan(largest):
            size = "larger" if abs(value) > largest else "smaller"
            compare = f"{size} in absolute value than the largest planted effect ({largest:.2f} y)"
        blocks.append(R.note(
            f"The control row ({CONTROL_EFFECT}: {int(control['regions'])} regions, {int(control['voxels'])} voxels, "
            f"where the generator planted nothing) contributes {_control_text(control)}, {compare}; "
            f"{100 * float(control['share_positive']):.0f}% of the scans predict younger with it occluded. "
            f"{CONTROL_MEANING}"))
    return blocks


def validation(result: ReportResult, canvas: Canvas) -> Section | None:
    v = result.validation
    if v is None:
        return None
    blocks = [R.paragraph("Ground truth ", R.text(str(v.truth.path)), ": regions carrying the age effect: ",
                          ", ".join(v.truth.regions) or "none", ".")]
    if v.missing:
        blocks.append(R.paragraph("Not in the atlas (check region names): ", ", ".join(v.missing)))
    if v.precision is not None:
        indirect = len(v.truth.indirect_regions)
        blocks.append(R.paragraph(
            f"Region ranking, precision@{v.k}: the share of the {v.k} top-ranked regions that are among the {v.k} "
            f"planted ones (chance about {v.chance:.2f})" + (f"; the last column also counts the {indirect} regions "
                                                             f"that the planted structure warps displace "
                                                             f"({', '.join(v.truth.indirect_regions)})"
                                                             if indirect else "") + "."))
        blocks.append(R.table(v.precision))
        blocks.append(R.paragraph("A model need not use every planted effect (thin cortical effects may be below its "
                                  "resolution): a low precision can mean the model ignores a region, not that the "
                                  "attribution is wrong. The table below tells which."))
    if result.regions is not None and result.regions.effects is not None:
        blocks += _effects_blocks(result.regions)
    return "Validation against ground truth", blocks


def groups(result: ReportResult, canvas: Canvas) -> Section | None:
    g = result.groups
    if g is None:
        return None
    last = int(g.shares["layer"].max())
    experts_ = [c for c in g.shares.columns if c.startswith("expert_")]
    last_shares = g.shares[g.shares["layer"] == last]
    figure = group_png(g.gaps, {row["group"]: [row[e] for e in experts_] for _, row in last_shares.iterrows()},
                       f"expert share, MoE layer {last}")
    return f"Groups by {g.column}", [
        R.paragraph(f"Scans grouped by the column {g.column!r} (n/a: missing value). Brain-age gap = predicted minus "
                    "chronological age, in years; sd over the group's scans with a known age."),
        R.table(g.bag.rename(columns={"group": g.column})),
        R.figure(figure, f"Left: brain-age gap per {g.column}. Right: share of atlas voxels routed (top-1) to each "
                         f"expert in MoE layer {last}."),
        R.details("Expert share per group and MoE layer (top-1, share of atlas voxels)",
                  R.table(g.shares.rename(columns={"group": g.column}), heat=experts_, scroll=True)),
    ]


def subjects(result: ReportResult, canvas: Canvas) -> Section:
    table = result.predictions[["subject_id", "session", "age", "predicted_age", "brain_age_gap", "status"]].copy()
    for column in ("age", "predicted_age", "brain_age_gap"):  # numbers, right-aligned, whatever the CSV text was
        table[column] = pd.to_numeric(table[column], errors="coerce").round(2)
    blocks = [R.table(table, digits=4, scroll=True)]
    for view in result.subjects:
        same_grid = np.allclose(view.affine, result.affine) and view.expert_map.shape == tuple(result.shape)
        mask = canvas.mask if same_grid else brain_mask(view.expert_map.shape, view.affine)
        shown = np.where(mask, view.expert_map, -1)
        age = "unknown" if math.isnan(view.age) else f"{view.age:.1f}"
        blocks.append(R.heading(f"{view.title}: predicted age {view.predicted_age:.1f} (true {age})", 4))
        blocks.append(R.figure(expert_map_png(shown, view.affine, result.num_experts, ""),
                               f"Top-1 expert per voxel, MoE layer {view.layer}."))
        blocks.append(R.details("Dominant expert per region", R.table(view.dominant, heat=["share"], scroll=True)))
    return "Subjects", blocks


def methods(result: ReportResult, canvas: Canvas) -> Section:
    routing = result.provenance.routing
    return "Methods and files", [R.bullet_list([
        "Each MoE token's top-1 expert (largest gate) and its gate-weighted top-k experts are spread over the voxels "
        "of its patch (nearest-neighbour upsampling) on the model grid; the atlas is resampled onto that grid by "
        "nearest neighbour through the preprocessing affine (voxel to MNI mm). Counts are voxel-subjects.",
        "Enrichment: log odds ratio (Haldane +0.5) of an expert inside vs outside a region; Pearson chi-square on "
        "token counts, Benjamini-Hochberg FDR. Tokens of a scan are spatially correlated: treat p-values as a "
        "ranking aid, not a confirmatory test.",
        "Mutual information baseline: top-1 expert labels permuted across tokens within each subject; p = (1 + "
        "shuffles at or above the observed value) / (1 + shuffles).",
        "Region attribution (--attribution-method, Captum, Kokhlikyan et al. 2020): occlusion replaces each atlas "
        "region by a reference image and predicts again (FeatureAblation; Zeiler & Fergus 2014); band occlusion "
        "replaces the region with its 6 mm boundary shell, which an atrophy moves; integrated gradients (Sundararajan "
        "et al. 2017) and gradient SHAP (Lundberg & Lee 2017) sum a voxel attribution from the reference to the scan "
        "over the region; Shapley values (Shapley 1953) average a region's occlusion effect over random coalitions "
        "of the other regions, so shared effects are split and the values add up to the scan's difference from the "
        "reference. The reference (--occlusion-reference) is by default the voxel-wise mean of the youngest "
        "third of the attributed scans (young_matched: intensity-matched to each scan; young_scans: one matched young "
        "scan each; cohort: the mean of all). Null correction: region masks shifted to random places in the brain "
        "give each scan's contribution per voxel of a set with no regional effect (median over 24 sets), subtracted "
        "times the region's size. Intervals: 2000 bootstrap resamples of the scans (percentile), ranks re-computed "
        "in each.",
        "Regional age models (model-free; Kaufmann et al. 2019, Popescu et al. 2021): per atlas region, ridge "
        "regression (scikit-learn RidgeCV, penalty by leave-one-out within the training folds) on the region's "
        f"interior voxels (farther than {MARGIN_MM:g} mm, centre to centre, from every other atlas region; from "
        f"{CAP_FROM_SUBJECTS} scans on at most {MAX_VOXELS} of them per model, drawn at random {DRAWS} times, errors "
        "averaged; all voxels beside it), each "
        "standardised on the training folds; 5-fold cross-validation over the scans with a "
        "known age (--regional-subjects), by default prepared by the model's chain with nonlinear normalisation to "
        "the ICBM152 T1 added (--regional-chain); gain = median-age MAE minus the region's MAE; 2000 bootstrap "
        "resamples of the scans' paired errors give the intervals and rank intervals.",
        "Routing source: " + (f"the maps saved by `brainage predict --save-routing` in {routing}" if routing
                              else "the model, run once over the inputs") + ".",
        "Files: tables/*.csv (region x expert tables, enrichment, mutual information, occlusion, regional age models, "
        "predictions, groups), "
        "maps/*.nii.gz (per-expert frequency maps, the sensitivity map and the regional gain map, model grid with "
        "its MNI affine).",
    ])]


SECTIONS: tuple[Callable[[ReportResult, Canvas], Section | None], ...] = (
    main_result, how_to_read, cohort, regions, regional, experts, validation, groups, subjects, methods)


def build_page(result: ReportResult, started: float, on_section: Callable[[], None] = lambda: None) -> str:
    """The report's HTML: every applicable section in :data:`SECTIONS` order, with a table of contents."""
    canvas, sections = Canvas(result), []
    for builder in SECTIONS:
        section = builder(result, canvas)
        if section is not None:
            sections.append(section)
        on_section()
    p = result.provenance
    meta = [f"model: {p.model or 'none (saved routing only)'}", f"inputs: {', '.join(p.inputs)}",
            f"generated {time.strftime('%Y-%m-%d %H:%M')} in {time.perf_counter() - started:.0f} s"]
    if p.run_id:
        meta.append(f"MLflow run {p.run_id}: this folder is logged as artifacts under report/")
    return R.page("Brain-age expert attribution report", sections, meta)
