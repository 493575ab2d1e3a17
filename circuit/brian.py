"""The Brian2 engine: NeuronGroups with rate equations generated from the specification.

Each layer l = 1..L is one NeuronGroup of ``batch * n_l`` rate neurons (sample-major)
whose equations (see :func:`equations`) read::

    dr/dt = (-r + (1 - k) * phi + k * psi) / tau : 1
    phi = f(h) : 1          # forward drive from the basal potential
    u = f^-1(r) : 1         # somatic potential
    h : 1                   # basal potential, set by the feedforward coupling
    psi : 1                 # feedback drive (the target at the output), set by the feedback coupling
    k : 1 (constant)        # per-unit coupling

The couplings are dense matrix products over the whole batch, computed each time
step in a runtime ``network_operation`` on the groups' own arrays (Brian2's dense
``(summed)`` Synapses cost ~100x more at 784 units; see :func:`summed_synapses_network`,
kept for the benchmark's contrast).  Integration is exponential Euler, exact for the
drives held over a step, so the steady state does not depend on ``dt``.

This engine works in absolute rates, like a plain Brian2 model: deviations from the
forward pass smaller than ~1e-16 of the rates are lost to rounding (see the
equilibrium experiment).
"""

from __future__ import annotations

import numpy as np

import models
from models.validation import layer_scales

from .plasticity import updates_from_errors
from .results import SteadyState, Trajectory, divergence_message, finish
from .spec import CircuitSpec, DivergenceError, check_batch, check_noise
from .stability import largest_real_eigenvalue

__all__ = ["Brian2Engine", "equations", "activation_expressions", "summed_synapses_network"]


def activation_expressions(activation) -> tuple[str, str]:
    """Brian2 expressions for f(h) and f^-1(r), generated from the models/ activation."""
    if isinstance(activation, models.Identity):
        return "h", "r"
    if isinstance(activation, models.LeakyReLU):
        s = repr(float(activation.negative_slope))
        return f"h * int(h > 0) + {s} * h * int(h <= 0)", f"r * int(r > 0) + r / {s} * int(r <= 0)"
    raise NotImplementedError(f"brian2 engine: no Brian2 expression for activation {activation!r}")


def equations(spec: CircuitSpec, noise: float = 0.0) -> str:
    """The rate equations of every layer, as Brian2 equation text (tau is a constant in seconds).

    ``noise`` > 0 adds white noise: ``tau dr = (...) dt + noise sqrt(tau) dW`` (Brian2's ``xi``).
    """
    f, finv = activation_expressions(spec.network.activation)
    noise_term = f" + {float(noise)!r} * xi * tau ** -0.5" if noise else ""
    return (
        f"dr/dt = (-r + (1 - k) * phi + k * psi) / tau{noise_term} : 1\n"
        f"phi = {f} : 1\n"
        f"u = {finv} : 1\n"
        "h : 1\n"
        "psi : 1\n"
        "k : 1 (constant)\n"
    )


