"""Contraction shares and darkenings: the slope maps match per-voxel least squares, the shares match a brute-force
full-grid implementation, a blob that contracts with age keeps a large share while one that growing ventricles push
aside keeps a small one, the contraction scores' slope on age is the same fit's contraction coefficient and their t
tells the contracting blob from the pushed one, the correlation t matches a reference per column and per resample,
beside the push's falloff the scores follow the four-pattern fit and a ball that a fading push compresses no longer
passes for a contraction, beside the bleed pattern they follow the five-pattern fit and an unchanging ball beside one
that darkens throughout no longer passes for a contraction while a contracting one does, the darkenings match a
per-region reference and tell a blob that darkens throughout from a moving one, a ventricle's expansion and pull shares
match a full-grid reference and tell a growing ventricle from one that a contracting neighbour pulls, every other
region's pull share matches one too and names the contracting neighbour that drags it, and bad input is refused."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy import ndimage as ndi

from brainage.attribution.contraction import (BLEED_SIGMA_MM, MIN_VOXELS, PULL_REACH_MM, UNIFORM, SlopeMaps, age_t,
                                              contraction_scores, contraction_shares, darkening, region_pulls,
                                              ventricle_pulls)
from brainage.attribution.regional import DARKENING_MAX

SPACING = 2.0
AFFINE = np.diag([SPACING, SPACING, SPACING, 1.0])
SHAPE = (30, 24, 24)


def _blob(centre: tuple[float, float, float], radius: float, grid: np.ndarray) -> np.ndarray:
    """(X, Y, Z) smooth ball: 1 inside, 0 outside, a 2 mm soft edge (the model grid's blur)."""
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre))) * SPACING  # mm
    return 1.0 / (1.0 + np.exp((distance - radius) / 2.0))


