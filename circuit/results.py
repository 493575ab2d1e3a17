"""What engines return: plain numpy arrays in small dataclasses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import ConvergenceError

__all__ = ["SteadyState", "Trajectory", "divergence_message", "finish"]


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
    forward: object = None      # the free phase it was nudged from (models.ForwardPass), reused by plasticity

    def forward_for(self, x):
        """The stored free phase, after checking that ``x`` is the input the state was settled for."""
        if self.forward is None:
            raise ValueError("state: expected a nudged steady state (settle_nudged or settle_noisy)")
        if not np.array_equal(self.forward.rates[0], x):
            raise ValueError("x: expected the input batch this state was settled for; settle again for a new batch")
        return self.forward


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


def divergence_message(spec, lam) -> str:
    """The advice attached to a DivergenceError: the eigenvalue and a smaller coupling."""
    return (f"the linearised circuit is unstable: largest real eigenvalue {np.max(lam):+.3g}/tau "
            f"(needs < 0) with gamma = {spec.gamma.tolist()} in {spec.mode!r} mode; use a smaller coupling "
            "gamma, or 'gait' mode (k = gamma f'^2 tames the 1/f' gain of the inverse)")


def finish(state: SteadyState, on_failure: str, phase: str, tol: float,
           hint: str = "raise max_sweeps, loosen the tolerance") -> SteadyState:
    """Return ``state``, or raise ConvergenceError naming the unconverged samples (on_failure="raise")."""
    if on_failure not in ("raise", "mask"):
        raise ValueError(f"on_failure: expected 'raise' or 'mask', got {on_failure!r}")
    if on_failure == "raise" and not np.all(state.converged):
        bad = np.flatnonzero(~state.converged)
        raise ConvergenceError(
            f"{phase}: {bad.size} of {state.converged.size} samples did not converge to relative residual "
            f"{tol:g} (worst {np.max(state.residual):.2e}, samples {bad[:10].tolist()}); {hint}, "
            "or pass on_failure='mask' to get the converged mask", state.residual)
    return state
