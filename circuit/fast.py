"""The fast engine: numpy/scipy, batched over samples, in scaled deviation coordinates.

The nudged phase is solved for the scaled deviations from the forward pass ::

    z_l = S_l (r_l - y_l),      S_l = prod_{j=l..L} 1/gamma_j

which are O(1) although r_l - y_l ~ gamma^(L-l+1) (below float64 rounding of the
rates for deep layers at small gamma).  With the exact increments of
:mod:`models.activations` the steady-state equations become, without approximation::

    z_l = (1 - k_l) S_l [f(h0_l + W_l d_{l-1}) - f(h0_l)] + kappa_l S_{l+1} [psi_l - y_l]
    z_L = (1 - k_L) S_L [f(h0_L + W_L d_{L-1}) - f(h0_L)] + kappa_L (t_L - y_L)

(k = gamma kappa, S_{L+1} = 1).  Steady states come from top-down Gauss-Seidel
sweeps of this map (the forward coupling is O(gamma), so each sweep gains a factor
~gamma); if the sweeps stall (strong coupling), the engine follows the dynamics
(Euler steps of tau/2) to the steady state, raising :class:`DivergenceError` if the
rates blow up and :class:`ConvergenceError` (with the largest real eigenvalue at the
final state) if they never settle.  Trajectories
integrate the ODE with scipy's ``solve_ivp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.integrate import solve_ivp

import models
from models.network import DirectInverse
from models.validation import layer_scales

from .plasticity import updates_from_errors
from .results import SteadyState, Trajectory, divergence_message, finish
from .spec import CircuitSpec, ConvergenceError, DivergenceError, check_batch, check_noise
from .stability import largest_real_eigenvalue

__all__ = ["FastEngine"]


@dataclass
class _Prepared:
    """Per-batch quantities of the free phase: forward pass and held couplings."""

    x: np.ndarray
    y: list        # rates y_0..y_L
    h0: list       # pre-activations, [i] for layer i+1
    a: list        # f'(h0), [i] for layer i+1
    kappa: list    # relative couplings, [i] for layer i+1
    k: list        # couplings gamma * kappa


class FastEngine:
    """Batched numpy/scipy engine for a :class:`CircuitSpec` (see module docstring).

    Parameters
    ----------
    spec : CircuitSpec
    rtol : float
        Default tolerance of settles: relative residual of each layer's deviation.
    max_sweeps : int
        Gauss-Seidel sweeps before following the dynamics instead (strong coupling).
    inverse : models.DirectInverse, optional
        Factorises the feedback layers' weights; ``DirectInverse(threads=2)`` does it side
        by side on two threads (bit-identical; default: one thread).
    """

    name = "fast"
    precise_deviations = True

    def __init__(self, spec: CircuitSpec, rtol: float = 1e-10, max_sweeps: int = 200,
                 inverse: DirectInverse | None = None):
        self.spec = spec
        self.rtol = float(rtol)
        self.max_sweeps = int(max_sweeps)
        net = spec.network
        # Factorise every W_l with l >= 2 once (they feed back into layer l-1); refuses singular weights.
        # ``inverse``: a DirectInverse whose thread pool factorises the layers side by side (same bits).
        self._lu = (inverse or DirectInverse()).factorise(net.weights, range(1, net.depth))
        self.scales = layer_scales(spec.gamma)

    # ------------------------------------------------------------------ helpers
    def _solve(self, i: int, u: np.ndarray) -> np.ndarray:
        """Rows of ``W_i^-1 u`` (weights index i, i >= 1)."""
        lu, piv = self._lu[i]
        x, _ = scipy.linalg.lapack.dgetrs(lu, piv, u.T, trans=1)
        return x.T

    def _prepare(self, x, fwd=None) -> _Prepared:
        """Free phase and couplings of a batch; ``fwd``: its forward pass if the caller already has it."""
        if fwd is None:
            fwd = self.spec.network.forward(x)
        elif not np.array_equal(fwd.rates[0], x):
            raise ValueError("forward: expected the forward pass of this input batch (network.forward(x))")
        kappa = self.spec.relative_couplings(fwd.derivatives)
        k = [g * kp for g, kp in zip(self.spec.gamma, kappa)]
        return _Prepared(fwd.rates[0], fwd.rates, fwd.preactivations, fwd.derivatives, kappa, k)

    def _require_scales(self):
        if self.scales is None:
            raise ValueError(
                f"gamma: the fast engine's nudged phase needs gamma > 0 on every layer, got "
                f"{self.spec.gamma.tolist()}; a layer with gamma = 0 receives no feedback, so it and every "
                "layer below stay at their forward values")

    def _feedback(self, p: _Prepared, i: int, z_above: np.ndarray) -> np.ndarray:
        """``S_{l+1} (psi_l - y_l)`` for layer l = i+1 from the scaled deviation of layer l+1."""
        net, act = self.spec.network, self.spec.network.activation
        n = net.weights[i + 1].shape[0]
        v = act.inverse_increment(p.y[i + 2], z_above, self.scales[i + 1])
        out = np.zeros_like(p.y[i + 1])
        out[:, :n] = self._solve(i + 1, v)
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
            res[:, i] = _relative(m - z[i], m)
            new[i] = m
        return new, res

    # ------------------------------------------------------------------ verbs
    def settle_free(self, x, *, tol: float = 1e-13, max_sweeps: int | None = None,
                    on_failure: str = "raise") -> SteadyState:
        """Free phase (input clamped, no nudge) from rest, by bottom-up sweeps in absolute rates.

        Its fixed point is the forward pass for any coupling; the result is compared
        with it in the tests (to 1e-12).  Couplings are those held from the forward pass.
        """
        x, _ = check_batch(self.spec, x)
        p = self._prepare(x)
        L = self.spec.depth
        r = [x] + [np.zeros_like(y) for y in p.y[1:]]
        max_sweeps = max_sweeps or self.max_sweeps
        res = np.full(x.shape[0], np.inf)
        for _ in range(max_sweeps):  # bottom-up sweeps: r_l <- r_l + drift_l (its fixed-point map)
            res = np.zeros(x.shape[0])
            for l in range(1, L + 1):
                new = r[l] + self._drift_layer(p, r, l, None)
                res = np.maximum(res, _relative(new - r[l], new))
                r[l] = new
            _check_finite(res, "free phase", self, x)
            if np.all(res <= tol):
                break
        converged = res <= tol
        state = SteadyState(rates=r[1:], deviations=[a - b for a, b in zip(r[1:], p.y[1:])],
                            converged=converged, residual=res, engine=self.name, precise_deviations=False)
        return finish(state, on_failure, "free phase", tol)

    def settle_nudged(self, x, target, *, rtol: float | None = None, on_failure: str = "raise",
                      forward=None) -> SteadyState:
        """Nudged phase: input clamped, output nudged toward ``target`` (batch, n_L).

        ``forward``: the network's forward pass of ``x`` if the caller has it (saves recomputing it).
        """
        self._require_scales()
        x, target = check_batch(self.spec, x, target)
        rtol = self.rtol if rtol is None else float(rtol)
        p = self._prepare(x, forward)
        z = [np.zeros_like(y) for y in p.y[1:]]
        best, stalled, settle_time = np.inf, 0, float("nan")
        res = np.full(x.shape[0], np.inf)
        for sweeps in range(1, self.max_sweeps + 1):  # noqa: B007  (reported after the loop)
            z, layer_res = self._map(p, z, target, gauss_seidel=True)
            res = layer_res.max(axis=1)
            _check_finite(res, "nudged phase", self, x)
            worst = res.max()
            if worst <= rtol:
                break
            stalled = stalled + 1 if worst > 0.5 * best else 0
            best = min(best, worst)
            if stalled >= 5:  # strong coupling: the sweeps no longer contract; follow the dynamics
                z, settle_time, blew_up = self._relax_to_steady(p, z, target, rtol)
                if blew_up:
                    raise DivergenceError(
                        f"nudged phase: the rates grew by more than 1e12 within {settle_time:g} tau; "
                        + divergence_message(self.spec, largest_real_eigenvalue(
                            self.spec, x, [y + zi / s for y, zi, s in zip(p.y[1:], z, self.scales)])))
                res = self._map(p, z, target, gauss_seidel=False)[1].max(axis=1)
                break
        state = self._state(p, z, res, res <= rtol, target, settle_time)
        if on_failure == "raise" and not np.all(state.converged):
            lam = largest_real_eigenvalue(self.spec, x, state.rates)
            raise ConvergenceError(
                f"nudged phase: {np.sum(~state.converged)} of {x.shape[0]} samples did not settle to relative "
                f"residual {rtol:g} after {sweeps} sweeps"
                + ("" if np.isnan(settle_time) else f" and {settle_time:g} tau of dynamics")
                + f" (worst {np.max(res):.2e}); at the final state the "
                f"largest real eigenvalue of the linearised circuit is {np.max(lam):+.3g}/tau: "
                + ("unstable there, so the rates keep moving; use a smaller coupling gamma"
                   if np.max(lam) >= 0 else "use on_failure='mask' to keep the converged samples"), res)
        return finish(state, on_failure, "nudged phase", rtol)

    def _state(self, p, z, res, converged, target, time=float("nan")) -> SteadyState:
        dev = [zi / s for zi, s in zip(z, self.scales)]
        rates = [y + d for y, d in zip(p.y[1:], dev)]
        fwd = models.ForwardPass(p.y, p.h0, p.a)
        return SteadyState(rates=rates, deviations=dev, converged=converged, residual=res, time=time,
                           target=target, engine=self.name, scaled=z, forward=fwd)

    def _rhs(self, p, target, shapes):
        sizes = [int(np.prod(s)) for s in shapes]

        def rhs(t, flat):
            z = _unflatten(flat, shapes, sizes)
            m = self._jacobi(p, z, target)
            return np.concatenate([(a - b).ravel() for a, b in zip(m, z)])

        return rhs, sizes

    def _relax_to_steady(self, p, z, target, rtol, max_tau: float = 2000.0, step: float = 0.5):
        """Follow the dynamics by Euler steps of ``step`` tau (damped Jacobi sweeps) until the
        per-sample residual meets ``rtol``; stop early if the rates blow up.

        Euler is stable for eigenvalues in (-2/step, 0)/tau, which holds for the couplings
        used here (eigenvalues in [-2, 0)); its fixed point is the steady state itself.
        Returns (z, simulated time in tau, blew_up).
        """
        start = max(max(np.max(np.abs(zi)) for zi in z), 1.0)
        for n in range(1, int(max_tau / step) + 1):
            m, res = self._map(p, z, target, gauss_seidel=False)
            z = [zi + step * (mi - zi) for zi, mi in zip(z, m)]
            if n % 20 == 0:
                size = max(np.max(np.abs(zi)) for zi in z)
                if not np.isfinite(size) or size > 1e12 * start:
                    return z, n * step, True
                if np.all(res.max(axis=1) <= rtol):
                    break
        return z, n * step, False

    def simulate(self, x, target=None, *, duration: float | None = None, n_points: int = 201,
                 start: str = "free") -> Trajectory:
        """Integrate the dynamics (time in seconds; default 30 tau).

        ``start="free"``: from the free-phase steady state (the forward pass) with the
        nudge switched on at t = 0, in scaled deviation coordinates (precise).
        ``start="rest"``: from r = 0 in absolute rates (the free phase if ``target`` is None).
        """
        x, target = check_batch(self.spec, x, target)
        tau = self.spec.tau
        duration = 30 * tau if duration is None else float(duration)
        t_eval = np.linspace(0.0, duration / tau, n_points)
        p = self._prepare(x)
        net, act = self.spec.network, self.spec.network.activation
        if start == "free":
            if target is None:
                target = p.y[-1]
            self._require_scales()
            shapes = [y.shape for y in p.y[1:]]
            rhs, sizes = self._rhs(p, target, shapes)
            sol = solve_ivp(rhs, (0, t_eval[-1]), np.zeros(sum(sizes)), t_eval=t_eval, method="RK45",
                            rtol=1e-9, atol=1e-12)
            zs = [_unflatten(col, shapes, sizes) for col in sol.y.T]
            dev = [np.stack([z[i] / self.scales[i] for z in zs]) for i in range(len(shapes))]
            rates = [p.y[i + 1][None] + d for i, d in enumerate(dev)]
        elif start == "rest":
            rates = self._simulate_absolute(p, target, t_eval)
            dev = [r - y[None] for r, y in zip(rates, p.y[1:])]
        else:
            raise ValueError(f"start: expected 'free' or 'rest', got {start!r}")
        somatic = [act.inverse(r) for r in rates]
        inputs = [np.broadcast_to(x, (len(t_eval),) + x.shape)] + rates[:-1]
        basal = [pre[..., : w.shape[0]] @ w.T + b for pre, w, b in zip(inputs, net.weights, net.biases)]
        return Trajectory(t_eval * tau, rates, dev, somatic, basal, engine=self.name)

    def drift(self, x, rates: list, target=None) -> list:
        """``tau dr_l/dt = -r_l + (1 - k_l) phi_l + k_l psi_l`` at absolute ``rates`` (list over layers 1..L).

        ``target`` None: the free phase (no nudge).  For teaching and plots (phase portraits);
        settles and trajectories use the scaled coordinates where precision matters.
        """
        x, target = check_batch(self.spec, x, target)
        return self._drift(self._prepare(x), [x] + list(rates), target)

    def _drift(self, p, r, target):
        return [self._drift_layer(p, r, l, target) for l in range(1, self.spec.depth + 1)]

    def _drift_layer(self, p, r, l, target):
        """Drift of layer l (1..L) at absolute rates r (r[0] = input); target None: no nudge."""
        net = self.spec.network
        return -r[l] + _relaxed_rate(net.activation, net.weights, net.biases, p.k[l - 1], self._solve, r, l, target)

    def _simulate_absolute(self, p, target, t_eval):
        L = self.spec.depth
        shapes = [y.shape for y in p.y[1:]]
        sizes = [int(np.prod(s)) for s in shapes]

        def rhs(t, flat):
            return np.concatenate([d.ravel() for d in self._drift(p, [p.x] + _unflatten(flat, shapes, sizes), target)])

        sol = solve_ivp(rhs, (0, t_eval[-1]), np.zeros(sum(sizes)), t_eval=t_eval, method="RK45",
                        rtol=1e-9, atol=1e-12)
        states = [_unflatten(col, shapes, sizes) for col in sol.y.T]
        return [np.stack([s[i] for s in states]) for i in range(L)]

    def settle_noisy(self, x, target, noise: float, *, duration: float = 200.0, average_from: float = 50.0,
                     dt: float = 0.05, seed: int = 0, forward=None) -> SteadyState:
        """Nudged phase with additive white noise in the rate dynamics; readout = time average.

        ``tau dr = (-r + (1 - k) phi + k psi) dt + noise sqrt(tau) dW`` is integrated by
        Euler-Maruyama (steps of ``dt`` tau) from the free-phase state for ``duration`` tau;
        the state returned is the average of r over [``average_from``, ``duration``] tau
        (``converged`` is True, ``residual`` that of the averaged state, ``time`` the duration).
        The noise's share of the readout shrinks like ``noise / sqrt(duration - average_from)``.
        ``forward`` as in :meth:`settle_nudged`.
        """
        self._require_scales()
        x, target = check_batch(self.spec, x, target)
        check_noise(noise, duration, average_from)
        p = self._prepare(x, forward)
        rng = np.random.default_rng(seed)
        z = [np.zeros_like(y) for y in p.y[1:]]
        total = [np.zeros_like(y) for y in p.y[1:]]
        steps, start = int(round(duration / dt)), int(round(average_from / dt))
        kick = noise * np.sqrt(dt)
        for n in range(steps):
            m = self._jacobi(p, z, target)
            # deviation coordinates: the noise enters each layer scaled by its S_l
            z = [zi + dt * (mi - zi) + kick * s * rng.standard_normal(zi.shape)
                 for zi, mi, s in zip(z, m, self.scales)]
            if n >= start:
                total = [t + zi for t, zi in zip(total, z)]
        z = [t / (steps - start) for t in total]
        res = self._map(p, z, target, gauss_seidel=False)[1].max(axis=1)
        return self._state(p, z, res, np.ones(x.shape[0], dtype=bool), target, float(duration))

    def settle_rounded(self, x, target, dtype="float32", *, max_sweeps: int | None = None,
                       max_tau: float = 5000.0, on_failure: str = "raise") -> SteadyState:
        """Nudged phase of a circuit that stores its rates in ``dtype`` ("float32" or "float64").

        Every quantity of the absolute-rate dynamics (weights, rates, potentials, the
        feedback's inverse weights) is rounded to ``dtype``: the free phase is the forward
        pass in that precision, the nudged phase its top-down Gauss-Seidel sweeps (damped
        Euler steps of tau/2 if those stall), run until the rates stop changing at that
        precision.  The deviations are differences of rounded rates, so a layer whose
        deviation ~gamma^(L-l+1) falls below the rounding of its rates loses its learning
        signal: what a float32 simulator or a limited-precision device would see.  The
        returned state feeds :meth:`plasticity` like any other.
        """
        self._require_scales()
        x, target = check_batch(self.spec, x, target)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        eps = float(np.finfo(dt).eps)
        net, act, L = self.spec.network, self.spec.network.activation, self.spec.depth
        p = self._prepare(x)
        w = [wi.astype(dt) for wi in net.weights]
        b = [bi.astype(dt) for bi in net.biases]
        lu = {i: scipy.linalg.lu_factor(w[i], check_finite=False) for i in range(1, L)}
        k = [ki.astype(dt) for ki in p.k]
        t = target.astype(dt)

        def solve(i, u):  # rows of W_i^-1 u in dtype
            return scipy.linalg.lu_solve(lu[i], u.T, check_finite=False).T

        def layer(r, i):  # new rate of layer l = i+1 from its neighbours
            return _relaxed_rate(act, w, b, k[i], solve, r, i + 1, t, dt)

        free = [x.astype(dt)]
        for i in range(L):
            free.append(act.f(free[-1][:, : w[i].shape[0]] @ w[i].T + b[i]).astype(dt))
        r = list(free)
        batch = x.shape[0]
        change = np.full(batch, np.inf)

        def moved(old, new):  # per sample, in units of the rounding of the layer's rates
            size = np.maximum(np.abs(new).max(axis=1), np.finfo(dt).tiny)
            return np.abs(new - old).max(axis=1) / (eps * size)

        best, stalled, time = np.inf, 0, float("nan")
        for _ in range(max_sweeps or self.max_sweeps):
            change = np.zeros(batch)
            for i in range(L - 1, -1, -1):
                new = layer(r, i)
                change = np.maximum(change, moved(r[i + 1], new))
                r[i + 1] = new
            _check_finite(change, "nudged phase (rounded)", self, x)
            if change.max() <= 4.0:
                break
            stalled = stalled + 1 if change.max() > 0.5 * best else 0
            best = min(best, change.max())
            if stalled >= 5:  # strong coupling: follow the dynamics instead
                for n in range(1, int(max_tau / 0.5) + 1):
                    new = [ri + (0.5 * (layer(r, i) - ri)).astype(dt) for i, ri in enumerate(r[1:])]
                    change = np.max([moved(a, c) for a, c in zip(r[1:], new)], axis=0)
                    r = [r[0]] + new
                    if not np.all(np.isfinite(change)) or max(np.abs(ri).max() for ri in r[1:]) > 1e12:
                        raise DivergenceError("nudged phase (rounded): the rates blew up within "
                                              f"{0.5 * n:g} tau; " + divergence_message(
                                                  self.spec, largest_real_eigenvalue(self.spec, x)))
                    if change.max() <= 4.0:
                        break
                time = 0.5 * n
                break
        dev = [(ri - fi).astype(np.float64) for ri, fi in zip(r[1:], free[1:])]
        state = SteadyState(rates=[ri.astype(np.float64) for ri in r[1:]], deviations=dev,
                            converged=change <= 4.0, residual=change * eps, time=time, target=target,
                            engine=f"{self.name} ({dt.name})", precise_deviations=False,
                            scaled=[d * s for d, s in zip(dev, self.scales)],
                            forward=models.ForwardPass(p.y, p.h0, p.a))
        return finish(state, on_failure, f"nudged phase ({dt.name})", 4.0 * eps)

    def plasticity(self, state: SteadyState, x) -> tuple[list, list]:
        """Local rule at the nudged steady state: (dW, db) per unit learning rate.

        "gait" mode: somatic minus basal potential, ``e_l = u_l - h_l``; "itp" mode:
        ``e_l = f'(h0_l) (r_l - phi_l)``; both times the presynaptic rate and divided
        by ``prod_{j=l..L} gamma_j`` (see docs/derivation.md).
        """
        self._require_scales()
        if state.scaled is None:
            raise ValueError("state: expected a nudged steady state of the fast engine (settle_nudged)")
        x, _ = check_batch(self.spec, x)
        p = self._prepare(x, state.forward_for(x))
        act = self.spec.network.activation
        z = state.scaled
        errors = []
        for i in range(self.spec.depth):
            if self.spec.mode == "gait":  # S_l (u_l - h_l)
                errors.append(act.inverse_increment(p.y[i + 1], z[i], self.scales[i])
                              - _forward_potential(self, p, i, z))
            else:  # S_l f'(h0_l) (r_l - phi_l)
                errors.append(p.a[i] * (z[i] - self._forward_part(p, i, z[i - 1] if i > 0 else None)))
        presynaptic = [x] + state.rates[:-1]
        return updates_from_errors(self.spec, errors, presynaptic)

    def stability(self, x, state: SteadyState | None = None) -> np.ndarray:
        """Largest real part of the linearised system's eigenvalues per sample (units of 1/tau)."""
        x, _ = check_batch(self.spec, x)
        return largest_real_eigenvalue(self.spec, x, None if state is None else state.rates)


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


def _relative(diff: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample |diff| / |ref| (0 where both vanish, inf where only ref does)."""
    num = np.linalg.norm(diff, axis=1)
    den = np.linalg.norm(ref, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num > 0, np.inf, 0.0))
    return out


def _unflatten(flat, shapes, sizes):
    out, start = [], 0
    for s, n in zip(shapes, sizes):
        out.append(flat[start: start + n].reshape(s))
        start += n
    return out


def _check_finite(res, phase, engine, x):
    if np.any(np.isnan(res)):
        raise DivergenceError(f"{phase}: the iteration produced non-finite rates; "
                              + divergence_message(engine.spec, largest_real_eigenvalue(engine.spec, x)))
