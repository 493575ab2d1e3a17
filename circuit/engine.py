"""The engine contract: the verbs every circuit engine offers, and what they share.

:class:`Engine` is the base class of :class:`circuit.FastEngine` and
:class:`circuit.brian.Brian2Engine`.  Its public verbs check their arguments, convert
durations to seconds (:func:`circuit.units.to_seconds`) and hand plain numbers to the
engine's own implementation (the ``_settle_*`` / ``_simulate`` methods)::

    settle_free(x, *, rtol, max_time, on_failure)                      -> SteadyState
    settle_nudged(x, target, *, rtol, max_time, on_failure, forward)   -> SteadyState
    settle_noisy(x, target, noise, *, duration, average_from, dt, rtol, on_failure, seed, forward)
    simulate(x, target=None, *, duration, n_points, start, initial)    -> Trajectory
    plasticity(state, x)                                               -> (dW, db)
    stability(x, state=None)                                           -> largest real eigenvalue per sample

and, where an engine has them, ``drift`` (fast), ``settle_rounded`` (fast) and ``build``
(brian2); the others raise NotImplementedError naming the engine and the feature.

Every duration is in seconds (a float or a Brian2 quantity); defaults are multiples of
``spec.tau``.  Every tolerance is ``rtol``: the relative residual ``|tau dr_l/dt| / |r_l - y_l|``
of each layer (the free phase: relative to ``|r_l|``).  ``on_failure="raise"`` raises
:class:`ConvergenceError` (with advice that fits the cause: an unstable circuit, a slow one,
or rounding) when a sample misses ``rtol``; ``"mask"`` returns the state with its
``converged`` mask.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

import models
from models.errors import DivergenceError, NonFiniteError, ValidationError
from models.validation import check_array, check_choice, check_count, check_positive, layer_scales

from .plasticity import steady_state_updates
from .results import SteadyState, Trajectory, require_convergence
from .spec import CircuitSpec
from .stability import largest_real_eigenvalue
from .units import to_seconds

__all__ = ["Engine", "SettleWatch", "SINGLE_BLAS_THREAD_BELOW", "escape_error", "relative_residual",
           "unstable_advice"]

#: Engines run BLAS on one thread while their widest layer is narrower than this.  Measured on
#: 2 cores with other work on them (OpenBLAS started with 2 threads; ``python -m experiments bench
#: --engine-threads``): an 8-tau simulate of a 4-layer circuit (batch 8) took 22 s / 5.2 s / 200 s
#: at widths 20 / 100 / 400 with BLAS left alone and 0.22 s / 0.39 s / 5.4 s on one thread (a
#: sleeping BLAS thread is woken for every small solve), and a nudged settle at width 400 took
#: 1.3 s against 47 ms; alone in a hot loop, two threads gained at most 1.6x (n = 200-400, batch
#: 100) and lost 3x at n = 784.  Wider layers keep BLAS's own threads.
SINGLE_BLAS_THREAD_BELOW = 1024

#: Blow-up: a settle that follows the dynamics stops once the state grew by this factor.
BLOW_UP = 1e12

_CONTROLLER = []


def relative_residual(diff: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample ``|diff| / |ref|`` over the last axis (0 where both vanish, inf where only ``ref`` does)."""
    num = np.linalg.norm(diff, axis=-1)
    den = np.linalg.norm(ref, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))


