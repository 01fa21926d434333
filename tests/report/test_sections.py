"""Each section builder of the report, on an analysed result with known numbers (tests/report/conftest.py)."""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pandas as pd
import pytest

from brainage.attribution.stats import shuffled_mutual_information
from brainage.report import render as R
from brainage.report import sections as S
from brainage.report.analysis import RegionResult
from brainage.report.figures import group_png

BLUE, RED = "rgba(40,100,190,", "rgba(214,69,25,"


def _html(section) -> str:
    heading, blocks = section
    return heading + "\n" + "\n".join(str(b) if isinstance(b, R.Markup) else html.escape(b) for b in blocks)


@pytest.fixture(scope="module")
def canvas(result):
    return S.Canvas(result)


def _rows(document: str, table_index: int) -> list[str]:
    """The first cell text of every body row of the n-th table of a fragment."""
    table = re.findall(r"<tbody>(.*?)</tbody>", document, flags=re.S)[table_index]
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<tr><td[^>]*>(.*?)</td>", table)]


def test_p_values_at_the_permutation_floor_read_below_one_over_shuffles_plus_one():
    assert R.format_p_value(1 / 201, 200) == "< 1/201"
    assert R.format_p_value(2 / 201, 200) == "0.01"
    assert R.format_p_value(0.5, 20) == "0.5"
    with pytest.raises(ValueError, match="at least one shuffle"):
        R.format_p_value(0.5, 0)
    # a real test statistic at its floor: every token of region 0 goes to expert 0, of region 1 to expert 1
    token_regions = [np.repeat(np.eye(2), 10, axis=0)]  # (20, 2)
    top1 = [np.repeat([0, 1], 10)]
    mi = shuffled_mutual_information(token_regions, top1, 2, n_shuffles=50, seed=0)
    assert mi.p_value == pytest.approx(1 / 51) and R.format_p_value(mi.p_value, 50) == "< 1/51"


def test_counts_and_large_values_print_as_integers():
    document = R.table(pd.DataFrame({"voxels": [12345.6, 1234.0000001, 52.0], "share": [0.1234, 0.5, 12.5]}))
    cells = re.findall(r"<td[^>]*>(.*?)</td>", document)
    assert cells == ["12346", "0.123", "1234", "0.5", "52", "12.5"]


def test_main_result_names_both_signs_the_control_and_specialisation_first(result, canvas, planted):
    document = _html(S.main_result(result, canvas))
    assert document.startswith("Main result")
    assert "older-looking</strong> (replacing them lowers the prediction): L-front (+0.8" in document
    assert "younger-looking</strong> (replacing them raises it): L-back (-1.2" in document
    assert document.index("older-looking") < document.index("younger-looking")
    assert f"contribution {planted['control']:+.2f} y" in document
    assert "in 2 of 2 MoE layers" in document and f"&lt; 1/{planted['shuffles'] + 1}" in document
    assert "MAE" in document and "precision@2" in document


def test_region_section_shows_both_signs_a_diverging_map_and_all_regions(result, canvas):
    document = _html(S.regions(result, canvas))
    positive, negative, everything = _rows(document, 0), _rows(document, 1), _rows(document, 2)
    assert len(positive) == 3 and len(negative) == 3 and len(everything) == 6  # ranks: L-front is 1, L-back 6
    assert positive[0] == "1" and negative[0] == "6"
    assert "L-back" in document.split("Largest negative")[1].split("</table>")[0]
    assert BLUE in document and RED in document  # negative cells shaded blue, positive red
    assert "Blue: the region pulls the prediction younger" in document and "Red: the region makes" in document
    assert "data:image/png;base64," in document and "Control row" in document
    for column in ("95% interval", "rank interval", "null-corrected (y)"):  # the bootstrap ranking's columns
        assert f">{column}</th>" in document
    control = document.split("Control row")[1]
    assert "-0.70 y [-0." in control and "z-scoring" in control and "displaces its neighbours" in control
    assert "negative (blue)" in control and "positive (red)" in control


def test_region_section_renders_a_bootstrap_frame_with_intervals(result, canvas):
    frame = pd.DataFrame({"name": ["hippocampus", "lingual", "thalamus"], "hemisphere": ["L", "R", "L"],
                          "contribution": [0.5, -0.8, 0.1], "ci_low": [0.2, -1.1, -0.2], "ci_high": [0.8, -0.5, 0.4],
                          "rank": [1, 3, 2], "rank_low": [1, 2, 1], "rank_high": [2, 3, 3],
                          "null_corrected": [0.45, -0.85, 0.05], "n_voxels": [120, 300, 90],
                          "method": ["integrated_gradients"] * 3})
    regions = RegionResult(frame, result.regions.volume, "16 scans", None)
    document = _html(S.regions(dataclasses.replace(result, regions=regions), canvas))
    for column in ("95% interval", "rank interval", "null-corrected (y)", "hemisphere", "method"):
        assert f">{column}</th>" in document
    assert "[+0.20, +0.80]" in document and "[-1.10, -0.50]" in document and ">2-3<" in document
    assert "lingual" in document.split("Largest negative")[1].split("</table>")[0]
    assert "integrated_gradients" in document


