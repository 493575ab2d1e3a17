"""What engines return: plain numpy arrays in small dataclasses; times in seconds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.validation import check_choice

from .spec import ConvergenceError

__all__ = ["SteadyState", "Trajectory", "require_convergence"]


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
        True where ``residual`` is at most the settle's tolerance (never above it).
    residual : ndarray of shape (batch,)
        max over layers of |tau dr_l/dt| / |r_l - y_l| (per sample): the relative
        residual of the steady-state equations.
    time : float
        Simulated settle time in seconds (NaN for pure fixed-point solvers).
    target : ndarray or None
        The output target the state was nudged toward (None: free phase).
    precise_deviations : bool
        Whether ``deviations`` were computed without cancellation.
    engine : str
    scaled : list of ndarray or None
        Engine-internal scaled deviations ``S_l (r_l - y_l)`` (fast engine).
    forward : models.ForwardPass or None
        The free phase the state was nudged from, reused by ``plasticity``.
    tau : float
        The circuit's time constant in seconds (for :attr:`time_in_tau`).
    """

    rates: list
    deviations: list
    converged: np.ndarray
    residual: np.ndarray
    time: float = float("nan")
    target: np.ndarray | None = None
    precise_deviations: bool = True
    engine: str = ""
    scaled: list | None = None
    forward: object = None
    tau: float = float("nan")

    @property
    def time_in_tau(self) -> float:
        """The settle time in units of the time constant tau."""
        return self.time / self.tau

    def forward_for(self, x):
        """The stored free phase, after checking that ``x`` is the input the state was settled for."""
        if self.forward is None:
            raise ValueError("state: expected a nudged steady state (settle_nudged, settle_noisy or settle_rounded), "
                             "got a free-phase state")
        if not np.array_equal(self.forward.rates[0], x):
            raise ValueError("x: expected the input batch this state was settled for; settle again for a new batch")
        return self.forward


@dataclass
class Trajectory:
    """Recorded dynamics: time first, then batch.

    Attributes
    ----------
    times : ndarray of shape (T,)
        Seconds since the start of the simulation: ``linspace(0, duration, n_points)``, the
        times of the recorded states (both engines).
    rates, deviations, somatic, basal : list of ndarray, [i] of shape (T, batch, n_{i+1})
        r_l, r_l - y_l, u_l = f^-1(r_l) and h_l = W_l r_{l-1} + b_l at those times.
    engine : str
    tau : float
        The circuit's time constant in seconds.
    forward : models.ForwardPass or None
        The forward pass of the input (lets ``simulate(initial=trajectory)`` continue precisely).
    """

    times: np.ndarray
    rates: list
    deviations: list
    somatic: list
    basal: list
    engine: str = ""
    tau: float = float("nan")
    forward: object = None

    @property
    def times_in_tau(self) -> np.ndarray:
        """``times`` in units of the time constant tau."""
        return self.times / self.tau


def require_convergence(state: SteadyState, on_failure: str, phase: str, rtol: float,
                        advice: str = "") -> SteadyState:
    """Check that every sample of ``state`` converged: return it, or raise ConvergenceError.

    ``on_failure="mask"`` returns the state whatever it holds (``state.converged`` tells which
    samples settled); ``"raise"`` raises :class:`ConvergenceError` naming the unconverged samples,
    their residuals and ``advice``.
    """
    check_choice("on_failure", on_failure, ("raise", "mask"))
    if on_failure == "raise" and not np.all(state.converged):
        bad = np.flatnonzero(~state.converged)
        some = int(np.sum(state.converged))
        raise ConvergenceError(
            f"{phase}: {bad.size} of {state.converged.size} samples did not settle to relative residual "
            f"{rtol:g} (worst {np.max(state.residual):.2e}, samples {bad[:10].tolist()})"
            + (f"; {advice}" if advice else "")
            + (f"; or pass on_failure='mask' to keep the {some} converged samples" if some else ""),
            state.residual)
    return state
