"""Invertible activation functions: f, its inverse, its derivative, and exact increments.

Every part of the project (the discrete reference in models/ and every circuit
engine) takes f, f^-1 and f' from here; nothing else defines them.

The increment functions evaluate ``f^-1(y + d) - f^-1(y)`` and ``f(h + d) - f(h)``
piecewise, without cancellation.  The GAIT-prop targets and the circuit's
steady-state deviations shrink like gamma^(L-l); evaluating the difference of two
nearly equal numbers would lose them to float64 rounding.  Both functions take an
optional ``scale`` so that callers can carry *scaled* deviations (O(1) numbers)
and still cross a kink of the leaky ReLU exactly::

    inverse_increment(y, d, scale) = scale * (f^-1(y + d / scale) - f^-1(y))
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .errors import ValidationError
from .validation import float_array, float_dtype

__all__ = ["Activation", "Identity", "LeakyReLU", "get_activation", "check_negative_slope", "ACTIVATIONS"]

#: Activation names :func:`get_activation` accepts, with their aliases.
ACTIVATIONS = {"leaky_relu": ("leaky_relu", "leakyrelu", "lrelu"), "identity": ("identity", "linear")}


class Activation:
    """Interface of an invertible, piecewise-linear activation function with f(0) = 0.

    Such an f satisfies f(h) = f'(h) h exactly, which the forward pass uses.
    """

    name: str

    def f(self, h: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse(self, y: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def derivative(self, h: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def inverse_increment(self, y, d, scale=1.0):  # pragma: no cover - interface
        raise NotImplementedError

    def forward_increment(self, h, d, scale=1.0):  # pragma: no cover - interface
        raise NotImplementedError

    def settings(self) -> dict:
        """The arguments of :func:`get_activation` that rebuild this activation (JSON-ready)."""
        raise NotImplementedError(f"activation: {type(self).__name__} cannot be saved; "
                                  f"only {tuple(ACTIVATIONS)} can")

    def label(self) -> str:
        """A short human-readable name, e.g. "leaky ReLU (negative slope 0.1)"."""
        return type(self).__name__


@dataclass(frozen=True)
class Identity(Activation):
    """f(h) = h.  Increments are exact: the difference of the identity is the increment."""

    name: str = "identity"

    def f(self, h):
        return np.asarray(h, dtype=float)

    def inverse(self, y):
        return np.asarray(y, dtype=float)

    def derivative(self, h):
        return np.ones_like(h, dtype=float_dtype(h))

    def inverse_increment(self, y, d, scale=1.0):
        return float_array(d)

    def forward_increment(self, h, d, scale=1.0):
        return float_array(d)

    def settings(self) -> dict:
        return {"name": "identity"}

    def label(self) -> str:
        return "identity (linear network)"


@dataclass(frozen=True)
class LeakyReLU(Activation):
    """f(h) = h for h > 0, negative_slope * h otherwise (0 < negative_slope <= 1).

    The derivative at the kink (h = 0) is taken from the negative side, consistent
    with ``f'(h) = 1 if h > 0 else negative_slope`` used everywhere in the project.
    """

    negative_slope: float = 0.1
    name: str = "leaky_relu"

    def __post_init__(self):
        object.__setattr__(self, "negative_slope", check_negative_slope(self.negative_slope))

    def settings(self) -> dict:
        return {"name": "leaky_relu", "negative_slope": self.negative_slope}

    def label(self) -> str:
        return f"leaky ReLU (negative slope {self.negative_slope:g})"

    def f(self, h):
        h = np.asarray(h, dtype=float)
        return np.where(h > 0, h, self.negative_slope * h)

    def inverse(self, y):
        y = np.asarray(y, dtype=float)
        return np.where(y > 0, y, y / self.negative_slope)

    def derivative(self, h):
        """``f'(h)``: 1 where h > 0, else the negative slope (float32 for float32 h, else float64)."""
        return _slopes(np.asarray(h) > 0, 1.0, self.negative_slope, float_dtype(h))

    def inverse_increment(self, y, d, scale=1.0):
        """``scale * (f^-1(y + d/scale) - f^-1(y))`` without cancellation.

        Parameters
        ----------
        y : ndarray
            Points on the output side of f (rates).
        d : ndarray, same shape as y
            Scaled increment; the actual increment is ``d / scale``.
        scale : float
            Positive scale carried by the caller (e.g. gamma^-(L-l)).
        """
        y, d, scale = _operands(y, d, scale)
        on_positive = y > 0
        out = d / _slopes(on_positive, 1.0, self.negative_slope, y.dtype)
        end = y + d / scale
        crossed = (end > 0) != on_positive
        if np.any(crossed):
            # Both terms are at most |d / scale| in size: no cancellation.
            yc, ec = y[crossed], end[crossed]
            out[crossed] = scale * (self.inverse(ec) - self.inverse(yc))
        return out

    def forward_increment(self, h, d, scale=1.0):
        """``scale * (f(h + d/scale) - f(h))`` without cancellation."""
        h, d, scale = _operands(h, d, scale)
        on_positive = h > 0
        out = d * _slopes(on_positive, 1.0, self.negative_slope, h.dtype)
        end = h + d / scale
        crossed = (end > 0) != on_positive
        if np.any(crossed):
            hc, ec = h[crossed], end[crossed]
            out[crossed] = scale * (self.f(ec) - self.f(hc))
        return out