def test_expert_section_has_the_mi_table_two_grids_and_one_row_per_expert(result, canvas, planted):
    document = _html(S.experts(result, canvas))
    mi_rows = _rows(document, 0)
    assert mi_rows == ["1", "3"]
    assert f"&lt; 1/{planted['shuffles'] + 1}" in document and f"<td>{planted['shuffles']}</td>" in document
    assert document.count("data:image/png;base64,") == 2  # dominant expert per layer; expert x layer grid
    assert _rows(document, 1) == [str(e) for e in range(planted["num_experts"])]  # experts of the last layer
    assert document.count("<details>") == 2  # one per MoE layer


def test_validation_discusses_the_control_row(result, canvas, planted):
    document = _html(S.validation(result, canvas))
    assert "precision@2" in document and "null regions (control)" in document
    assert f"contributes {planted['control']:+.2f} y" in document and "z-scoring" in document
    assert "larger in absolute value" not in document  # |-0.7| < frontal atrophy's 1.3


def test_validation_names_the_displaced_regions_of_its_own_ground_truth(result, canvas):
    """The lenient precision column counts the regions this cohort's warps displace, named from its ground truth."""
    truth = dataclasses.replace(result.validation.truth, indirect_regions=("L-back", "R-back"))
    validation = dataclasses.replace(result.validation, truth=truth)
    document = _html(S.validation(dataclasses.replace(result, validation=validation), canvas))
    assert "the 2 regions that the planted structure warps displace (L-back, R-back)" in document
    assert "ventricle and hippocampus warps" not in document  # the demo cohort's effects, not this one's


def test_group_section_draws_mathtext_and_markup_as_plain_text(result, canvas, planted):
    document = _html(S.groups(result, canvas))
    assert "Groups by diagnosis" in document
    assert html.escape(r"$\frac{1}{$") in document and "&lt;b&gt;AD&lt;/b&gt;" in document and "<b>" not in document
    assert document.count("data:image/png;base64,") == 1
    groups = planted["groups"]
    png = group_png({g: [1.0] for g in groups}, {g: [0.2, 0.3, 0.5] for g in groups}, r"title $\alpha")
    assert png.startswith(b"\x89PNG")


def test_subject_section_shows_unknown_ages_as_unknown(result, canvas):
    document = _html(S.subjects(result, canvas))
    (heading,) = re.findall(r"<h4>(.*?)</h4>", document)
    assert heading == "sub-00: predicted age 33.0 (true 30.0)"
    assert document.count("data:image/png;base64,") == 1  # --subject-figures 1
    unknown = dataclasses.replace(result.subjects[0], age=float("nan"))
    document = _html(S.subjects(dataclasses.replace(result, subjects=(unknown,)), canvas))
    assert re.findall(r"<h4>(.*?)</h4>", document) == ["sub-00: predicted age 33.0 (true unknown)"]


def test_how_to_read_explains_normalisation_and_colours(result, canvas):
    document = _html(S.how_to_read(result, canvas))
    assert "z-scored inside the brain" in document and "Negative (blue)" in document
    assert "A low rank means the model does not use the region" in document  # a ranking explains the model


def test_page_puts_the_main_result_first_with_a_table_of_contents(result):
    document = S.build_page(result, started=0.0)
    toc = re.search(r'<nav class="toc">(.*?)</nav>', document, flags=re.S).group(1)
    titles = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', toc)
    assert [t for _, t in titles][:3] == ["Main result", "How to read this report", "Cohort"]
    assert {"Regions that drive the predicted age", "Expert specialisation", "Validation against ground truth",
            "Groups by diagnosis", "Subjects", "Methods and files"} <= {t for _, t in titles}
    for anchor, _ in titles:
        assert f'<h2 id="{anchor}">' in document


