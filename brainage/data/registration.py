"""Nonlinear spatial normalisation to the ICBM152 2009a T1: an affine, then a free-form deformation (FFD).

The deformation is a coarse grid of control displacements, trilinearly interpolated (free-form deformation: Rueckert
et al. 1999, IEEE TMI 18:712), fitted with the affine by L-BFGS to the normalised cross-correlation with the template
inside its brain, with a first-difference penalty on the control grid. Low-frequency normalisation of this kind
(SPM: Ashburner & Friston 1999, Hum Brain Mapp 7:254) is what VBM and brain-age pipelines run before a model sees a
scan: it removes the smooth inter-subject shape differences that move a small structure by millimetres, so a change
of that structure's own size lands on the same template voxels in every scan (docs/data.md, measured there).

Scale: about 0.55-0.9 s per 2 mm scan on one CPU core (4 mm fit, 7 x 8 x 7 control points, 60 iterations;
benchmarks/registration.py); run it in the cached preprocessing chain (`brainage.data.transforms.RegisterToTemplated`),
never per epoch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.affines import voxel_sizes
from scipy import ndimage as ndi

from brainage.reference.templates import icbm152_on_grid, load_icbm152, mni_grid

__all__ = ["Registered", "TemplateRegistration"]

_BRAIN = 0.05  # template T1 level ([0, 1]) above which a voxel counts as brain for the similarity


@dataclass(frozen=True)
class Registered:
    """A scan on the template grid: image (X, Y, Z) float32, affine (4, 4) voxel -> MNI mm, and the final
    normalised cross-correlation with the template inside its brain."""

    image: torch.Tensor
    affine: np.ndarray
    correlation: float


def _grid_points(shape: tuple[int, ...], affine: np.ndarray) -> torch.Tensor:
    """(X, Y, Z, 3) mm coordinates of every voxel of a grid."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)  # (X, Y, Z, 3)
    return torch.from_numpy((ijk @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32))


def _sample(volume: torch.Tensor, affine: np.ndarray, points: torch.Tensor) -> torch.Tensor:
    """Trilinear values of ``volume`` (X, Y, Z) at mm ``points`` (..., 3); 0 outside."""
    to_voxel = torch.as_tensor(np.linalg.inv(affine), dtype=torch.float32)
    voxel = points @ to_voxel[:3, :3].T + to_voxel[:3, 3]  # (..., 3)
    size = torch.tensor(volume.shape, dtype=torch.float32)
    grid = (2.0 * voxel / (size - 1.0) - 1.0).flip(-1)  # grid_sample wants (z, y, x) order in [-1, 1]
    out = F.grid_sample(volume[None, None], grid.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                        align_corners=True)  # (1, 1, 1, 1, n)
    return out.reshape(points.shape[:-1])


@functools.lru_cache(maxsize=1)
def _field_of_view() -> tuple[torch.Tensor, torch.Tensor]:
    """(first corner (3,) mm, extent (3,) mm) of the 1 mm ICBM152 grid: the box the FFD control grid spans."""
    t1, affine = load_icbm152("t1")
    return (torch.tensor(affine[:3, 3], dtype=torch.float32),
            torch.tensor(np.diag(affine)[:3] * (np.array(t1.shape) - 1), dtype=torch.float32))


