"""What engines return: plain numpy arrays in small dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SteadyState", "Trajectory"]


@dataclass
class SteadyState:
    """A settled circuit state for a batch.

    Attributes
    ----------
    rates : list of ndarray, [i] of shape (batch, n_{i+1})
        r_l at steady state (absolute; rounding hides deviations below ~1e-16 |r|).
    deviations : list of ndarray, [i] of shape (batch, n_{i+1})
        r_l - y_l, the deviation from the forward pass.  Exact to relative float64
        precision for engines that work in deviation coordinates ("fast"); formed as
        a difference of absolute rates otherwise ("brian2").
    converged : ndarray of bool, shape (batch,)
    residual : ndarray of shape (batch,)
        max over layers of |tau dr_l/dt| / |r_l - y_l| (per sample): the relative
        residual of the steady-state equations.
    time : float
        Simulated settle time in units of tau (NaN for pure fixed-point solvers).
    target : ndarray or None
        The output target the state was nudged toward (None: free phase).
    precise_deviations : bool
        Whether ``deviations`` were computed without cancellation.
    """

    rates: list
    deviations: list
    converged: np.ndarray
    residual: np.ndarray
    time: float = float("nan")
    target: np.ndarray | None = None
    precise_deviations: bool = True
    engine: str = ""
    scaled: list | None = None  # engine-internal scaled deviations (fast engine)


@dataclass
class Trajectory:
    """Recorded dynamics: time first, then batch.

    ``times`` has shape (T,) in seconds; ``rates``, ``deviations``, ``somatic`` (u_l)
    and ``basal`` (h_l) are lists over layers 1..L of arrays of shape (T, batch, n_l).
    """

    times: np.ndarray
    rates: list
    deviations: list
    somatic: list
    basal: list
    engine: str = ""