def _one_blas_thread():
    """A context limiting BLAS to one thread (one threadpoolctl controller for the process)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


class Engine:
    """Base class of the circuit engines (see the module docstring for the contract).

    Parameters
    ----------
    spec : CircuitSpec
    rtol : float
        Default tolerance of the nudged and noisy settles (relative residual of each layer).
    max_time : float or brian2.Quantity, optional
        Default settle budget, seconds of simulated time (default: ``default_max_time`` tau).
    """

    name = ""
    precise_deviations = False
    #: Default tolerance of ``settle_free`` (relative to |r|: its unknown is the whole rate).
    free_rtol = 1e-12
    #: Default settle budget in units of tau.
    default_max_time = 2000.0
    #: Default tolerance of ``settle_noisy``: the time-averaged state's residual, which the noise left
    #: in the average dominates (about noise / sqrt(averaging time / tau) relative to the deviations).
    noisy_rtol = 1e-2
    #: Widest layer below which BLAS runs on one thread inside the verbs (0: never limit).
    single_blas_thread_below = SINGLE_BLAS_THREAD_BELOW

    def __init__(self, spec: CircuitSpec, rtol: float = 1e-10, max_time=None):
        if not isinstance(spec, CircuitSpec):
            raise TypeError(f"spec: expected a circuit.CircuitSpec (circuit.build_circuit(network, gamma)), "
                            f"got {type(spec).__name__}")
        self.spec = spec
        self.rtol = _check_rtol(rtol)
        self.max_time = self._seconds(max_time, "max_time", self.default_max_time)
        self.scales = layer_scales(spec.gamma)

    # ------------------------------------------------------------------ the verbs
    def settle_free(self, x, *, rtol: float | None = None, max_time=None, on_failure: str = "raise") -> SteadyState:
        """Free phase (input clamped, no nudge) from rest (r = 0); its fixed point is the forward pass.

        With feedback weights ``Q != W^-1`` (``spec.feedback``) the fixed point is off the forward
        pass by ``d^0_l ~ k_l rho_l`` (docs/imperfect_inverses.md, section 3).

        ``rtol``: relative residual of each layer's rates (default ``free_rtol``); ``max_time``:
        budget in seconds (default the engine's).
        """
        x, _ = self.check_batch(x)
        rtol = _check_rtol(self.free_rtol if rtol is None else rtol)
        max_time = self._seconds(max_time, "max_time", self.max_time / self.spec.tau)
        check_choice("on_failure", on_failure, ("raise", "mask"))
        fwd = self.forward(x)
        with self._hot_loop():
            state, advice = self._settle_free(x, fwd, rtol, max_time, on_failure == "raise")
        return self._checked(state, x, on_failure, "free phase", rtol, max_time, advice)

    def settle_nudged(self, x, target, *, rtol: float | None = None, max_time=None, on_failure: str = "raise",
                      forward=None) -> SteadyState:
        """Nudged phase: input clamped, output nudged toward ``target`` (batch, n_L), from the forward pass.

        Parameters
        ----------
        x : ndarray of shape (batch, n_0)
        target : ndarray of shape (batch, n_L)
            The full output target (auxiliary units: their forward values).
        rtol : float, optional
            Relative residual of every layer's deviation (default: the engine's ``rtol``).
        max_time : float or brian2.Quantity, optional
            Settle budget in seconds of simulated time (default: the engine's ``max_time``).
        on_failure : {"raise", "mask"}
        forward : models.ForwardPass, optional
            The network's forward pass of ``x`` if the caller has it (saves recomputing it).
        """
        x, target = self.check_batch(x, target)
        rtol = _check_rtol(self.rtol if rtol is None else rtol)
        max_time = self._seconds(max_time, "max_time", self.max_time / self.spec.tau)
        check_choice("on_failure", on_failure, ("raise", "mask"))
        fwd = self.forward(x, forward)
        with self._hot_loop():
            state, advice = self._settle_nudged(x, target, fwd, rtol, max_time, on_failure == "raise")
        return self._checked(state, x, on_failure, "nudged phase", rtol, max_time, advice)

    def settle_noisy(self, x, target, noise: float, *, duration=None, average_from=None, dt=None,
                     rtol: float | None = None, on_failure: str = "raise", seed=0, forward=None) -> SteadyState:
        """Nudged phase with additive white noise in the rate dynamics; readout = time average.

        ``tau dr = (-r + (1 - k) phi + k psi) dt + noise sqrt(tau) dW`` is integrated by
        Euler-Maruyama (steps of ``dt``) from the free-phase state for ``duration``; the state
        returned is the average of r over [``average_from``, ``duration``].  Durations in
        seconds (defaults 200, 50 and 0.05 tau).  The noise's share of the readout shrinks like
        ``noise / sqrt((duration - average_from) / tau)``.

        ``converged`` marks the samples whose averaged state meets ``rtol`` (default
        ``noisy_rtol`` = 1e-2: the residual of an average is what the noise and the transient
        left in it); ``residual`` is that of the averaged state; ``time`` is ``duration``.
        """
        x, target = self.check_batch(x, target)
        noise = check_positive("noise", noise, allow_zero=True)
        tau = self.spec.tau
        duration = self._seconds(duration, "duration", 200.0)
        given, average_from = average_from, self._seconds(average_from, "average_from", 50.0, allow_zero=True)
        dt = self._seconds(dt, "dt", 0.05)
        if dt >= 2 * tau:  # Euler's factor 1 - dt/tau on the modes near -1/tau: |1 - dt/tau| >= 1
            raise ValidationError(f"dt: expected a step below 2 tau = {2 * tau:g} s (Euler-Maruyama is unstable "
                                  f"beyond; default 0.05 tau = {0.05 * tau:g} s), got {dt:g} s")
        if average_from >= duration:
            raise ValidationError(f"average_from: expected a time in [0, duration = {duration:g} s), got "
                                  f"{average_from:g} s" + (" (its default, 50 tau)" if given is None else ""))
        if duration - average_from < dt:
            raise ValidationError(f"dt: expected at most the averaging window duration - average_from = "
                                  f"{duration - average_from:g} s (one step to average), got {dt:g} s")
        rtol = _check_rtol(self.noisy_rtol if rtol is None else rtol)
        check_choice("on_failure", on_failure, ("raise", "mask"))
        fwd = self.forward(x, forward)
        with self._hot_loop():
            state = self._settle_noisy(x, target, fwd, noise, duration, average_from, dt, rtol, seed)
        if not all(np.all(np.isfinite(r)) for r in state.rates):
            if dt > tau:
                raise DivergenceError(f"noisy settle: the rates became non-finite with Euler-Maruyama steps of dt = "
                                      f"{dt / tau:g} tau, too long for the circuit's modes (stable below ~1 tau); use "
                                      f"a smaller dt (default 0.05 tau = {0.05 * tau:g} s)")
            raise escape_error(self, "noisy settle", x)
        advice = ("lengthen the averaging window (duration - average_from) or weaken the noise; "
                  if noise > 0 else "")
        if dt > tau:
            advice += f"the steps dt = {dt / tau:g} tau are too long for Euler-Maruyama (stable below ~1 tau; " \
                      "default 0.05 tau); "
        return require_convergence(state, on_failure, "noisy settle", rtol,
                                   advice + "or a looser rtol (the time average's residual)")

    def simulate(self, x, target=None, *, duration=None, n_points: int = 201, start: str | None = None,
                 initial=None) -> Trajectory:
        """Integrate the dynamics and record the states at ``times = linspace(0, duration, n_points)``.

        Parameters
        ----------
        x : ndarray of shape (batch, n_0)
        target : ndarray of shape (batch, n_L), optional
            The output's nudge target; None: the free phase (no nudge).
        duration : float or brian2.Quantity, optional
            Seconds (default 30 tau).
        n_points : int
            Recorded states, >= 2, the first at t = 0 and the last at t = ``duration``.
        start : {"free", "rest"}, optional
            Without ``initial``: from the free-phase steady state, the forward pass ("free",
            the default; the nudge switches on at t = 0), or from r = 0 ("rest").  With
            feedback weights ``Q != W^-1`` "free" is still the forward pass, which is then not
            the free phase's steady state: pass ``initial=engine.settle_free(x)`` for that.
        initial : SteadyState, Trajectory or list of ndarray, optional
            Continue from this state: a settled state, a trajectory's last state, or the
            rates of layers 1..L, [i] of shape (batch, n_{i+1}).

        Returns
        -------
        Trajectory
            ``times`` in seconds (``times_in_tau`` in tau).
        """
        x, target = self.check_batch(x, target)
        duration = self._seconds(duration, "duration", 30.0)
        n_points = check_count("n_points", n_points, 2, hint="the first state is at t = 0, the last at duration")
        fwd = self.forward(x)
        if initial is not None and start is not None:
            raise ValidationError(f"start: expected None together with initial= (the trajectory starts from "
                                  f"initial), got {start!r}")
        if initial is None:
            start = check_choice("start", "free" if start is None else start, ("free", "rest"))
            deviations = None
        else:
            start, deviations = "initial", self._initial_deviations(initial, x, fwd)
        times = np.linspace(0.0, duration, n_points)
        with self._hot_loop():
            rates, deviations = self._simulate(x, target, fwd, times, start, deviations)
        finite = np.flatnonzero([all(np.all(np.isfinite(r[j])) for r in rates) for j in range(n_points)])
        if finite.size < n_points:
            last = [r[finite[-1]] for r in rates] if finite.size else None
            raise escape_error(self, "simulate", x, last, at="the last finite state of the trajectory")
        return self._trajectory(times, x, fwd, rates, deviations)

    def plasticity(self, state: SteadyState, x) -> tuple[list, list]:
        """The local rule at a nudged steady state: (dW, db) per unit learning rate, batch means.

        "gait" mode: somatic minus basal potential, ``e_l = u_l - h_l``; "itp" mode:
        ``e_l = f'(h0_l) (r_l - phi_l)``; both scaled by ``S_l = prod_{j=l..L} 1/gamma_j`` and
        times the presynaptic rate (see :mod:`circuit.plasticity`, docs/derivation.md).
        """
        x, _ = self.check_batch(x)
        if not isinstance(state, SteadyState):
            raise TypeError(f"state: expected a circuit.SteadyState, got {type(state).__name__}")
        fwd = state.forward_for(x)
        with self._hot_loop():
            errors = self._scaled_errors(state, x, fwd)
        return steady_state_updates(self.spec, errors, [x] + list(state.rates[:-1]))

    def stability(self, x, state: SteadyState | None = None) -> np.ndarray:
        """Largest real part of the linearised system's eigenvalues per sample (units of 1/tau), shape (batch,).

        At the forward pass, or at ``state``'s rates.
        """
        x, _ = self.check_batch(x)
        return largest_real_eigenvalue(self.spec, x, None if state is None else state.rates)

    # ------------------------------------------------------------------ optional features
    def drift(self, x, rates: list, target=None) -> list:
        """``tau dr_l/dt`` at absolute ``rates`` (fast engine)."""
        raise NotImplementedError(self._missing("drift (the vector field at given rates)", "fast"))

    def settle_rounded(self, x, target, dtype="float32", *, max_time=None, on_failure: str = "raise"):
        """The nudged phase of a circuit that stores its rates in ``dtype`` (fast engine)."""
        raise NotImplementedError(self._missing("settle_rounded (a circuit with rounded rates)", "fast"))

    def build(self, x, target=None, initial=None):
        """The circuit as objects of its simulator (brian2 engine)."""
        raise NotImplementedError(self._missing("build (a brian2.Network of the circuit)", "brian2"))

    def _missing(self, feature: str, engine: str) -> str:
        return (f"{self.name} engine: {feature} is offered by the {engine} engine only; use "
                f"circuit.make_engine(spec, {engine!r})")

    # ------------------------------------------------------------------ engine-specific parts
    def _settle_free(self, x, fwd, rtol, max_time, stop_early):  # pragma: no cover - interface
        """Returns (state, advice for a failure)."""
        raise NotImplementedError

    def _settle_nudged(self, x, target, fwd, rtol, max_time, stop_early):  # pragma: no cover - interface
        """Returns (state, advice for a failure)."""
        raise NotImplementedError

    def _settle_noisy(self, x, target, fwd, noise, duration, average_from, dt, rtol, seed):  # pragma: no cover
        raise NotImplementedError

    def _simulate(self, x, target, fwd, times, start, deviations):  # pragma: no cover - interface
        """Rates and deviations, [i] of shape (T, batch, n_{i+1}), at ``times`` (seconds)."""
        raise NotImplementedError

    def _scaled_errors(self, state, x, fwd):  # pragma: no cover - interface
        """Per-layer errors scaled by S_l, [i] of shape (batch, n_{i+1})."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared parts
    def check_batch(self, x, target=None):
        """Validate an input batch (batch, n_0) and, optionally, a full output target (batch, n_L)."""
        x = self.spec.network.check_input(x)
        if target is not None:
            n = self.spec.widths[-1]
            target = check_array("target", target, (x.shape[0], n),
                                 hint=f"pass the full output target of all {n} output units")
        return x, target

    def forward(self, x, forward=None) -> models.ForwardPass:
        """The network's forward pass of a checked batch ``x``; raises NonFiniteError if it overflowed.

        ``forward``: the caller's forward pass of ``x``, checked to belong to it.  The overflow
        check is :meth:`models.Network.forward`'s (it names the layer and the input's size).
        """
        if forward is None:
            return self.spec.network.forward(x)
        if not isinstance(forward, models.ForwardPass) or not np.array_equal(forward.rates[0], x):
            raise ValueError("forward: expected the forward pass of this input batch (network.forward(x))")
        return forward

    def couplings(self, fwd, nudged: bool = True) -> list:
        """Per-unit couplings ``k_l = gamma_l kappa_l`` of a batch, [i] of shape (batch, n_{i+1}).

        ``nudged=False`` (the free phase): the output has no nudge, k_L = 0.
        """
        return self.spec.couplings(fwd.derivatives, nudged)

    def _seconds(self, value, name: str, default_tau: float, allow_zero: bool = False) -> float:
        """A duration argument in seconds; None: ``default_tau`` times tau."""
        if value is None:
            return float(default_tau) * self.spec.tau
        return to_seconds(value, name, allow_zero=allow_zero)

    @contextlib.contextmanager
    def _hot_loop(self):
        """Around the numerical work: one BLAS thread while the widest layer is narrower than
        ``single_blas_thread_below``, and overflow left to the engine's own checks (which name its cause)."""
        with contextlib.ExitStack() as stack:
            if max(self.spec.widths[1:]) < self.single_blas_thread_below:
                stack.enter_context(_one_blas_thread())
            stack.enter_context(np.errstate(over="ignore", invalid="ignore"))
            yield

    def _initial_deviations(self, initial, x, fwd) -> list:
        """``r_l - y_l`` of a starting state: exact where ``initial`` carries the same batch's deviations."""
        if isinstance(initial, (SteadyState, Trajectory)):
            last = (lambda a: a) if isinstance(initial, SteadyState) else (lambda a: a[-1])
            same = initial.forward is not None and np.array_equal(initial.forward.rates[0], x)
            arrays = [last(a) for a in (initial.deviations if same else initial.rates)]
        elif isinstance(initial, (list, tuple)):
            same, arrays = False, initial
        else:
            raise ValidationError(f"initial: expected a SteadyState, a Trajectory or a list of {self.spec.depth} "
                                  f"per-layer rate arrays, got {type(initial).__name__}")
        arrays = self.layer_arrays("initial", arrays, x.shape[0])
        return arrays if same else [a - y for a, y in zip(arrays, fwd.rates[1:])]

    def layer_arrays(self, name: str, arrays, batch: int) -> list:
        """Check per-layer arrays of a batch (rates of layers 1..L): [i] of shape (batch, n_{i+1})."""
        if not isinstance(arrays, (list, tuple)) or len(arrays) != self.spec.depth:
            raise ValidationError(f"{name}: expected a list of {self.spec.depth} per-layer arrays (layers 1.."
                                  f"{self.spec.depth}), got {type(arrays).__name__}")
        return [check_array(f"{name}[{i}]", a, (batch, n), hint=f"the rates of layer {i + 1} for this batch")
                for i, (a, n) in enumerate(zip(arrays, self.spec.widths[1:]))]

    def _trajectory(self, times, x, fwd, rates, deviations) -> Trajectory:
        """A Trajectory from rates and deviations at ``times``: adds u_l = f^-1(r_l) and h_l = W_l r_{l-1} + b_l."""
        net = self.spec.network
        somatic = [net.activation.inverse(r) for r in rates]
        inputs = [np.broadcast_to(x, (len(times),) + x.shape)] + rates[:-1]
        basal = [pre[..., : w.shape[0]] @ w.T + b for pre, w, b in zip(inputs, net.weights, net.biases)]
        return Trajectory(times, rates, deviations, somatic, basal, engine=self.name, tau=self.spec.tau, forward=fwd)

    def _checked(self, state, x, on_failure, phase, rtol, max_time, advice) -> SteadyState:
        """``state`` if every sample converged or ``on_failure="mask"``; else the error that names the cause."""
        if on_failure == "mask" or np.all(state.converged):
            return state
        cause, unstable = self._failure_cause(x, state, rtol, max_time)
        if unstable:
            raise DivergenceError(f"{phase}: {np.sum(~state.converged)} of {state.converged.size} samples did "
                                  f"not settle; {cause}")
        return require_convergence(state, on_failure, phase, rtol, "; ".join(a for a in (cause, advice) if a))

    def _failure_cause(self, x, state, rtol, max_time) -> tuple[str, bool]:
        """Why a settle missed ``rtol``: (advice, whether the circuit is unstable at the final state)."""
        bad = ~state.converged
        if not np.all(np.isfinite(state.residual[bad])) or not all(np.all(np.isfinite(r)) for r in state.rates):
            return "the state is not finite", True
        lam = float(np.max(largest_real_eigenvalue(self.spec, x, state.rates)[bad]))
        if lam >= 0:
            return unstable_advice(self.spec, lam), True
        worst = float(np.max(state.residual[bad]))
        needed = math.log(max(worst, rtol) / rtol) / -lam  # tau, at the slowest rate
        elapsed = state.time_in_tau if np.isfinite(state.time) else 0.0
        budget = max_time / self.spec.tau
        floor = self._rounding_floor(state, bad)
        if worst <= 100 * floor:
            return (f"the residual {worst:.1e} is at the rounding floor of the rates (~{floor:.0e} relative to the "
                    f"deviations): loosen rtol" + self._rounding_advice()), False
        if elapsed + needed > budget:
            return (f"the slowest mode relaxes with a time constant of {-1 / lam:.3g} tau (largest real eigenvalue "
                    f"{lam:+.3g}/tau at the final state): reaching rtol needs ~{needed:.3g} tau more, beyond "
                    f"max_time = {budget:g} tau; raise max_time (seconds), or use a smaller coupling gamma or 'gait' "
                    "mode (both relax faster)"), False
        return "", False

    def _rounding_floor(self, state, bad) -> float:
        """The smallest residual rounding allows: eps relative to the deviations (x |r|/|r - y| in absolute rates)."""
        eps = np.finfo(float).eps
        if state.precise_deviations or state.target is None:  # the free phase's residual is relative to |r|
            return eps
        ratios = [np.linalg.norm(r[bad], axis=1) / np.maximum(np.linalg.norm(d[bad], axis=1), 1e-300)
                  for r, d in zip(state.rates, state.deviations)]
        return float(eps * np.max(ratios))

    def _rounding_advice(self) -> str:
        return ""


def unstable_advice(spec, lam: float) -> str:
    """Advice for an unstable circuit: its largest eigenvalue and what makes it stable."""
    return (f"the linearised circuit is unstable at the final state: largest real eigenvalue {lam:+.3g}/tau "
            f"(needs < 0) with gamma = {spec.gamma.tolist()} in {spec.mode!r} mode; use a smaller coupling gamma"
            + (", or 'gait' mode (k = gamma f'^2 tames the 1/f' gain of the inverse)" if spec.mode == "itp" else ""))


def escape_error(engine, phase: str, x, rates=None, *, time_tau: float | None = None, dtype=np.float64,
                 at: str = "the escaping state"):
    """The error for a run whose rates became non-finite or grew without bound, naming the real cause.

    ``rates``: the escaping state's rates (None, or not finite: the forward pass is examined);
    ``time_tau``: the rates grew by ``BLOW_UP`` within this time (None: they became non-finite).
    The largest real eigenvalue there decides: >= 0, a DivergenceError with the advice to weaken
    the coupling; < 0 after a blow-up, a DivergenceError naming the nonlinear dynamics; < 0 with
    non-finite rates, the numbers overflowed ``dtype``: a NonFiniteError naming their size.
    """
    x = np.asarray(x)
    if rates is None or not all(np.all(np.isfinite(r)) for r in rates):
        rates, time_tau, at = None, None, "the forward pass"
    with np.errstate(all="ignore"):
        try:
            lam = float(np.max(largest_real_eigenvalue(engine.spec, x, rates)))
        except (ValueError, np.linalg.LinAlgError):  # the Jacobian of an overflowing state
            lam = float("nan")
    what = (f"the rates grew by more than {BLOW_UP:.0e} within {time_tau:g} tau" if time_tau is not None
            else "the rates became non-finite")
    if lam >= 0:
        return DivergenceError(f"{phase}: {what}; " + unstable_advice(engine.spec, lam).replace("the final state", at))
    if time_tau is not None:
        return DivergenceError(f"{phase}: {what}; the linearised circuit is stable at {at} (largest real eigenvalue "
                               f"{lam:+.3g}/tau), so the growth comes from the nonlinear dynamics far from it; use a "
                               "smaller coupling gamma")
    name = np.dtype(dtype).name
    return NonFiniteError(
        f"{phase}: {what}: they overflowed although the linearised circuit is stable at {at} (largest real "
        f"eigenvalue {lam:+.3g}/tau): the numbers are too large for {name} (largest |x| = {np.max(np.abs(x)):.3g}); "
        "scale the input or the weights down")


def _check_rtol(rtol) -> float:
    return check_positive("rtol", rtol, hint="the relative residual at which a settle stops")


class SettleWatch:
    """Tells, from the worst residual over simulated time, when a settle cannot reach ``rtol`` within its budget.

    Used only when a failure would raise anyway (``on_failure="raise"``): after a tenth of the
    budget, a residual that did not shrink over the last half of the elapsed time, or whose
    decay rate over that half projects past three times the budget, ends the settle early.
    """

    def __init__(self, rtol: float, budget: float):
        self.rtol, self.budget = rtol, budget
        self.history = []

    def hopeless(self, t: float, worst: float) -> bool:
        self.history.append((t, worst))
        if t < 0.1 * self.budget or worst <= self.rtol:
            return False
        t0, w0 = next((a, b) for a, b in self.history if a >= t / 2)
        if t - t0 <= 0:
            return False
        if worst >= w0:
            return True
        rate = math.log(w0 / worst) / (t - t0)
        return t + math.log(worst / self.rtol) / rate > 3 * self.budget