class TemplateRegistration:
    """Affine + FFD normalisation of a T1 to the ICBM152 2009a T1 (fitted at ``fit_spacing``, output at ``spacing``).

    Args:
        control_points: control grid size per axis over the template field of view (7 x 8 x 7: about 28 mm apart).
        smoothness: weight of the mean squared difference of neighbouring control displacements (mm^2).
        iterations: L-BFGS iterations of the joint affine + FFD stage (the affine-only stage before it: half).
        fit_spacing: grid (mm) of the template the similarity is computed on.
        spacing: grid (mm) of the output, :func:`brainage.reference.templates.mni_grid` ``(spacing)``.
        min_correlation: a fit ending below this correlation with the template is refused (not a T1 in MNI
            orientation, or not affinely near it).
    """

    def __init__(self, control_points: tuple[int, int, int] = (7, 8, 7), smoothness: float = 0.01,
                 iterations: int = 60, fit_spacing: float = 4.0, spacing: float = 2.0,
                 min_correlation: float = 0.5) -> None:
        points = tuple(control_points)
        if len(points) != 3 or not all(isinstance(n, int) and 2 <= n <= 32 for n in points):
            raise ValueError(f"control_points={control_points!r}; expected three integers in 2-32")
        checks = {"smoothness": (smoothness, 0.0, 1e3), "iterations": (iterations, 1, 500),
                  "fit_spacing": (fit_spacing, 1.0, 10.0), "spacing": (spacing, 0.5, 10.0),
                  "min_correlation": (min_correlation, -1.0, 1.0)}
        for name, (value, low, high) in checks.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name}={value!r}; expected a number in [{low}, {high}]")
        if not isinstance(iterations, int):
            raise ValueError(f"iterations={iterations!r}; expected an integer")
        self.control_points, self.smoothness, self.iterations = points, float(smoothness), iterations
        self.fit_spacing, self.spacing = float(fit_spacing), float(spacing)
        self.min_correlation = float(min_correlation)

    def _template(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(brain points (n, 3) mm of the fit grid, the template's z-scored values there (n,))."""
        t1, affine = icbm152_on_grid(self.fit_spacing)
        brain = t1 > _BRAIN
        values = torch.from_numpy(np.array(t1[brain]))
        return _grid_points(t1.shape, affine)[torch.from_numpy(brain)], (values - values.mean()) / values.std()

    def _displacement(self, control: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Trilinear FFD displacement (mm) at mm ``points`` (..., 3); ``control`` (1, 3, cx, cy, cz) spans the
        template's field of view, corner to corner."""
        low, span = _field_of_view()
        grid = (2.0 * (points - low) / span - 1.0).flip(-1)  # (z, y, x) order in [-1, 1]
        out = F.grid_sample(control, grid.reshape(1, 1, 1, -1, 3), mode="bilinear", padding_mode="border",
                            align_corners=True)  # (1, 3, 1, 1, n)
        return out.reshape(3, -1).T.reshape(points.shape)

    def __call__(self, volume: torch.Tensor, affine: np.ndarray) -> Registered:
        """Register ``volume`` (X, Y, Z; voxel -> RAS mm ``affine``) and resample it onto the output grid."""
        volume = torch.as_tensor(volume, dtype=torch.float32)
        affine = np.asarray(affine, dtype=np.float64)
        voxel = voxel_sizes(affine)
        sigma = np.sqrt(np.maximum(self.fit_spacing**2 - voxel**2, 0.0)) / 2.355 / voxel  # anti-alias, in voxels
        moving = torch.from_numpy(ndi.gaussian_filter(volume.numpy(), sigma).astype(np.float32))
        points, fixed = self._template()
        centre = points.mean(dim=0)
        linear = torch.zeros(3, 4, requires_grad=True)  # (I + linear[:, :3]) about the centre, + linear[:, 3] mm
        control = torch.zeros(1, 3, *self.control_points, requires_grad=True)

        def moved(p: torch.Tensor, field: torch.Tensor | None) -> torch.Tensor:  # template mm -> moving mm
            q = centre + (p - centre) @ (torch.eye(3) + linear[:, :3]).T + linear[:, 3]
            return q if field is None else q + field

        def loss(with_field: bool) -> tuple[torch.Tensor, torch.Tensor]:
            field = self._displacement(control, points) if with_field else None
            values = _sample(moving, affine, moved(points, field))
            ncc = ((values - values.mean()) / (values.std() + 1e-6) * fixed).mean()
            rough = sum((control.diff(dim=d) ** 2).mean() for d in (2, 3, 4)) if with_field else 0.0
            return 1.0 - ncc + self.smoothness * rough, ncc

        for params, with_field, steps in (([linear], False, max(self.iterations // 2, 1)),
                                          ([linear, control], True, self.iterations)):
            optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                optimiser.zero_grad()
                value = loss(with_field)[0]
                value.backward()
                return value

            optimiser.step(closure)
        with torch.no_grad():
            correlation = float(loss(True)[1])
            out_shape, out_affine = mni_grid(self.spacing)
            grid = _grid_points(out_shape, out_affine)  # (X, Y, Z, 3)
            image = _sample(volume, affine, moved(grid, self._displacement(control, grid)))  # (X, Y, Z)
        return Registered(image=image, affine=out_affine, correlation=correlation)