def _slopes(condition, where_true: float, where_false: float, dtype: np.dtype) -> np.ndarray:
    """``np.where(condition, where_true, where_false)`` as an array of ``dtype`` (the same values in float64)."""
    return np.where(condition, dtype.type(where_true), dtype.type(where_false))


def _operands(x, d, scale):
    """The increment functions' operands: float32 if both arrays are float32 (the scale then too), else float64."""
    x, d = np.asarray(x), np.asarray(d)
    if x.dtype == np.float32 and d.dtype == np.float32:
        return x, d, np.float32(scale)
    return x.astype(np.float64, copy=False), d.astype(np.float64, copy=False), scale


def check_negative_slope(value) -> float:
    """The leaky ReLU's negative slope as a float, refusing anything outside (0, 1].

    > 0: f must be invertible (a slope of 0 sends every negative h to 0, and a negative
    slope folds negative h onto positive rates), since the target rules and the circuit's
    somatic potential apply f^-1.  <= 1: f' <= 1, so that GAIT's couplings gamma f'(h)^2
    never exceed gamma, whose range (0, 1) keeps the circuit's forward drive.
    """
    why = ("> 0 keeps the leaky ReLU invertible (the target rules and the circuit apply f^-1), "
           "<= 1 keeps f' <= 1 so that GAIT's couplings gamma*f'(h)^2 stay below gamma")
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValidationError(f"negative_slope: expected a real number in (0, 1], "
                              f"got {type(value).__name__} {value!r}; {why}")
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValidationError(f"negative_slope: expected a real number in (0, 1], got {value!r}; {why}")
    return float(value)


def get_activation(activation: str | Activation = "leaky_relu", negative_slope: float = 0.1) -> Activation:
    """Return an :class:`Activation` from its name ("leaky_relu" or "identity"/"linear").

    An :class:`Activation` is returned as it is (``negative_slope`` is then not used).
    """
    if isinstance(activation, Activation):
        return activation
    names = " or ".join(f"{name!r}" for name in ACTIVATIONS) + " (alias 'linear'), or an Activation"
    if not isinstance(activation, str):
        raise ValidationError(f"activation: expected {names}, got {type(activation).__name__} {activation!r}")
    name = activation.lower()
    if name in ACTIVATIONS["leaky_relu"]:
        return LeakyReLU(negative_slope)
    check_negative_slope(negative_slope)  # a bad value is refused whichever activation it comes with
    if name in ACTIVATIONS["identity"]:
        return Identity()
    raise ValidationError(f"activation: expected {names}, got {activation!r}")
