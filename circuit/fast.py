"""The fast engine: numpy/scipy, batched over samples, in scaled deviation coordinates.

The nudged phase is solved for the scaled deviations from the forward pass ::

    z_l = S_l (r_l - y_l),      S_l = prod_{j=l..L} 1/gamma_j

which are O(1) although r_l - y_l ~ gamma^(L-l+1) (below float64 rounding of the
rates for deep layers at small gamma).  With the exact increments of
:mod:`models.activations` the steady-state equations become, without approximation::

    z_l = (1 - k_l) S_l [f(h0_l + W_l d_{l-1}) - f(h0_l)] + kappa_l S_{l+1} [psi_l - y_l]
    z_L = (1 - k_L) S_L [f(h0_L + W_L d_{L-1}) - f(h0_L)] + kappa_L (t_L - y_L)

(k = gamma kappa, S_{L+1} = 1).

With feedback weights ``Q_{l+1}`` in place of ``W_{l+1}^-1`` (``spec.feedback``) the
coordinates stay relative to the forward pass ``y`` (the network's rates, on which the
discrete rules, the held GAIT couplings ``f'(h0)^2`` and the plasticity's presynaptic rates
are defined).  The feedback drive splits exactly into an increment and a constant::

    S_{l+1} (psi_l - y_l) = Q_{l+1} S_{l+1} [f^-1(y_{l+1} + d_{l+1}) - f^-1(y_{l+1})] + S_{l+1} rho_l,
    rho_l = Q_{l+1} W_{l+1} y_l - y_l        (the feedback's reconstruction error of the forward pass),

so the map gains the source term ``kappa_l S_{l+1} rho_l``, computed once per batch: the
free phase's steady state is off the forward pass by ``d^0_l ~ k_l rho_l`` and the local
rule reads the absolute form of the targets (docs/imperfect_inverses.md, section 3).  The
scaled deviations then carry ``S_{l+1} rho_l``, which grows like ``eps / gamma^(L-l)``; float64
resolves the output error's share of them while that share exceeds ~1e-16 of the
reconstruction error's, which is where the absolute form's update is the reconstruction
error anyway.  Layers whose feedback is the exact inverse keep their LU solves and no source
term: ``spec.feedback`` None is the exact engine, bit for bit.

Steady states come from sweeps of this map (the
forward coupling is O(gamma), so each top-down Gauss-Seidel sweep gains a factor
~gamma); if the sweeps stall (strong coupling), the engine follows the dynamics
(Euler steps of tau/2) to the steady state: one loop, :meth:`FastEngine._sweep_or_relax`,
serves the free, nudged and rounded settles.  It raises :class:`DivergenceError` if
the rates blow up and, with ``on_failure="raise"``, stops as soon as the residual's
decay shows that the budget cannot suffice.  Trajectories integrate the ODE with
scipy's ``solve_ivp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.integrate import solve_ivp

import models
from models.network import DirectInverse
from models.validation import check_choice, check_count

from .engine import BLOW_UP, Engine, SettleWatch, escape_error, relative_residual
from .results import SteadyState
from .spec import CircuitError, CircuitSpec

__all__ = ["FastEngine"]

#: Euler step (in tau) of the fallback that follows the dynamics; stable for eigenvalues in (-4, 0)/tau.
EULER_STEP = 0.5
#: The fallback checks for blow-up, convergence and progress every this many steps.
CHECK_STEPS = 20
#: Gauss-Seidel sweeps that do not halve the worst residual before the fallback starts.
STALL_SWEEPS = 5
#: ``settle_rounded`` stops once no rate moves by more than this many units of its rounding.
ROUNDED_ULPS = 4.0


@dataclass
class _Prepared:
    """Per-batch quantities of the free phase: forward pass and held couplings."""

    x: np.ndarray
    y: list        # rates y_0..y_L
    h0: list       # pre-activations, [i] for layer i+1
    a: list        # f'(h0), [i] for layer i+1
    kappa: list    # relative couplings, [i] for layer i+1
    k: list        # couplings gamma * kappa
    rho: list      # S_{l+1} rho_l for layer l = i+1 with feedback weights Q_{l+1}, else None


@dataclass
class _Settled:
    """What :meth:`FastEngine._sweep_or_relax` reached."""

    state: list
    residual: np.ndarray
    sweeps: int
    time: float   # tau of dynamics followed (NaN: the sweeps converged or ran out)
    stop: str     # "converged", "sweeps" (ran out), "relaxed" (followed the dynamics), "overflow", "blew up"

    def escaped(self) -> bool:
        return self.stop in ("overflow", "blew up")


class FastEngine(Engine):
    """Batched numpy/scipy engine for a :class:`CircuitSpec` (see the module docstring).

    Parameters
    ----------
    spec : CircuitSpec
    rtol : float
        Default tolerance of the nudged settle: relative residual of each layer's deviation.
    max_sweeps : int
        Gauss-Seidel sweeps (>= 1) before a settle gives up, if they neither converge nor stall.
    inverse : models.DirectInverse, optional
        Factorises the weights of the layers whose feedback is the exact inverse;
        ``DirectInverse(threads=2)`` does it side by side on two threads (bit-identical;
        default: one thread).  Layers with feedback weights ``Q`` (``spec.feedback``) apply
        ``Q`` instead and are not factorised.
    max_time : float or brian2.Quantity, optional
        Default settle budget in seconds of simulated time (default 2000 tau).
    """

    name = "fast"
    precise_deviations = True
    free_rtol = 1e-13
    default_max_time = 2000.0
    #: Default budget of ``settle_rounded``, in tau (a rounded circuit settles to a few ulps: slower).
    rounded_max_time = 5000.0

    def __init__(self, spec: CircuitSpec, rtol: float = 1e-10, max_sweeps: int = 200,
                 inverse: DirectInverse | None = None, *, max_time=None):
        super().__init__(spec, rtol, max_time)
        self.max_sweeps = check_count("max_sweeps", max_sweeps, 1)
        net = spec.network
        self._q = [spec.feedback_matrix(i) for i in range(net.depth)]
        # Factorise every W_l with l >= 2 once (they feed back into layer l-1) unless its feedback is a given Q;
        # refuses singular weights.  ``inverse``: a DirectInverse whose thread pool factorises the layers side by
        # side (same bits).
        exact = [i for i in range(1, net.depth) if self._q[i] is None]
        with self._hot_loop():
            self._lu = (inverse or DirectInverse()).factorise(net.weights, exact)

    # ------------------------------------------------------------------ the circuit in scaled coordinates
    def _solve(self, i: int, u: np.ndarray) -> np.ndarray:
        """Rows of ``W_i^-1 u`` (weights index i, i >= 1), or of ``Q u`` where the spec gives feedback weights."""
        q = self._q[i]
        if q is not None:
            return u @ q.T
        lu, piv = self._lu[i]
        x, _ = scipy.linalg.lapack.dgetrs(lu, piv, u.T, trans=1)
        return x.T

    def _prepare(self, fwd, nudged: bool = True) -> _Prepared:
        """Free phase and couplings of a batch; ``nudged=False``: no nudge at the output (kappa_L = k_L = 0)."""
        kappa = self.spec.relative_couplings(fwd.derivatives, nudged)
        k = self.couplings(fwd, nudged)
        return _Prepared(fwd.rates[0], fwd.rates, fwd.preactivations, fwd.derivatives, kappa, k,
                         self._reconstruction_errors(fwd))

    def _reconstruction_errors(self, fwd) -> list:
        """``S_{l+1} rho_l = S_{l+1} (Q_{l+1} W_{l+1} y_l - y_l)`` on the fed-back units, [i] for layer l = i+1.

        None for the output and for layers whose feedback is the exact inverse (rho = 0 there).
        """
        net = self.spec.network
        out = [None] * net.depth
        for i in range(net.depth - 1):
            q, w = self._q[i + 1], net.weights[i + 1]
            if q is not None:
                y = fwd.rates[i + 1][:, : w.shape[0]]
                out[i] = self.scales[i + 1] * ((y @ w.T) @ q.T - y)
        return out

    def _feedback(self, p: _Prepared, i: int, z_above: np.ndarray) -> np.ndarray:
        """``S_{l+1} (psi_l - y_l)`` for layer l = i+1 from the scaled deviation of layer l+1."""
        net, act = self.spec.network, self.spec.network.activation
        n = net.weights[i + 1].shape[0]
        v = act.inverse_increment(p.y[i + 2], z_above, self.scales[i + 1])
        out = np.zeros_like(p.y[i + 1])
        out[:, :n] = self._solve(i + 1, v)
        if p.rho[i] is not None:
            out[:, :n] += p.rho[i]
        return out

    def _forward_part(self, p: _Prepared, i: int, z_below) -> np.ndarray | float:
        """``S_l (phi_l - y_l)`` for layer l = i+1 from the scaled deviation of layer l-1."""
        if i == 0:
            return 0.0  # the input is clamped
        net = self.spec.network
        w = net.weights[i]
        drive = self.spec.gamma[i - 1] * (z_below[:, : w.shape[0]] @ w.T)
        return net.activation.forward_increment(p.h0[i], drive, self.scales[i])

    def _layer_map(self, p: _Prepared, z: list, i: int, target) -> np.ndarray:
        L = self.spec.depth
        fwd = self._forward_part(p, i, z[i - 1] if i > 0 else None)
        if i == L - 1:
            fb = target - p.y[L]
        else:
            fb = self._feedback(p, i, z[i + 1])
        return (1.0 - p.k[i]) * fwd + p.kappa[i] * fb

    def _jacobi(self, p, z, target) -> list:
        """The steady-state map applied to every layer at once (no residuals: for integrators)."""
        return [self._layer_map(p, z, i, target) for i in range(self.spec.depth)]

    def _map(self, p, z, target, gauss_seidel: bool):
        """One sweep of the steady-state map, top-down; returns (new z, per-layer residuals)."""
        new = list(z)
        res = np.zeros((p.x.shape[0], self.spec.depth))
        for i in range(self.spec.depth - 1, -1, -1):
            src = new if gauss_seidel else z
            m = self._layer_map(p, src, i, target)
            res[:, i] = relative_residual(m - z[i], m)
            new[i] = m
        return new, res

    def _state(self, p, z, res, converged, target, time_tau=float("nan")) -> SteadyState:
        dev = [zi / s for zi, s in zip(z, self.scales)]
        rates = [y + d for y, d in zip(p.y[1:], dev)]
        fwd = models.ForwardPass(p.y, p.h0, p.a)
        return SteadyState(rates=rates, deviations=dev, converged=converged, residual=res,
                           time=time_tau * self.spec.tau, target=target, engine=self.name, scaled=z, forward=fwd,
                           tau=self.spec.tau)

    # ------------------------------------------------------------------ the one settle loop
    def _sweep_or_relax(self, state, sweep, step, size, tol: float, budget: float, stop_early: bool) -> _Settled:
        """Sweeps until every sample's residual is at most ``tol``; if they stall, follow the dynamics.

        ``sweep(state)`` and ``step(state)`` return (new state, per-sample residual): a sweep of the
        fixed-point map, and one Euler step of ``EULER_STEP`` tau (whose fixed point is the same).
        The sweeps stall when ``STALL_SWEEPS`` in a row do not halve the worst residual (strong
        coupling); the Euler steps then run for at most ``budget`` tau, every ``CHECK_STEPS`` steps
        checking for a blow-up (``size(state)`` grew by ``BLOW_UP``), for convergence and, if
        ``stop_early``, for progress (:class:`SettleWatch`).  Euler is stable for eigenvalues in
        (-2/EULER_STEP, 0)/tau, which holds for the couplings used here (eigenvalues in [-2, 0)).
        """
        best, stalled, res = np.inf, 0, None
        for sweeps in range(1, self.max_sweeps + 1):
            state, res = sweep(state)
            if np.any(np.isnan(res)):
                return _Settled(state, res, sweeps, float("nan"), "overflow")
            worst = res.max()
            if worst <= tol:
                return _Settled(state, res, sweeps, float("nan"), "converged")
            stalled = stalled + 1 if worst > 0.5 * best else 0
            best = min(best, worst)
            if stalled >= STALL_SWEEPS:
                break
        else:
            return _Settled(state, res, self.max_sweeps, float("nan"), "sweeps")
        start = max(size(state), 1.0)
        watch = SettleWatch(tol, budget) if stop_early else None
        n = 0
        for n in range(1, int(budget / EULER_STEP) + 1):
            state, res = step(state)
            if n % CHECK_STEPS == 0:
                grown = size(state)
                if not np.isfinite(grown) or grown > BLOW_UP * start:
                    return _Settled(state, res, sweeps, n * EULER_STEP, "blew up" if np.isfinite(grown) else "overflow")
                if np.all(res <= tol) or (watch and watch.hopeless(n * EULER_STEP, float(res.max()))):
                    break
        return _Settled(state, res, sweeps, n * EULER_STEP, "relaxed")

    def _advice(self, settled: _Settled) -> str:
        if settled.stop == "sweeps":
            return (f"after {settled.sweeps} sweeps the fixed-point iteration was still converging: raise "
                    f"max_sweeps (FastEngine(spec, max_sweeps=...), now {self.max_sweeps})")
        return f"after {settled.sweeps} sweeps and {settled.time:g} tau of dynamics"

    # ------------------------------------------------------------------ verbs
    def _settle_free(self, x, fwd, rtol, max_time, stop_early):
        """Bottom-up sweeps in absolute rates from rest (r_l <- r_l + drift_l, the fixed-point map)."""
        p = self._prepare(fwd, nudged=False)
        L = self.spec.depth

        def sweep(r):
            res = np.zeros(x.shape[0])
            for l in range(1, L + 1):
                new = r[l] + self._drift_layer(p, r, l, None)
                res = np.maximum(res, relative_residual(new - r[l], new))
                r[l] = new
            return r, res

        def step(r):
            drift = self._drift(p, r, None)
            res = np.max([relative_residual(d, ri + d) for ri, d in zip(r[1:], drift)], axis=0)
            return [r[0]] + [ri + EULER_STEP * d for ri, d in zip(r[1:], drift)], res

        settled = self._sweep_or_relax([x] + [np.zeros_like(y) for y in p.y[1:]], sweep, step,
                                       lambda r: max(np.max(np.abs(ri)) for ri in r[1:]), rtol,
                                       max_time / self.spec.tau, stop_early)
        if settled.escaped():
            raise escape_error(self, "free phase", x, settled.state[1:] if settled.stop == "blew up" else None,
                               time_tau=settled.time)
        r, res = settled.state, settled.residual
        state = SteadyState(rates=r[1:], deviations=[a - b for a, b in zip(r[1:], p.y[1:])],
                            converged=res <= rtol, residual=res, time=settled.time * self.spec.tau,
                            engine=self.name, precise_deviations=False, tau=self.spec.tau)
        return state, self._advice(settled)

    def _settle_nudged(self, x, target, fwd, rtol, max_time, stop_early):
        p = self._prepare(fwd)

        def sweep(z):
            z, layer_res = self._map(p, z, target, gauss_seidel=True)
            return z, layer_res.max(axis=1)

        def step(z):
            m, layer_res = self._map(p, z, target, gauss_seidel=False)
            return [zi + EULER_STEP * (mi - zi) for zi, mi in zip(z, m)], layer_res.max(axis=1)

        settled = self._sweep_or_relax([np.zeros_like(y) for y in p.y[1:]], sweep, step,
                                       lambda z: max(np.max(np.abs(zi)) for zi in z), rtol,
                                       max_time / self.spec.tau, stop_early)
        z, res = settled.state, settled.residual
        if settled.escaped():
            rates = [y + zi / s for y, zi, s in zip(p.y[1:], z, self.scales)] if settled.stop == "blew up" else None
            raise escape_error(self, "nudged phase", x, rates, time_tau=settled.time)
        if settled.stop == "relaxed":  # the residual of the state reached, not of the one before the last step
            res = self._map(p, z, target, gauss_seidel=False)[1].max(axis=1)
        return self._state(p, z, res, res <= rtol, target, settled.time), self._advice(settled)

    def _settle_noisy(self, x, target, fwd, noise, duration, average_from, dt, rtol, seed):
        """Euler-Maruyama in scaled coordinates: the noise enters each layer scaled by its S_l."""
        p = self._prepare(fwd)
        rng = np.random.default_rng(seed)
        z = [np.zeros_like(y) for y in p.y[1:]]
        total = [np.zeros_like(y) for y in p.y[1:]]
        steps, start = int(round(duration / dt)), int(round(average_from / dt))
        if steps <= start:
            raise ValueError(f"dt: expected a step that fits the averaging window [{average_from:g}, {duration:g}] s "
                             f"at least once, got {dt:g} s")
        h = dt / self.spec.tau
        kick = noise * np.sqrt(h)
        for n in range(steps):
            m = self._jacobi(p, z, target)
            z = [zi + h * (mi - zi) + kick * s * rng.standard_normal(zi.shape)
                 for zi, mi, s in zip(z, m, self.scales)]
            if n >= start:
                total = [t + zi for t, zi in zip(total, z)]
        z = [t / (steps - start) for t in total]
        res = self._map(p, z, target, gauss_seidel=False)[1].max(axis=1)
        res = np.where(np.isnan(res), np.inf, res)  # an unstable step overflows: not converged
        return self._state(p, z, res, res <= rtol, target, duration / self.spec.tau)

    def _simulate(self, x, target, fwd, times, start, deviations):
        """``start="rest"``: absolute rates from r = 0; otherwise scaled deviations from ``deviations`` (or 0)."""
        t_eval = times / self.spec.tau
        p = self._prepare(fwd, nudged=target is not None)
        if start == "rest":
            rates = self._simulate_absolute(p, target, t_eval)
            return rates, [r - y[None] for r, y in zip(rates, p.y[1:])]
        if target is None:
            target = p.y[-1]  # its coupling is 0: no nudge
        shapes = [y.shape for y in p.y[1:]]
        sizes = [int(np.prod(s)) for s in shapes]

        def rhs(t, flat):
            z = _unflatten(flat, shapes, sizes)
            m = self._jacobi(p, z, target)
            return np.concatenate([(a - b).ravel() for a, b in zip(m, z)])

        z0 = np.zeros(sum(sizes)) if deviations is None else \
            np.concatenate([(d * s).ravel() for d, s in zip(deviations, self.scales)])
        zs = _integrate(rhs, z0, t_eval, shapes, sizes)
        dev = [np.stack([z[i] / self.scales[i] for z in zs]) for i in range(len(shapes))]
        return [p.y[i + 1][None] + d for i, d in enumerate(dev)], dev

    def _simulate_absolute(self, p, target, t_eval):
        L = self.spec.depth
        shapes = [y.shape for y in p.y[1:]]
        sizes = [int(np.prod(s)) for s in shapes]

        def rhs(t, flat):
            return np.concatenate([d.ravel() for d in self._drift(p, [p.x] + _unflatten(flat, shapes, sizes), target)])

        states = _integrate(rhs, np.zeros(sum(sizes)), t_eval, shapes, sizes)
        return [np.stack([s[i] for s in states]) for i in range(L)]

    def drift(self, x, rates: list, target=None) -> list:
        """``tau dr_l/dt = -r_l + (1 - k_l) phi_l + k_l psi_l`` at absolute ``rates`` (list over layers 1..L).

        ``target`` None: the free phase (no nudge).  For teaching and plots (phase portraits);
        settles and trajectories use the scaled coordinates where precision matters.
        """
        x, target = self.check_batch(x, target)
        rates = self.layer_arrays("rates", rates, x.shape[0])
        p = self._prepare(self.forward(x), nudged=target is not None)
        with self._hot_loop():
            return self._drift(p, [x] + list(rates), target)

    def _drift(self, p, r, target):
        return [self._drift_layer(p, r, l, target) for l in range(1, self.spec.depth + 1)]

    def _drift_layer(self, p, r, l, target):
        """Drift of layer l (1..L) at absolute rates r (r[0] = input); target None: no nudge."""
        net = self.spec.network
        return -r[l] + _relaxed_rate(net.activation, net.weights, net.biases, p.k[l - 1], self._solve, r, l, target)

    def settle_rounded(self, x, target, dtype="float32", *, max_time=None, on_failure: str = "raise") -> SteadyState:
        """Nudged phase of a circuit that stores its rates in ``dtype`` ("float32" or "float64").

        Every quantity of the absolute-rate dynamics (weights, rates, potentials, the
        feedback's inverse weights) is rounded to ``dtype``: the free phase is the forward
        pass in that precision, the nudged phase its top-down Gauss-Seidel sweeps (damped
        Euler steps of tau/2 if those stall, for at most ``max_time`` seconds, default 5000
        tau), run until no rate moves by more than 4 units of its rounding.  The deviations
        are differences of rounded rates, so a layer whose deviation ~gamma^(L-l+1) falls below
        the rounding of its rates loses its learning signal: what a float32 simulator or a
        limited-precision device would see.  ``residual`` is the last move relative to the
        rates; the returned state feeds :meth:`plasticity` like any other.
        """
        x, target = self.check_batch(x, target)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        max_time = self._seconds(max_time, "max_time", self.rounded_max_time)
        check_choice("on_failure", on_failure, ("raise", "mask"))
        fwd = self.forward(x)
        with self._hot_loop():
            state, advice = self._settle_rounded(x, target, fwd, dt, max_time, on_failure == "raise")
        return self._checked(state, x, on_failure, f"nudged phase ({dt.name})", ROUNDED_ULPS * np.finfo(dt).eps,
                             max_time, advice)

    def _settle_rounded(self, x, target, fwd, dt, max_time, stop_early):
        eps = float(np.finfo(dt).eps)
        net, act, L = self.spec.network, self.spec.network.activation, self.spec.depth
        p = self._prepare(fwd)
        w = [wi.astype(dt) for wi in net.weights]
        b = [bi.astype(dt) for bi in net.biases]
        q = [None if qi is None else qi.astype(dt) for qi in self._q]
        lu = {i: scipy.linalg.lu_factor(w[i], check_finite=False) for i in range(1, L) if q[i] is None}
        k = [ki.astype(dt) for ki in p.k]
        t = target.astype(dt)

        def solve(i, u):  # rows of W_i^-1 u (or of Q_i u) in dtype
            if q[i] is not None:
                return u @ q[i].T
            return scipy.linalg.lu_solve(lu[i], u.T, check_finite=False).T

        def layer(r, i):  # new rate of layer l = i+1 from its neighbours
            return _relaxed_rate(act, w, b, k[i], solve, r, i + 1, t, dt)

        def moved(old, new):  # per sample, in units of the rounding of the layer's rates
            size = np.maximum(np.abs(new).max(axis=1), np.finfo(dt).tiny)
            return np.abs(new - old).max(axis=1) / (eps * size)

        def sweep(r):  # top-down Gauss-Seidel
            change = np.zeros(x.shape[0])
            for i in range(L - 1, -1, -1):
                new = layer(r, i)
                change = np.maximum(change, moved(r[i + 1], new))
                r[i + 1] = new
            return r, change

        def step(r):
            new = [ri + (EULER_STEP * (layer(r, i) - ri)).astype(dt) for i, ri in enumerate(r[1:])]
            return [r[0]] + new, np.max([moved(a, c) for a, c in zip(r[1:], new)], axis=0)

        free = [x.astype(dt)]
        for i in range(L):
            free.append(act.f(free[-1][:, : w[i].shape[0]] @ w[i].T + b[i]).astype(dt))
        settled = self._sweep_or_relax(list(free), sweep, step, lambda r: max(np.abs(ri).max() for ri in r[1:]),
                                       ROUNDED_ULPS, max_time / self.spec.tau, stop_early)
        r, change = settled.state, settled.residual
        if settled.escaped() or not all(np.all(np.isfinite(ri)) for ri in r[1:]):
            rates = [ri.astype(np.float64) for ri in r[1:]] if settled.stop == "blew up" else None
            raise escape_error(self, f"nudged phase ({dt.name})", x, rates, time_tau=settled.time, dtype=dt)
        dev = [(ri - fi).astype(np.float64) for ri, fi in zip(r[1:], free[1:])]
        state = SteadyState(rates=[ri.astype(np.float64) for ri in r[1:]], deviations=dev,
                            converged=change <= ROUNDED_ULPS, residual=change * eps, time=settled.time * self.spec.tau,
                            target=target, engine=f"{self.name} ({dt.name})", precise_deviations=False,
                            scaled=[d * s for d, s in zip(dev, self.scales)], forward=fwd, tau=self.spec.tau)
        return state, self._advice(settled)

    def _scaled_errors(self, state, x, fwd):
        """"gait": ``S_l (u_l - h_l)``; "itp": ``S_l f'(h0_l) (r_l - phi_l)``, from the scaled deviations."""
        p = self._prepare(fwd)
        act = self.spec.network.activation
        z = state.scaled if state.scaled is not None else [d * s for d, s in zip(state.deviations, self.scales)]
        errors = []
        for i in range(self.spec.depth):
            if self.spec.mode == "gait":  # S_l (u_l - h_l)
                errors.append(act.inverse_increment(p.y[i + 1], z[i], self.scales[i])
                              - _forward_potential(self, p, i, z))
            else:  # S_l f'(h0_l) (r_l - phi_l)
                errors.append(p.a[i] * (z[i] - self._forward_part(p, i, z[i - 1] if i > 0 else None)))
        return errors


def _relaxed_rate(act, weights, biases, k, solve, r, l, target, dtype=np.float64):
    """``(1 - k_l) phi_l + k_l psi_l``: where layer l (1..L) relaxes to at absolute rates ``r`` (r[0] = input).

    ``phi_l`` is the feedforward drive, ``psi_l`` the inverse of the layer above (or the target at
    the output; ``target`` None: no nudge); ``solve(l, u)`` gives the rows of ``W_l^-1 u``.  Every
    intermediate is kept in ``dtype`` (float32: what a float32 circuit computes).
    """
    w, b = weights[l - 1], biases[l - 1]
    phi = act.f(r[l - 1][:, : w.shape[0]] @ w.T + b).astype(dtype, copy=False)
    if l < len(weights):
        psi = np.zeros_like(phi)
        u = act.inverse(r[l + 1]).astype(dtype, copy=False) - biases[l]
        psi[:, : weights[l].shape[0]] = solve(l, u)
    elif target is None:
        return phi
    else:
        psi = target
    return ((1 - k) * phi + k * psi).astype(dtype, copy=False)


def _forward_potential(engine, p, i, z):
    """``S_l (h_l - h0_l) = gamma_{l-1} W_l z_{l-1}`` (0 for layer 1)."""
    if i == 0:
        return 0.0
    w = engine.spec.network.weights[i]
    return engine.spec.gamma[i - 1] * (z[i - 1][:, : w.shape[0]] @ w.T)


def _integrate(rhs, y0, t_eval, shapes, sizes) -> list:
    """RK45 (rtol 1e-9, atol 1e-12) from ``y0`` at t = 0; the states at ``t_eval`` (tau), unflattened."""
    sol = solve_ivp(rhs, (0, t_eval[-1]), y0, t_eval=t_eval, method="RK45", rtol=1e-9, atol=1e-12)
    if not sol.success:
        raise CircuitError(f"simulate: the integrator stopped at t = {sol.t[-1]:g} tau of {t_eval[-1]:g}: "
                           f"{sol.message}")
    return [_unflatten(col, shapes, sizes) for col in sol.y.T]


def _unflatten(flat, shapes, sizes):
    out, start = [], 0
    for s, n in zip(shapes, sizes):
        out.append(flat[start: start + n].reshape(s))
        start += n
    return out