def _scans(s: int, seed: int, draw: Callable[[float, np.ndarray], np.ndarray],
           balls: tuple[tuple[tuple[float, float, float], float], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (s, X, Y, Z), ages (s,), region rows (X, Y, Z)): ``draw(t, grid)`` per scan, t = (age - 50) / 30 in
    -1 .. 1, plus N(0, 0.01) noise; row i = the ball ``balls[i]`` (centre in voxels, radius in mm)."""
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, s)
    grid = np.indices(SHAPE, dtype=np.float64)
    images = np.stack([draw((age - 50) / 30, grid) + rng.normal(0, 0.01, SHAPE) for age in ages])
    regions = np.full(SHAPE, -1)
    for row, (centre, radius) in enumerate(balls):
        regions[_blob(centre, radius, grid) > 0.5] = row
    return images, ages, regions


def _cohort(s: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(images (s, X, Y, Z), ages, region rows (X, Y, Z), ventricle rows): a dark ventricle ball (row 0) that grows
    with age, a grey ball beside it (row 1) pushed away as it grows, and a grey ball far from it (row 2) that
    contracts with age; the rows are the balls at the cohort's mean age."""
    def draw(t: float, grid: np.ndarray) -> np.ndarray:
        return (1.0 - 0.8 * _blob((8, 12, 12), 8 + 2 * t, grid)
                - 0.4 * _blob((15 + 1.0 * t, 12, 12), 5, grid)  # its centre moves off the ventricle by 2 mm per 30 y
                - 0.4 * _blob((24, 12, 12), 7 - 1.5 * t, grid))

    return *_scans(s, seed, draw, (((8, 12, 12), 8), ((15, 12, 12), 5), ((24, 12, 12), 7))), [0]


def _maps(images: np.ndarray, ages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    acc = SlopeMaps()
    for image, age in zip(images, ages):
        acc.add(image, age)
    return acc.maps()


def _patterns(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, row: int, ventricles: list[int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """A region's slope map (v,) and its (v, 3) patterns (uniform, away, contraction) on the full grid, voxel by
    voxel (no crop), in the grid's C order."""
    grad = np.gradient(mean, SPACING, SPACING, SPACING)
    dist = ndi.distance_transform_edt(~np.isin(regions, ventricles), sampling=SPACING)
    dgrad = np.gradient(dist, SPACING, SPACING, SPACING)
    inside = regions == row
    signed = (ndi.distance_transform_edt(~inside, sampling=SPACING)
              - ndi.distance_transform_edt(inside, sampling=SPACING))
    sgrad = np.gradient(signed, SPACING, SPACING, SPACING)
    rows = []
    for p in np.argwhere(inside):
        g = np.array([grad[a][tuple(p)] for a in range(3)])
        n_away = np.array([dgrad[a][tuple(p)] for a in range(3)])
        n_out = np.array([sgrad[a][tuple(p)] for a in range(3)])
        rows.append((slope[tuple(p)], -g @ (n_away / (np.linalg.norm(n_away) + 1e-9)),
                     g @ (n_out / (np.linalg.norm(n_out) + 1e-9))))
    y, away, shrink = np.array(rows).T
    return y, np.column_stack([np.ones_like(y), away, shrink])


def _reference(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, r: int, ventricles: list[int]) -> np.ndarray:
    """The shares on the full grid, one region at a time, voxel by voxel (no crop)."""
    out = np.full(r, np.nan)
    for row in range(r):
        if row in ventricles or (regions == row).sum() < 5:
            continue
        y, full = _patterns(mean, slope, regions, row, ventricles)
        sse = [((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum() for x in (full, full[:, :2])]
        out[row] = (sse[1] - sse[0]) / ((y - y.mean()) ** 2).sum()
    return out


def test_slope_maps_match_per_voxel_least_squares():
    images, ages, _, _ = _cohort(s=20)
    mean, slope = _maps(images, ages)
    flat = images.reshape(len(ages), -1)
    fitted = np.polyfit(ages, flat, 1)  # (2, X*Y*Z): slope, intercept
    np.testing.assert_allclose(slope.ravel(), fitted[0], atol=1e-9)
    np.testing.assert_allclose(mean, images.mean(0), atol=1e-12)


def test_shares_match_a_brute_force_full_grid_reference():
    images, ages, regions, ventricles = _cohort()
    mean, slope = _maps(images, ages)
    got = contraction_shares(mean, slope, regions, AFFINE, 4, ventricles)
    want = _reference(mean, slope, regions, 4, ventricles)
    np.testing.assert_allclose(got, want, atol=1e-9, equal_nan=True)
    assert np.isnan(got[0]) and np.isnan(got[3])  # the ventricle itself; a row with no voxel


def test_a_contracting_region_keeps_a_large_share_a_pushed_one_a_small_one():
    images, ages, regions, ventricles = _cohort()
    shares = contraction_shares(*_maps(images, ages), regions, AFFINE, 3, ventricles)
    assert shares[2] > 0.3, shares  # contracts: most of its slope map is its own contraction
    assert shares[1] < 0.1, shares  # pushed aside: the away pattern explains it
    assert shares[2] > 3 * shares[1]


def test_contraction_scores_follow_the_slope_maps_fit_and_test_a_contraction_not_a_push():
    """The slope of each region's contraction scores on age is the contraction coefficient of the full-grid
    least-squares fit of its slope map (the fit behind the share); their t with age is large for the contracting
    ball and small for the pushed one; the ventricle's column is NaN, and so is every column without ventricles."""
    images, ages, regions, ventricles = _cohort()
    mean, slope = _maps(images, ages)
    scores = contraction_scores(images[:, regions >= 0], mean, slope, regions, AFFINE, 4, ventricles, bleed_mm=None)[0]
    assert scores.shape == (len(ages), 4) and np.isnan(scores[:, [0, 3]]).all()
    for row in (1, 2):
        y, full = _patterns(mean, slope, regions, row, ventricles)
        want = np.linalg.lstsq(full, y, rcond=None)[0][2]
        assert np.polyfit(ages, scores[:, row], 1)[0] == pytest.approx(want, rel=1e-9, abs=1e-12)
    half = contraction_scores(images[:, regions >= 0].astype(np.float16), mean, slope, regions, AFFINE, 4, ventricles,
                              bleed_mm=None)[0]
    assert np.polyfit(ages, half[:, 2], 1)[0] == pytest.approx(np.polyfit(ages, scores[:, 2], 1)[0], rel=0.01)
    t = age_t(scores, ages)
    assert t[2] > 10 and abs(t[1]) < 3 and np.isnan(t[[0, 3]]).all(), t
    none = contraction_scores(images[:, regions >= 0], mean, slope, np.where(regions == 0, -1, regions), AFFINE, 4, [0])
    assert np.isnan(none).all()  # both score sets


def _ellipsoid(centre: tuple[float, float, float], radii: tuple[float, float, float], grid: np.ndarray) -> np.ndarray:
    """(X, Y, Z) smooth ellipsoid: centre in voxels, semi-axes in mm, a soft edge as :func:`_blob`'s."""
    scaled = np.sqrt(sum(((g - c) * SPACING / a) ** 2 for g, c, a in zip(grid, centre, radii)))  # 1 on the surface
    return 1.0 / (1.0 + np.exp((scaled - 1.0) * min(radii) / 2.0))


def _push_cohort(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """As :func:`_cohort`, but the push fades: the ball beside the growing ventricle (row 1) moves 2 mm per 30 y on its
    near side and 1 mm on its far side (moved and compressed along x), and the ball above the ventricle (row 2)
    contracts in place."""
    def draw(t: float, grid: np.ndarray) -> np.ndarray:
        near, far = 12.5 * SPACING + 2 * t, 17.5 * SPACING + 1 * t  # mm: the pushed ball's edges along x
        return (1.0 - 0.8 * _blob((8, 12, 12), 8 + 2 * t, grid)
                - 0.4 * _ellipsoid(((near + far) / 2 / SPACING, 12, 12), ((far - near) / 2, 5, 5), grid)
                - 0.4 * _blob((8, 20, 12), 5 - 1.0 * t, grid))

    return *_scans(60, seed, draw, (((8, 12, 12), 8), ((15, 12, 12), 5), ((8, 20, 12), 5))), [0]


@pytest.mark.parametrize("seed", [0, 1])
def test_falloff_scores_follow_the_four_pattern_fit_and_tell_a_compressed_push_from_a_contraction(seed):
    """With the push's falloff, the slope of the scores on age is the contraction coefficient of the full-grid fit on
    four patterns (uniform, away, contraction, away times the centred distance to the ventricles). A ball that a
    fading push moves and compresses follows a contraction by the plain t (measured 13-15) but not beside the
    falloff (measured 0.9-2.2), while a ball beside the ventricle that contracts keeps a large t either way (35-44)."""
    images, ages, regions, ventricles = _push_cohort(seed)
    mean, slope = _maps(images, ages)
    plain, falloff = contraction_scores(images[:, regions >= 0], mean, slope, regions, AFFINE, 3, ventricles,
                                        bleed_mm=None)
    distance = ndi.distance_transform_edt(~np.isin(regions, ventricles), sampling=SPACING)
    for row in (1, 2):
        y, full = _patterns(mean, slope, regions, row, ventricles)
        mm = distance[regions == row]  # (v,) in the grid's C order, as _patterns
        four = np.column_stack([full, full[:, 1] * (mm - mm.mean())])
        want = np.linalg.lstsq(four, y, rcond=None)[0][2]
        assert np.polyfit(ages, falloff[:, row], 1)[0] == pytest.approx(want, rel=1e-9, abs=1e-12)
    t, t_falloff = age_t(plain, ages), age_t(falloff, ages)
    assert t[1] > 8 and abs(t_falloff[1]) < 4, (t, t_falloff)
    assert t[2] > 20 and t_falloff[2] > 20, (t, t_falloff)
    assert np.isnan(falloff[:, 0]).all()


def _bleed_cohort(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(images, ages, region rows, ventricle rows): a static ventricle ball (row 0), a ball that darkens throughout
    (row 1, a T1 contrast change), an unchanging ball touching it (row 2) and a ball touching it that contracts
    (row 3); the model grid's blur (:func:`_blob`'s soft edge) carries row 1's darkening into their border voxels."""
    def draw(t: float, grid: np.ndarray) -> np.ndarray:
        return (1.0 - 0.8 * _blob((7, 12, 12), 8, grid) - (0.45 + 0.15 * t) * _blob((16, 12, 12), 6, grid)
                - 0.3 * _blob((22.5, 12, 12), 6, grid) - 0.3 * _blob((16, 18.5, 12), 6 - 1.5 * t, grid))

    return *_scans(60, seed, draw, (((7, 12, 12), 8), ((16, 12, 12), 6), ((22.5, 12, 12), 6),
                                    ((16, 18.5, 12), 6))), [0]


@pytest.mark.parametrize("seed", [0, 1])
def test_bleed_scores_follow_the_five_pattern_fit_and_tell_a_neighbours_contrast_change_from_a_contraction(seed):
    """Beside the bleed pattern (the uniformly changing neighbours' slope map blurred by ``BLEED_SIGMA_MM``), the
    slope of the scores on age is the contraction coefficient of the full-grid fit on five patterns. An unchanging
    ball beside a darkening one follows a contraction by the t without it (measured 19-24) but not beside it (0.7-2.5),
    while a ball beside the darkening one that contracts keeps a large t (33-41)."""
    images, ages, regions, ventricles = _bleed_cohort(seed)
    mean, slope = _maps(images, ages)
    dark = darkening(slope, regions, 4)
    assert dark[1] <= -UNIFORM and abs(dark[2]) < UNIFORM  # the darkening ball changes uniformly, its neighbour not
    voxels = images[:, regions >= 0]
    plain, falloff = contraction_scores(voxels, mean, slope, regions, AFFINE, 4, ventricles)
    uniform = np.isin(regions, [row for row in (1, 2, 3) if abs(dark[row]) >= UNIFORM])
    distance = ndi.distance_transform_edt(~np.isin(regions, ventricles), sampling=SPACING)
    for row in (1, 2, 3):
        y, full = _patterns(mean, slope, regions, row, ventricles)
        own = regions == row
        seen = ndi.gaussian_filter(np.where(uniform & ~own, slope, 0.0), BLEED_SIGMA_MM / SPACING)[own]
        mm = distance[own]
        for scores, x in ((plain, np.column_stack([full, seen])),
                          (falloff, np.column_stack([full, full[:, 1] * (mm - mm.mean()), seen]))):
            want = np.linalg.lstsq(x, y, rcond=None)[0][2]
            assert np.polyfit(ages, scores[:, row], 1)[0] == pytest.approx(want, rel=1e-9, abs=1e-12)
    without = age_t(contraction_scores(voxels, mean, slope, regions, AFFINE, 4, ventricles, bleed_mm=None)[0], ages)
    t = age_t(plain, ages)
    assert without[2] > 10 and abs(t[2]) < 4, (without, t)
    assert t[3] > 20, t


def test_age_t_matches_the_correlation_t_of_each_column_and_of_each_bootstrap_resample():
    rng = np.random.default_rng(3)
    ages = rng.uniform(20, 80, 50)
    scores = np.column_stack([ages * 0.1 + rng.normal(0, 2, 50), rng.normal(0, 1, 50), np.full(50, 2.0),
                              np.full(50, np.nan)])
    def reference(x: np.ndarray, a: np.ndarray) -> float:
        r = np.corrcoef(x, a)[0, 1]
        return r * np.sqrt((len(a) - 2) / (1 - r * r))

    t = age_t(scores, ages)
    np.testing.assert_allclose(t[:2], [reference(scores[:, c], ages) for c in range(2)], rtol=1e-10)
    assert t[2] == 0.0 and np.isnan(t[3])  # a constant score; none
    draws = rng.integers(0, 50, size=(4, 50))  # (B, s) resampled scans
    weights = np.stack([np.bincount(d, minlength=50) for d in draws]).astype(float)
    boot = age_t(scores, ages, weights)
    assert boot.shape == (4, 4)
    for b, d in enumerate(draws):
        np.testing.assert_allclose(boot[b, :2], [reference(scores[d, c], ages[d]) for c in range(2)], rtol=1e-8)


def test_darkenings_match_a_per_region_reference_and_tell_a_darkening_from_a_push():
    images, ages, regions, _ = _cohort()
    grid = np.indices(SHAPE, dtype=np.float64)
    rng = np.random.default_rng(1)
    for i, age in enumerate(ages):  # row 1's ball moves 2 mm across its place, row 2's darkens where it is
        grow = (age - 50) / 30  # -1 .. 1
        images[i] = (1.0 - 0.8 * _blob((8, 12, 12), 8, grid) - 0.4 * _blob((15 + grow, 12, 12), 5, grid)
                     - (0.4 + 0.1 * grow) * _blob((24, 12, 12), 7, grid) + rng.normal(0, 0.01, SHAPE))
    slope = _maps(images, ages)[1]
    regions = regions.copy()
    regions[0, 0, :3] = 3  # a row under MIN_VOXELS voxels: NaN
    got = darkening(slope, regions, 5)
    for row in range(3):
        y = slope[regions == row]
        assert got[row] == pytest.approx(y.mean() / np.sqrt((y ** 2).mean()), abs=1e-12)
    assert (regions == 3).sum() < MIN_VOXELS and np.isnan(got[3]) and np.isnan(got[4])  # too few; none
    assert got[2] < -0.95 and got[2] <= DARKENING_MAX  # darkens throughout
    assert abs(got[1]) < 0.3  # moved: its map darkens at the leading edge and brightens at the trailing one
    assert np.isnan(darkening(np.zeros(SHAPE), regions, 5)).all()  # a flat map: no direction


def _pull_cohort(grows: bool, s: int = 60, seed: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, ages, region rows): a dark ventricle ball (row 0) with a grey ball 4 mm beside it (row 1) and one
    far from it (row 2). ``grows``: the ventricle grows with age, its neighbour still; else the neighbour contracts
    and pulls the ventricle along (its centre moves 1.5 mm towards it per 30 y, its size kept)."""
    def draw(t: float, grid: np.ndarray) -> np.ndarray:
        return (1.0 - 0.8 * _blob((8 + (0 if grows else 0.75 * t), 12, 12), 8 + (2 * t if grows else 0), grid)
                - 0.4 * _blob((15, 12, 12), 5 - (0 if grows else 1.5 * t), grid) - 0.4 * _blob((26, 12, 4), 3, grid))

    return _scans(s, seed, draw, (((8, 12, 12), 8), ((15, 12, 12), 5), ((26, 12, 4), 3)))


def _pull_reference(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, row: int) -> tuple[float, float, int]:
    """A ventricle's expansion share, largest pull share and its neighbour on the full grid (no crop)."""
    grad = np.gradient(mean, SPACING, SPACING, SPACING)
    inside = regions == row
    y = slope[inside]

    def sse(*patterns: np.ndarray) -> float:
        x = np.column_stack([np.ones_like(y), *patterns])
        return ((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum()

    def along(field: np.ndarray) -> np.ndarray:  # grad(M) . unit gradient of ``field`` at the ventricle's voxels
        g = np.gradient(field, SPACING, SPACING, SPACING)
        norm = np.sqrt(sum(c * c for c in g)) + 1e-9
        return sum(m * c / norm for m, c in zip(grad, g))[inside]

    own = along(ndi.distance_transform_edt(~inside, sampling=SPACING)
                - ndi.distance_transform_edt(inside, sampling=SPACING))
    total = ((y - y.mean()) ** 2).sum()
    near = ndi.distance_transform_edt(~inside, sampling=SPACING) <= PULL_REACH_MM
    shares = {int(o): (sse(own) - sse(own, along(ndi.distance_transform_edt(regions != o, sampling=SPACING)))) / total
              for o in np.unique(regions[near & (regions >= 0)]) if o != row}
    best = max(shares, key=shares.get)
    return (sse() - sse(own)) / total, shares[best], best


@pytest.mark.parametrize("grows", [True, False])
def test_ventricle_pulls_match_a_full_grid_reference_and_tell_growth_from_a_neighbours_pull(grows):
    images, ages, regions = _pull_cohort(grows)
    mean, slope = _maps(images, ages)
    expansion, pull, by = ventricle_pulls(mean, slope, regions, AFFINE, 4, [0])
    want = _pull_reference(mean, slope, regions, 0)
    np.testing.assert_allclose([expansion[0], pull[0]], want[:2], atol=1e-9)
    assert by[0] == want[2] == 1  # the far ball is out of reach
    assert np.isnan(expansion[1:]).all() and np.isnan(pull[1:]).all() and (by[1:] == -1).all()
    if grows:
        assert expansion[0] > 0.3 and pull[0] < expansion[0] / 3, (expansion, pull)
    else:
        assert pull[0] > 0.3 and expansion[0] < pull[0] / 3, (expansion, pull)


def test_without_ventricles_every_share_is_nan():
    images, ages, regions, _ = _cohort(s=20)
    shares = contraction_shares(*_maps(images, ages), np.where(regions == 0, -1, regions), AFFINE, 3, [0])
    assert np.isnan(shares).all()


def test_bad_input_is_refused():
    acc = SlopeMaps()
    assert not acc.usable
    with pytest.raises(ValueError, match="at least 3 scans"):
        acc.maps()
    acc.add(np.zeros((4, 4, 4)), 30.0)
    with pytest.raises(ValueError, match="one grid"):
        acc.add(np.zeros((4, 4, 5)), 40.0)
    acc.add(np.zeros((4, 4, 4)), 30.0)
    acc.add(np.zeros((4, 4, 4)), 30.0)
    assert not acc.usable  # three scans, one age
    with pytest.raises(ValueError, match="different ages"):
        acc.maps()


def _region_pull_reference(mean: np.ndarray, slope: np.ndarray, regions: np.ndarray, row: int,
                           leave_out: tuple[int, ...]) -> tuple[float, int]:
    """A region's largest pull share beside a uniform change, tissue moving off row 0 (the ventricle) and its own
    contraction, and that neighbour, on the full grid (no crop)."""
    grad = np.gradient(mean, SPACING, SPACING, SPACING)
    inside = regions == row
    y = slope[inside]

    def along(field: np.ndarray) -> np.ndarray:
        g = np.gradient(field, SPACING, SPACING, SPACING)
        norm = np.sqrt(sum(c * c for c in g)) + 1e-9
        return sum(m * c / norm for m, c in zip(grad, g))[inside]

    def sse(*patterns: np.ndarray) -> float:
        x = np.column_stack([np.ones_like(y), *patterns])
        return ((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2).sum()

    away = -along(ndi.distance_transform_edt(regions != 0, sampling=SPACING))
    own = along(ndi.distance_transform_edt(~inside, sampling=SPACING)
                - ndi.distance_transform_edt(inside, sampling=SPACING))
    near = ndi.distance_transform_edt(~inside, sampling=SPACING) <= PULL_REACH_MM
    shares = {int(o): (sse(away, own) - sse(away, own, along(ndi.distance_transform_edt(regions != o,
                                                                                         sampling=SPACING))))
              / ((y - y.mean()) ** 2).sum()
              for o in np.unique(regions[near & (regions >= 0)]) if o != row and o not in leave_out}
    best = max(shares, key=shares.get)
    return shares[best], best


def test_region_pulls_match_a_full_grid_reference_and_find_the_contracting_neighbour():
    """A ventricle (row 0), a ball that contracts with age (row 1), a ball beside it dragged towards it (row 2) and a
    still ball beside row 2 (row 3): row 2's slope map follows row 1's pull more than twice its own contraction, row
    1's own contraction explains its map more than any pull; both match the full-grid reference. Leaving row 1 out as
    row 2's twin makes the pull fall to what is left; the ventricle's row is NaN."""
    def draw(t: float, grid: np.ndarray) -> np.ndarray:
        return (1.0 - 0.8 * _blob((21.5, 2, 12), 3, grid) - 0.4 * _blob((14, 12, 12), 8 - 1.5 * t, grid)
                - 0.4 * _blob((21.5 - 0.5 * t, 12, 12), 5, grid) - 0.4 * _blob((22, 12, 6.5), 3, grid))

    images, ages, regions = _scans(60, 5, draw, (((21.5, 2, 12), 3), ((14, 12, 12), 8), ((21.5, 12, 12), 5),
                                                 ((22, 12, 6.5), 3)))
    mean, slope = _maps(images, ages)
    shares = contraction_shares(mean, slope, regions, AFFINE, 4, [0])
    pull, by = region_pulls(mean, slope, regions, AFFINE, 4, [0], [-1, -1, -1, -1])
    for row in (1, 2):
        want = _region_pull_reference(mean, slope, regions, row, (0,))
        np.testing.assert_allclose(pull[row], want[0], atol=1e-9)
        assert by[row] == want[1]
    assert np.isnan(pull[0]) and by[0] == -1
    assert by[2] == 1 and pull[2] > 0.5 and shares[2] < pull[2] / 2, (pull, shares)
    assert shares[1] > pull[1], (pull, shares)
    twinned, twin_by = region_pulls(mean, slope, regions, AFFINE, 4, [0], [-1, 2, 1, -1])
    want = _region_pull_reference(mean, slope, regions, 2, (0, 1))
    assert twin_by[2] == want[1] != 1 and np.isclose(twinned[2], want[0], atol=1e-9) and twinned[2] < pull[2]
