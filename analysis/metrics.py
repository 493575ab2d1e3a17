"""Metrics that compare updates and targets: cosine, angle, relative error, log-log slope.

Functions take arrays and return numbers; they never simulate.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine", "angle_degrees", "relative_error", "loglog_slope"]


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