class Brian2Engine:
    """Runs a :class:`CircuitSpec` in Brian2 (runtime mode; "numpy" or "cython" code generation).

    Parameters
    ----------
    spec : CircuitSpec
    target : {"numpy", "cython"}
    dt : float
        Time step in seconds (default tau / 10).
    rtol : float
        Relative residual at which a settle stops (absolute rates limit what is reachable).
    max_time : float
        Longest settle, in units of tau.
    check_every : float
        Settles are simulated in chunks of this many tau, checking the residual after each.
    """

    name = "brian2"
    precise_deviations = False

    def __init__(self, spec: CircuitSpec, target: str = "numpy", dt: float | None = None, rtol: float = 1e-6,
                 max_time: float = 400.0, check_every: float = 5.0):
        import brian2  # noqa: F401  (fail early with ImportError if missing)

        if target not in ("numpy", "cython"):
            raise ValueError(f"target: expected 'numpy' or 'cython', got {target!r}")
        self.spec, self.target = spec, target
        self.dt = spec.tau / 10 if dt is None else float(dt)
        self.rtol, self.max_time, self.check_every = float(rtol), float(max_time), float(check_every)
        net = spec.network
        self._inverses = {}
        for i, w in enumerate(net.weights[1:], start=1):
            models.network.lu_checked(i, w)  # refuse singular weights with a clear error
            self._inverses[i] = np.linalg.inv(w)

    # ------------------------------------------------------------------ model
    def _build(self, x, target, initial_rates, k, noise: float = 0.0):
        import brian2 as b2

        b2.prefs.codegen.target = self.target
        spec = self.spec
        batch = x.shape[0]
        eqs = equations(spec, noise)
        method = "euler" if noise else "exponential_euler"  # Euler-Maruyama for the noisy equations
        groups = []
        for i, n in enumerate(spec.widths[1:]):
            g = b2.NeuronGroup(batch * n, eqs, method=method, dt=self.dt * b2.second,
                               namespace={"tau": spec.tau * b2.second}, name=f"layer_{i + 1}*")
            g.r = initial_rates[i].ravel()
            g.k = k[i].ravel()
            groups.append(g)
        views = [(g.variables["r"].get_value(), g.variables["h"].get_value(), g.variables["psi"].get_value())
                 for g in groups]
        if target is not None:
            views[-1][2][:] = target.ravel()
        coupling = self._coupling(x, views)
        op = b2.NetworkOperation(coupling, when="start", dt=self.dt * b2.second)
        network = b2.Network(*groups, op)
        return network, groups, views, coupling

    def _coupling(self, x, views):
        """The network operation: basal potentials and feedback drives from the current rates."""
        net, act = self.spec.network, self.spec.network.activation
        batch = x.shape[0]
        widths = self.spec.widths
        L = net.depth

        def coupling():
            for i, (w, b) in enumerate(zip(net.weights, net.biases)):
                below = x if i == 0 else views[i - 1][0].reshape(batch, widths[i])
                n = w.shape[0]
                views[i][1].reshape(batch, n)[:] = below[:, :n] @ w.T + b
                if i < L - 1:
                    m = net.weights[i + 1].shape[0]
                    above = views[i + 1][0].reshape(batch, widths[i + 2])
                    psi = views[i][2].reshape(batch, n)
                    psi[:, :m] = (act.inverse(above) - net.biases[i + 1]) @ self._inverses[i + 1].T

        return coupling

    def _residual(self, views, k, y, batch):
        """Per-sample max over layers of |-r + (1-k) phi + k psi| / |r - y| (y = None: relative to |r|)."""
        act = self.spec.network.activation
        res = np.zeros(batch)
        for i, (r, h, psi) in enumerate(views):
            n = self.spec.widths[i + 1]
            r2, h2, p2 = r.reshape(batch, n), h.reshape(batch, n), psi.reshape(batch, n)
            drift = -r2 + (1 - k[i]) * act.f(h2) + k[i] * p2
            dev = np.linalg.norm(r2 if y is None else r2 - y[i + 1], axis=1)
            num = np.linalg.norm(drift, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                layer = np.where(dev > 0, num / np.where(dev > 0, dev, 1), np.where(num > 0, np.inf, 0.0))
            res = np.maximum(res, layer)
        return res

    def _settle(self, x, target, initial, k, y, phase, on_failure, rtol, relative_to_deviation=True, fwd=None):
        import brian2 as b2

        batch = x.shape[0]
        network, groups, views, coupling = self._build(x, target, initial, k)
        elapsed = 0.0
        res = np.full(batch, np.inf)
        while elapsed < self.max_time:
            network.run(self.check_every * self.spec.tau * b2.second)
            elapsed += self.check_every
            coupling()  # drives at the current rates
            res = self._residual(views, k, y if relative_to_deviation else None, batch)
            if not np.all(np.isfinite(views[-1][0])):
                raise DivergenceError(f"{phase}: " + divergence_message(self.spec, largest_real_eigenvalue(
                    self.spec, x)))
            if np.all(res <= rtol):
                break
        rates = [v[0].reshape(batch, n).copy() for v, n in zip(views, self.spec.widths[1:])]
        state = SteadyState(rates=rates, deviations=[r - yy for r, yy in zip(rates, y[1:])],
                            converged=res <= rtol, residual=res, time=elapsed, target=target,
                            engine=self.name, precise_deviations=False, forward=fwd)
        return finish(state, on_failure, phase, rtol, hint=(
            f"this engine works in absolute rates, whose rounding (~1e-16 |r|) stops residuals of layers whose "
            f"deviation is near 1e-16 of the rates (e.g. gamma^(L-l+1) with gamma = {np.min(self.spec.gamma):g}); "
            "use a larger gamma, a looser rtol, or the fast engine (deviation coordinates)"))

    # ------------------------------------------------------------------ verbs
    def settle_free(self, x, *, rtol: float | None = None, on_failure: str = "raise") -> SteadyState:
        """Free phase from rest (r = 0), no nudge; its fixed point is the forward pass.

        The residual is taken relative to |r_l| here (the deviation from the forward pass is the unknown).
        """
        x, _ = check_batch(self.spec, x)
        fwd = self.spec.network.forward(x)
        k = self.spec.couplings(fwd.derivatives)
        k[-1] = np.zeros_like(k[-1])
        zeros = [np.zeros((x.shape[0], n)) for n in self.spec.widths[1:]]
        return self._settle(x, None, zeros, k, fwd.rates, "free phase", on_failure,
                            1e-12 if rtol is None else rtol, relative_to_deviation=False)

    def settle_nudged(self, x, target, *, rtol: float | None = None, on_failure: str = "raise") -> SteadyState:
        """Nudged phase, starting from the free-phase fixed point (the forward pass)."""
        x, target = check_batch(self.spec, x, target)
        fwd = self.spec.network.forward(x)
        k = self.spec.couplings(fwd.derivatives)
        return self._settle(x, target, fwd.rates[1:], k, fwd.rates, "nudged phase", on_failure,
                            self.rtol if rtol is None else rtol, fwd=fwd)

    def settle_noisy(self, x, target, noise: float, *, duration: float = 200.0, average_from: float = 50.0,
                     seed: int = 0) -> SteadyState:
        """Nudged phase with white noise (Brian2's ``xi``, Euler-Maruyama); readout = time average.

        Same contract as :meth:`FastEngine.settle_noisy` (times in tau); the time step is ``dt``.
        """
        import brian2 as b2

        x, target = check_batch(self.spec, x, target)
        check_noise(noise, duration, average_from)
        b2.seed(seed)
        fwd = self.spec.network.forward(x)
        k = self.spec.couplings(fwd.derivatives)
        network, groups, views, coupling = self._build(x, target, fwd.rates[1:], k, noise)
        tau = self.spec.tau * b2.second
        network.run(average_from * tau)
        sums = [np.zeros_like(v[0]) for v in views]
        count = [0]

        def accumulate():
            for total, v in zip(sums, views):
                total += v[0]
            count[0] += 1

        network.add(b2.NetworkOperation(accumulate, when="end", dt=self.dt * b2.second))
        network.run((duration - average_from) * tau)
        batch = x.shape[0]
        rates = [(t / count[0]).reshape(batch, n) for t, n in zip(sums, self.spec.widths[1:])]
        for v, r in zip(views, rates):
            v[0][:] = r.ravel()
        coupling()
        res = self._residual(views, k, fwd.rates, batch)
        return SteadyState(rates=rates, deviations=[r - y for r, y in zip(rates, fwd.rates[1:])],
                           converged=np.ones(batch, dtype=bool), residual=res, time=float(duration), target=target,
                           engine=self.name, precise_deviations=False, forward=fwd)

    def simulate(self, x, target=None, *, duration: float | None = None, n_points: int = 201,
                 start: str = "free") -> Trajectory:
        """Record r, u and h over ``duration`` seconds (default 30 tau); see FastEngine.simulate."""
        import brian2 as b2

        x, target = check_batch(self.spec, x, target)
        fwd = self.spec.network.forward(x)
        k = self.spec.couplings(fwd.derivatives)
        if start == "free":
            initial = fwd.rates[1:]
            if target is None:
                target = fwd.rates[-1]
        elif start == "rest":
            initial = [np.zeros_like(r) for r in fwd.rates[1:]]
            if target is None:
                k[-1] = np.zeros_like(k[-1])
        else:
            raise ValueError(f"start: expected 'free' or 'rest', got {start!r}")
        duration = 30 * self.spec.tau if duration is None else float(duration)
        network, groups, views, coupling = self._build(x, target, initial, k)
        record_dt = max(self.dt, duration / (n_points - 1))
        monitors = [b2.StateMonitor(g, ["r", "u", "h"], record=True, dt=record_dt * b2.second) for g in groups]
        network.add(*monitors)
        network.run(duration * b2.second)
        batch = x.shape[0]

        def recorded(var):  # (neurons, T) per layer -> (T, batch, n)
            return [np.asarray(getattr(m, var + "_")).T.reshape(-1, batch, n)
                    for m, n in zip(monitors, self.spec.widths[1:])]

        rates, somatic, basal = recorded("r"), recorded("u"), recorded("h")
        dev = [r - y[None] for r, y in zip(rates, fwd.rates[1:])]
        return Trajectory(np.asarray(monitors[0].t_), rates, dev, somatic, basal, engine=self.name)

    def plasticity(self, state: SteadyState, x) -> tuple[list, list]:
        """The local rule (see circuit.plasticity) from absolute rates and potentials."""
        x, _ = check_batch(self.spec, x)
        spec, net, act = self.spec, self.spec.network, self.spec.network.activation
        if np.any(spec.gamma <= 0):
            raise ValueError(f"gamma: the local rule divides by the couplings, expected gamma > 0, "
                             f"got {spec.gamma.tolist()}")
        fwd = state.forward_for(x)
        scales = layer_scales(spec.gamma)
        presynaptic = [x] + state.rates[:-1]
        errors = []
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = presynaptic[i][:, : w.shape[0]] @ w.T + b
            r = state.rates[i]
            e = act.inverse(r) - h if spec.mode == "gait" else fwd.derivatives[i] * (r - act.f(h))
            errors.append(scales[i] * e)
        return updates_from_errors(spec, errors, presynaptic)

    def drift(self, x, rates, target=None):
        raise NotImplementedError("brian2 engine: drift (the vector field at given rates) is offered by the fast "
                                  "engine only; use circuit.make_engine(spec, 'fast').drift")

    def stability(self, x, state: SteadyState | None = None) -> np.ndarray:
        x, _ = check_batch(self.spec, x)
        return largest_real_eigenvalue(self.spec, x, None if state is None else state.rates)


def summed_synapses_network(spec: CircuitSpec, x, target, dt: float | None = None):
    """The plain Brian2 formulation for one sample: dense ``(summed)`` Synapses for both couplings.

    Returns a ``brian2.Network``; used by the benchmark for contrast only.  Forward and
    feedback currents go to separate variables (Brian2 forbids two ``(summed)``
    variables targeting one).
    """
    import brian2 as b2

    net = spec.network
    f, finv = activation_expressions(net.activation)
    x = np.asarray(x, dtype=float).reshape(1, -1)
    fwd = net.forward(x)
    k = spec.couplings(fwd.derivatives)
    dt = (spec.tau / 10 if dt is None else dt) * b2.second
    ns = {"tau": spec.tau * b2.second}
    source = b2.NeuronGroup(spec.widths[0], "r : 1\nu = r : 1\nb : 1", dt=dt, name="input*")
    source.r = x[0]
    groups = [source]
    objects = [source]
    for i, n in enumerate(spec.widths[1:]):
        last = i == spec.depth - 1
        eqs = ("dr/dt = (-r + (1 - k) * phi + k * psi) / tau : 1\n"
               f"phi = {f.replace('h', '(hsyn + b)')} : 1\n"
               f"u = {finv} : 1\n"
               "hsyn : 1\nb : 1 (constant)\nk : 1 (constant)\n"
               + ("psi : 1 (constant)\n" if last else "psi : 1\n"))
        g = b2.NeuronGroup(n, eqs, method="exponential_euler", dt=dt, namespace=ns, name=f"summed_layer_{i + 1}*")
        g.r = fwd.rates[i + 1][0]
        g.b = net.biases[i]
        g.k = k[i][0]
        if last:
            g.psi = np.asarray(target, dtype=float).reshape(-1)
        groups.append(g)
        objects.append(g)
    for i, w in enumerate(net.weights):
        n = w.shape[0]
        ff = b2.Synapses(groups[i], groups[i + 1], "w : 1\nhsyn_post = w * r_pre : 1 (summed)", dt=dt)
        pre, post = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        ff.connect(i=pre.ravel(), j=post.ravel())
        ff.w = w.T.ravel()  # synapse (pre=a, post=c) carries W[c, a]
        objects.append(ff)
        if i >= 1:
            inv = np.linalg.inv(w)
            fb = b2.Synapses(groups[i + 1], groups[i], "winv : 1\npsi_post = winv * (u_pre - b_pre) : 1 (summed)",
                             dt=dt)
            fb.connect(i=pre.ravel(), j=post.ravel())
            fb.winv = inv.T.ravel()  # synapse (pre=a in layer i+1, post=c in layer i) carries W^-1[c, a]
            objects.append(fb)
    return b2.Network(*objects)
