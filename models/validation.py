"""Argument checks shared by the whole library: one place, one wording.

Every check raises :class:`models.errors.ValidationError` (a ``ValueError``) whose
message names the argument, what was expected and what was got, e.g.
``"weights[2]: expected shape (500, 500), got (500, 784); layer 2 has 500 units"``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import ValidationError

__all__ = ["check_array", "check_gamma", "check_positive", "check_count", "check_choice", "layer_scales",
           "DTYPES", "check_dtype", "float_dtype", "float_array"]

#: The floating-point types of the discrete reference: float64 (the default) and float32.
DTYPES = ("float64", "float32")


def check_array(name: str, value, shape: tuple, *, hint: str = "", dtype=np.float64) -> np.ndarray:
    """Return ``value`` as a float64 array (or of type ``dtype``), checking its shape and that it is finite.

    ``shape`` may contain ``None`` for an axis of any length; a batch axis must not be empty.
    An array of the type already is returned as it is (no copy).
    """
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise ValidationError(f"{name}: expected an array of numbers, got {type(value).__name__}") from None
    ok = arr.ndim == len(shape) and all(e is None or e == g for e, g in zip(shape, arr.shape))
    if not ok:
        dims = ["any" if e is None else str(e) for e in shape]
        want = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise ValidationError(f"{name}: expected shape {want}, got {arr.shape}" + (f"; {hint}" if hint else ""))
    if arr.size == 0 and arr.ndim >= 1:
        raise ValidationError(f"{name}: expected at least one sample, got an empty array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValidationError(f"{name}: expected finite values, got {bad} NaN or infinite entries")
    return arr


def check_gamma(gamma, depth: int, *, allow_one: bool = False, name: str = "gamma") -> np.ndarray:
    """gamma_1..gamma_L as a read-only float array from a number or a sequence of ``depth`` values.

    The one range of the project: every gamma_l in (0, 1).  ``allow_one`` admits gamma_l = 1
    for the discrete rules (a full step to the layer above's target, as in TP); a circuit needs
    gamma_l < 1 (a coupling k = 1 would cut the forward drive) and gamma_l > 0 (a layer without
    feedback carries no learning signal, and the local rule divides by gamma).
    """
    try:
        g = np.array(gamma, dtype=float)
    except (TypeError, ValueError):
        raise ValidationError(f"{name}: expected a number or a sequence of {depth} numbers, "
                              f"got {type(gamma).__name__} {gamma!r}") from None
    if g.ndim == 0:
        g = np.full(depth, float(g))
    if g.shape != (depth,):
        raise ValidationError(f"{name}: expected a number or a sequence of {depth} per-layer values "
                              f"(layers 1..{depth}), got shape {g.shape}")
    upper = "1]" if allow_one else "1)"
    ok = np.isfinite(g) & (g > 0) & ((g <= 1) if allow_one else (g < 1))
    if not np.all(ok):
        raise ValidationError(f"{name}: expected values in (0, {upper}, got {g.tolist()}")
    g.setflags(write=False)
    return g


def layer_scales(gamma) -> np.ndarray:
    """``S_l = prod_{j=l..L} 1/gamma_j`` for l = 1..L: the one definition of the deviation scales.

    A layer's deviation from the forward pass shrinks like the product of the couplings on the
    way down from the output; ``S_l`` undoes it.  The circuit's deviation ``r_l - y_l`` is
    O(``1/S_l``); the discrete target deviation ``t_l - y_l`` (Alg. 1, with gamma applied from
    layer l+1 up) is O(``gamma_l / S_l``).
    """
    g = np.asarray(gamma, dtype=float)
    scales = np.empty(g.shape)
    scale = 1.0
    for i in range(g.size - 1, -1, -1):  # S_l = S_{l+1} / gamma_l: the order of the discrete rules' recursion
        scale = scale / g[i]
        scales[i] = scale
    return scales


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False, hint: str = ""):
    """A finite number > 0 (>= 0 with ``allow_zero``); an int if ``integer``."""
    kind = "integer" if integer else "number"
    bound = ">= 0" if allow_zero else "> 0"
    is_number = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValidationError(f"{name}: expected a finite {kind} {bound}, got {value!r}"
                              + (f"; {hint}" if hint else ""))
    return int(value) if integer else float(value)


def check_count(name: str, value, minimum: int = 1, hint: str = "") -> int:
    """An integer >= ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValidationError(f"{name}: expected an integer >= {minimum}, got {value!r}"
                              + (f"; {hint}" if hint else ""))
    return int(value)


def check_choice(name: str, value, choices) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ValidationError(f"{name}: expected one of {tuple(choices)}, got {value!r}")
    return value


def check_dtype(name: str, value) -> np.dtype:
    """One of :data:`DTYPES` (a name, or the numpy type) as a ``numpy.dtype``."""
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in DTYPES:
        raise ValidationError(f"{name}: expected one of {DTYPES}, got {value!r}")
    return dtype


def float_dtype(value) -> np.dtype:
    """float32 for a float32 array, float64 for anything else: the type the library computes ``value`` in."""
    dtype = getattr(value, "dtype", None)
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def float_array(value) -> np.ndarray:
    """``value`` as an array of :func:`float_dtype` (float32 stays float32; no copy when already of the type)."""
    return np.asarray(value, dtype=float_dtype(value))
