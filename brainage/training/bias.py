"""Age-bias correction of brain-age predictions (de Lange & Cole 2020, NeuroImage Clin 26:102229).

Fit `pred = slope * age + intercept` on validation (or the user's control) predictions, then correct with
`(pred - intercept) / slope`. Never fit it on the test set that is reported.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_bias_correction", "apply_bias_correction"]


def fit_bias_correction(age: np.ndarray, predicted: np.ndarray, fit_on: str, min_slope: float = 0.05) -> dict:
    """Least-squares line of predicted on chronological age; returns the card entry.

    Raises ValueError for fewer than 3 pairs, no age range, or a slope <= min_slope (dividing by a near-zero slope
    would blow the corrected ages up: the model has not learned age yet).
    """
    age, predicted = np.asarray(age, dtype=float), np.asarray(predicted, dtype=float)
    if age.shape != predicted.shape or age.size < 3:
        raise ValueError(f"bias correction needs >= 3 paired ages and predictions; found {age.size} and "
                         f"{predicted.size}")
    if np.ptp(age) < 1.0:
        raise ValueError(f"bias correction needs an age range; found ages spanning {np.ptp(age):.2f} years")
    slope, intercept = np.polyfit(age, predicted, 1)
    if slope <= min_slope:
        raise ValueError(f"fitted slope {slope:.3f} <= min_slope {min_slope}: too small to invert, the predictions "
                         f"barely follow age")
    return {"method": "de Lange & Cole 2020: pred = slope*age + intercept; corrected = (pred - intercept)/slope",
            "slope": float(slope), "intercept": float(intercept), "fit_on": fit_on, "n": int(age.size),
            "age_min": float(age.min()), "age_max": float(age.max())}


def apply_bias_correction(predicted: np.ndarray | float, correction: dict | None) -> np.ndarray | float:
    """Corrected brain age; returns the input unchanged when the model has no correction."""
    if not correction:
        return predicted
    return (np.asarray(predicted, dtype=float) - correction["intercept"]) / correction["slope"]
