"""Durations of the circuit API: seconds, as a float or a Brian2 quantity.

Every duration the circuit takes (``tau``, ``duration``, ``dt``, ``max_time``, ...) is in
seconds: a plain number (``0.01``) or a Brian2 quantity of time (``10*ms``).  It is
converted once, at the boundary, by :func:`to_seconds`; inside, every duration is a float
in seconds.  brian2 is imported only to read a quantity, i.e. only if the caller already
imported it.
"""

from __future__ import annotations

import math
import numbers
import sys

from models.errors import ValidationError

__all__ = ["to_seconds"]

_EXPECTED = "a duration {bound} (seconds, or a Brian2 quantity such as 0.1*ms)"


def to_seconds(value, name: str, *, allow_zero: bool = False) -> float:
    """``value`` (seconds, or a Brian2 quantity of time) as a float in seconds.

    Parameters
    ----------
    value : float or brian2.Quantity
        A finite duration > 0 (>= 0 with ``allow_zero``).
    name : str
        The argument's name, for the error message.
    allow_zero : bool
        Admit 0.

    Raises
    ------
    models.errors.ValidationError
        Naming ``name``, the range and the value got, e.g. "dt: expected a duration > 0
        (seconds, or a Brian2 quantity such as 0.1*ms), got -0.001".
    """
    expected = _EXPECTED.format(bound=">= 0" if allow_zero else "> 0")
    seconds = _quantity_in_seconds(value, name, expected)
    if seconds is None:
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise ValidationError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValidationError(f"{name}: expected {expected}, got {value!r}")
    return seconds


def _quantity_in_seconds(value, name: str, expected: str) -> float | None:
    """A Brian2 quantity in seconds; None if ``value`` is not a Brian2 quantity (brian2 not imported: it can't be)."""
    if "brian2" not in sys.modules or not type(value).__module__.startswith("brian2"):
        return None
    import brian2

    if not isinstance(value, brian2.Quantity):
        return None
    if brian2.get_dimensions(value) != brian2.second.dim:
        raise ValidationError(f"{name}: expected {expected}, got {value!r}, which is not a time")
    if value.size != 1:
        raise ValidationError(f"{name}: expected {expected}, got an array of {value.size} durations")
    return float(value / brian2.second)