def test_regional_section_ranks_the_ageing_region_beside_the_models_rank(collected, tmp_path):
    """Regional age models on 40 scans whose L-front voxels follow age: the section, the main result, the validation
    table and the written files show them, with each region's rank in the model's attribution beside it."""
    import io

    from brainage.attribution.regional import fit_regional_models, interior_rows, ventricle_distances
    from brainage.report.analysis import analyse
    from brainage.report.progress import StageProgress
    from brainage.report.write import report_files
    from tests.report.conftest import make_settings

    agg = collected.aggregator
    regions = agg.geometries[0].regions  # (X, Y, Z) region rows, -1 = background
    rows = regions[regions >= 0]
    rng = np.random.default_rng(4)
    ages = rng.uniform(20, 80, 40)
    voxels = rng.normal(size=(40, len(rows))).astype(np.float16)  # (s, n)
    front = rows == agg.regions.names.index("L-front")
    voxels[:, front] += ((ages[:, None] - 50) / 10).astype(np.float16)
    interior = interior_rows(regions, agg.geometries[0].affine)[regions >= 0]
    models = fit_regional_models(voxels, ages, rows, agg.regions, interior=interior)
    with_regional = dataclasses.replace(collected, regional=models, regional_note="40 scans with a known age, 5-fold "
                                                                                  "cross-validation")
    result = analyse(with_regional, make_settings(tmp_path), StageProgress(["analyse"], stream=io.StringIO()))
    canvas = S.Canvas(result)
    document = _html(S.regional(result, canvas))
    assert "Where the scans age (model-free)" in document and "40 scans with a known age" in document
    assert "Only 40 scans: on synthetic benchmark cohorts" in document  # below SURE_SUBJECTS: said so
    sure_enough = dataclasses.replace(result, regional=dataclasses.replace(result.regional, subjects=200))
    assert "Only" not in _html(S.regional(sure_enough, canvas)) and result.regional.subjects == 40
    assert _rows(document, 0)[0] == "1" and "L-front" in re.findall(r"<tbody>(.*?)</tbody>", document, re.S)[0][:400]
    first = result.regional.table.iloc[0]
    assert first.region == "L-front" and first.ci_low > 3 and first.model_rank == 1  # the model ranks it first too
    assert document.count("data:image/png;base64,") == 1  # the gain map
    sure = set(result.regional.table.loc[result.regional.table["ci_low"] > 0, "region"])
    painted = np.unique(regions[result.regional.ageing_volume != 0])  # region rows coloured on the page's map
    assert {agg.regions.names[r] for r in painted} == sure and "L-front" in sure  # intervals above 0 only
    assert np.count_nonzero(result.regional.volume) > np.count_nonzero(result.regional.ageing_volume)  # file: all
    main = _html(S.main_result(result, canvas))
    assert "Where the scans change with age" in main and "L-front" in main
    assert "gain, interior (y)" in document and "gain, all voxels (y)" in document and "interior voxels" in document
    assert "gain, both hemispheres (y)" in document and "rank among structures" in document
    front_pair = result.regional.table.set_index("region").loc[["L-front", "R-front"], "bilateral_gain"]
    assert front_pair.nunique() == 1  # one value per structure, on both of its rows
    assert (result.regional.table["n_voxels"] <= result.regional.table["n_voxels_all"]).all()
    rankings = list(result.validation.precision["ranking"])
    assert rankings[-3:] == ["regional age models (model-free, interiors)", "regional age models, all voxels",
                             "regional age models, bilateral order"]
    assert len(rankings) == 5
    regional_precision = result.validation.precision["planted"].iloc[-3]
    assert regional_precision >= 0.5
    assert f"regional age models (model-free, interiors) {regional_precision:.2f}" in main
    files = report_files(result)
    assert {"tables/regional_age_models.csv", "maps/regional_age_gain.nii.gz"} <= set(files)
    assert "gain_away" not in result.regional.table and "away from the ventricles" not in document  # none here
    # with a growing structure (in the real atlas, the lateral ventricles): the gain away from it and the label
    grows = agg.regions.names.index("L-front")
    away = interior_rows(regions, agg.geometries[0].affine, growing=[grows], growing_margin_mm=7.5)[regions >= 0]
    distances = ventricle_distances(regions, agg.geometries[0].affine, len(agg.regions), [grows])
    labelled = dataclasses.replace(with_regional, regional=dataclasses.replace(
        fit_regional_models(voxels, ages, rows, agg.regions, interior=interior, away=away), ventricle_mm=distances))
    table = analyse(labelled, make_settings(tmp_path), StageProgress(["analyse"], stream=io.StringIO())
                    ).regional.table
    assert {"gain_away", "gain_away_low", "gain_away_high", "n_voxels_away", "ventricle_mm", "near_ventricles",
            "darkening"} <= set(table)
    assert (table["n_voxels_away"] <= table["n_voxels"]).all() and not table["near_ventricles"].any()  # no change
    assert np.isnan(table.set_index("region").loc["L-front", "ventricle_mm"]) and table["ventricle_mm"].notna().any()
    shown = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional, table=table)),
                             canvas))
    assert "gain, away from the ventricles (y)" in shown and "read it as possibly displaced" in shown
    assert "listed after every unmarked region" in shown and not table["demoted"].any()
    assert "contraction share" in shown and table["contraction"].isna().all()  # models without shares
    assert "ventricles (mm)" in shown and "darkening" in shown and table["darkening"].isna().all()
    assert "within 10 mm of the lateral ventricles" not in _html(S.main_result(result, canvas))  # nothing marked
    darkens = table.assign(near_ventricles=table["region"] == "R-front", darkening=-0.9)  # marked, kept: it darkens
    cells = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional, table=darkens)),
                             canvas))
    assert "yes, darkens: kept in place" in cells and "yes: listed last" not in cells
    brightens = darkens.assign(darkening=0.9, demoted=darkens["near_ventricles"])  # listed last, flagged
    cells = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional,
                                                                                      table=brightens)), canvas))
    assert "yes, brightens throughout, much less than the ventricles tell: listed last (a brightening looks the " \
        "same)" in cells and "kept in place" not in cells
    brighter = brightens.assign(demoted=False)  # kept: nearly the ventricles' gain
    cells = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional,
                                                                                      table=brighter)), canvas))
    assert "yes, brightens throughout, about as much as the ventricles tell or more: kept in place" in cells
    assert "listed last" not in cells
    above = darkens.assign(darkening=0.0, demoted=False)  # kept: above growing ventricles
    cells = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional, table=above)),
                             canvas))
    assert "yes, tells more than the growing ventricles: kept in place" in cells
    assert "listed last" not in cells and "yes, brightens" not in cells and "yes, darkens" not in cells

    def headline(t: pd.DataFrame) -> str:
        return _html(S.main_result(dataclasses.replace(result, regional=dataclasses.replace(result.regional, table=t)),
                                   canvas))

    assert set(table.loc[table["ci_low"] > 0, "region"]) == {"L-front"}  # the only sure one here
    demoted = table.assign(near_ventricles=table["region"] == "L-front", demoted=table["region"] == "L-front")
    assert "L-front lies within 10 mm of the lateral ventricles without a change of its own in its age-slope map, " \
           "possibly displaced" in headline(demoted)
    both = table["region"].isin(["L-front", "L-back"])
    two = table.assign(near_ventricles=both, demoted=both, ci_low=np.where(both, 0.1, table["ci_low"]))
    assert "L-front, L-back lie within 10 mm of the lateral ventricles without a change of their own" in headline(two)
    kept = demoted.assign(demoted=False)  # marked, but its slope map shows its own contraction
    assert "L-front also lies within 10 mm of them but keeps its place: its age-slope map shows a contraction or a " \
           "darkening of its own, or it tells more age than growing ventricles, or about as much while brightening" \
           in headline(kept)
    front = table["region"] == "L-front"  # as a lateral ventricle that a neighbour's contraction pulls along
    pulled = table.assign(enlarged_by_neighbour=front, pulled_by=np.where(front, "L-back", ""), demoted=front)
    assert "L-front changes with age without growing on its own: its age-slope map follows the pull of a neighbour " \
           "(L-back) more than its own expansion, as when a neighbour contracts, so it is listed after the other " \
           "regions" in headline(pulled) and "within 10 mm" not in headline(pulled)
    cells = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional, table=pulled)),
                             canvas))
    assert "ventricle enlarged by the pull of a neighbour (largest: L-back), not by its own growth: listed last" \
        in cells
    assert cells.count("not by its own growth") == 2 and "pull share" in cells  # top table and all regions
    assert "changes with age without growing" not in headline(table)
    assert {"gain_near", "gain_far", "spill_over"} <= set(table) and not table["spill_over"].any()  # no near models
    spill = table.assign(spill_over=front, pulled_by=np.where(front, "L-back", ""), demoted=front)
    assert "L-front tells age only beside a neighbour that pulls it (L-back): its voxels within 9 mm of it tell " \
           "age, those farther away tell under 0.3 of that" in headline(spill) and "within 10 mm" not in headline(spill)
    marked = spill.assign(near_ventricles=front)  # in the zone too: one sentence, the spill-over's
    assert "tells age only beside" in headline(marked) and "within 10 mm" not in headline(marked)
    cells = _html(S.regional(dataclasses.replace(result, regional=dataclasses.replace(result.regional, table=marked)),
                             canvas))
    assert "yes, and a spill-over: listed last" in cells and "gain near the puller (y)" in cells
    assert "Spill-over beside a contraction" in cells and "tells age only beside" not in headline(table)


def test_regional_section_says_why_it_did_not_run(result, canvas):
    assert S.regional(result, canvas) is None  # not asked for
    note = dataclasses.replace(result, regional_note="not run: 5 scans with a known age on the main model grid, the "
                                                     "regional age models need at least 20")
    assert "need at least 20" in _html(S.regional(note, canvas))
