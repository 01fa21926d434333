"""Age-bias correction of brain-age predictions (de Lange & Cole 2020, NeuroImage Clin 26:102229), as stored in the
model card.

Fit `pred = slope * age + intercept` on validation (or the user's control) predictions, then correct with
`(pred - intercept) / slope`. Never fit it on the test set that is reported. A stored correction is untrusted input:
`check_bias_correction` refuses a non-finite or non-positive slope (dividing by it gives inf or flips the sign).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["apply_bias_correction", "check_bias_correction", "fit_bias_correction"]


def fit_bias_correction(age: np.ndarray, predicted: np.ndarray, fit_on: str, min_slope: float = 0.05) -> dict:
    """Least-squares line of predicted on chronological age; returns the card entry.

    Raises ValueError for fewer than 3 pairs, non-finite values, no age range, or a slope that is not above
    min_slope (dividing by a near-zero slope would blow the corrected ages up: the model has not learned age yet).
    """
    age, predicted = np.asarray(age, dtype=float), np.asarray(predicted, dtype=float)
    if age.shape != predicted.shape or age.size < 3:
        raise ValueError(f"bias correction needs >= 3 paired ages and predictions; found {age.size} and "
                         f"{predicted.size}")
    if not (np.isfinite(age).all() and np.isfinite(predicted).all()):
        raise ValueError(f"bias correction needs finite ages and predictions; found {int((~np.isfinite(age)).sum())} "
                         f"non-finite ages and {int((~np.isfinite(predicted)).sum())} non-finite predictions")
    if np.ptp(age) < 1.0:
        raise ValueError(f"bias correction needs an age range; found ages spanning {np.ptp(age):.2f} years")
    slope, intercept = np.polyfit(age, predicted, 1)
    if not slope > min_slope:  # also refuses NaN
        raise ValueError(f"fitted slope {slope:.3f} is not above min_slope {min_slope}: too small to invert, the "
                         f"predictions barely follow age")
    return {"method": "de Lange & Cole 2020: pred = slope*age + intercept; corrected = (pred - intercept)/slope",
            "slope": float(slope), "intercept": float(intercept), "fit_on": fit_on, "n": int(age.size),
            "age_min": float(age.min()), "age_max": float(age.max())}


def check_bias_correction(correction: object, source: str) -> dict | None:
    """The stored correction if it is usable (None/empty = no correction); ValueError naming `source` otherwise."""
    if correction is None or correction == {}:
        return None
    if not isinstance(correction, dict):
        raise ValueError(f"{source}: bias_correction is a {type(correction).__name__}; expected a mapping with "
                         f"slope and intercept")
    values = {key: correction.get(key) for key in ("slope", "intercept")}
    bad = {k: v for k, v in values.items()
           if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"{source}: bias_correction has {bad}; expected finite numbers for slope and intercept")
    if not values["slope"] > 0:
        raise ValueError(f"{source}: bias_correction slope is {values['slope']}; expected a positive slope "
                         f"(corrected = (pred - intercept) / slope)")
    return correction


def apply_bias_correction(predicted: np.ndarray | float, correction: dict | None) -> np.ndarray | float:
    """Corrected brain age; returns the input unchanged when the model has no correction."""
    if not correction:
        return predicted
    return (np.asarray(predicted, dtype=float) - correction["intercept"]) / correction["slope"]
