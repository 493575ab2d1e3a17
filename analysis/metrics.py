"""Metrics that compare updates and targets (cosine, angle, relative error, log-log slope) and
training curves (shared evaluations, trailing means).

Functions take arrays and return numbers; they never simulate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine", "angle_degrees", "relative_error", "loglog_slope", "shared_evaluations", "trailing_mean"]

#: Epochs closer than this are the same evaluation (epochs are steps / steps per epoch).
EPOCH_TOLERANCE = 1e-6


def cosine(a, b) -> float:
    """Cosine similarity of two arrays, flattened.  NaN if either is zero."""
    a = np.ravel(np.asarray(a, dtype=float))
    b = np.ravel(np.asarray(b, dtype=float))
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def angle_degrees(a, b) -> float:
    """Angle between two arrays, in degrees."""
    return float(np.degrees(np.arccos(np.clip(cosine(a, b), -1.0, 1.0))))


def relative_error(estimate, reference) -> float:
    """``|estimate - reference| / |reference|`` (Frobenius norms)."""
    estimate = np.asarray(estimate, dtype=float)
    reference = np.asarray(reference, dtype=float)
    denom = np.linalg.norm(reference)
    return float(np.linalg.norm(estimate - reference) / denom) if denom > 0 else float(np.linalg.norm(estimate))


def loglog_slope(x, y) -> float:
    """Least-squares slope of log(y) against log(x)."""
    lx, ly = np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float))
    return float(np.polyfit(lx, ly, 1)[0])


def shared_evaluations(epochs, reference_epochs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The epochs at which two runs both evaluated, and their indices into each: ``(shared, mine, theirs)``."""
    rounded = np.round(np.asarray(epochs, dtype=float) / EPOCH_TOLERANCE) * EPOCH_TOLERANCE
    reference = np.round(np.asarray(reference_epochs, dtype=float) / EPOCH_TOLERANCE) * EPOCH_TOLERANCE
    return np.intersect1d(rounded, reference, return_indices=True)


def trailing_mean(epochs, values, window: float) -> np.ndarray:
    """At each of ``epochs`` (ascending), the mean of ``values`` at the epochs after ``epoch - window`` up to it.

    A curve shorter than ``window`` is averaged from its start.  Linear time (cumulative sums).
    """
    epochs, values = np.asarray(epochs, dtype=float), np.asarray(values, dtype=float)
    sums = np.concatenate(([0.0], np.cumsum(values)))
    first = np.searchsorted(epochs, epochs - window + EPOCH_TOLERANCE, side="left")
    last = np.arange(1, epochs.size + 1)
    return (sums[last] - sums[first]) / (last - first)
