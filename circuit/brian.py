"""The Brian2 engine: NeuronGroups with rate equations generated from the specification.

Each layer l = 1..L is one NeuronGroup of ``batch * n_l`` rate neurons (sample-major)
whose equations (see :func:`equations`) read::

    dr/dt = (-r + (1 - k) * phi + k * psi) / tau : 1
    phi = f(h) : 1          # forward drive from the basal potential
    u = f^-1(r) : 1         # somatic potential
    h : 1                   # basal potential, set by the feedforward coupling
    psi : 1                 # feedback drive (the target at the output), set by the feedback coupling:
                            # W_{l+1}^-1 (u_{l+1} - b_{l+1}), or Q_{l+1} (u_{l+1} - b_{l+1}) with feedback weights
    k : 1 (constant)        # per-unit coupling

The couplings are dense matrix products over the whole batch, computed each time
step in a runtime ``network_operation`` on the groups' own arrays (Brian2's dense
``(summed)`` Synapses cost ~100x more at 784 units; see :func:`summed_synapses_network`,
kept for the benchmark's contrast).  Integration is exponential Euler, exact for the
drives held over a step, so the steady state does not depend on ``dt``; a transient
carries an error first order in ``dt`` (the drives lag by up to one step).

:meth:`Brian2Engine.build` returns these objects (:class:`Brian2Circuit`: the
``brian2.Network``, one NeuronGroup per layer and the coupling) for a user's own
monitors and runs.

This engine works in absolute rates, like a plain Brian2 model: deviations from the
forward pass smaller than ~1e-16 of the rates are lost to rounding (see the
equilibrium experiment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import models
from models.validation import check_choice

from .engine import BLOW_UP, Engine, SettleWatch, escape_error, relative_residual
from .results import SteadyState
from .spec import CircuitSpec
from .units import to_seconds

__all__ = ["Brian2Circuit", "Brian2Engine", "equations", "activation_expressions", "summed_synapses_network"]


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


@dataclass
class Brian2Circuit:
    """A circuit as Brian2 objects, from :meth:`Brian2Engine.build`: add monitors, then ``network.run``.

    Attributes
    ----------
    network : brian2.Network
        Holds the layers and the coupling; ``network.run(100*ms)`` may be called repeatedly.
    layers : list of brian2.NeuronGroup
        Layer l = 1..L at ``layers[l - 1]``: ``batch * n_l`` rate neurons, sample-major (neuron
        ``s * n_l + j`` is unit j of sample s), with the variables r, u, phi, h, psi and k of
        :func:`equations`.
    coupling : brian2.NetworkOperation
        Sets every layer's basal potential h and feedback drive psi from the current rates, at the
        start of each time step.
    batch : int
    widths : tuple
        n_1..n_L.
    """

    network: object
    layers: list
    coupling: object
    batch: int
    widths: tuple

    def rates(self) -> list:
        """The current rates of layers 1..L, [i] of shape (batch, n_{i+1}) (copies)."""
        return [np.asarray(g.r_[:]).reshape(self.batch, n).copy() for g, n in zip(self.layers, self.widths)]


class Brian2Engine(Engine):
    """Runs a :class:`CircuitSpec` in Brian2 (runtime mode; "numpy" or "cython" code generation).

    Parameters
    ----------
    spec : CircuitSpec
    codegen : {"numpy", "cython"}
        Brian2's code-generation target.
    dt : float or brian2.Quantity, optional
        Time step in seconds (default tau / 10).
    rtol : float
        Relative residual at which a settle stops (absolute rates limit what is reachable).
    max_time : float or brian2.Quantity, optional
        Default settle budget in seconds (default 400 tau).
    check_every : float or brian2.Quantity, optional
        Settles are simulated in chunks of this many seconds (default 5 tau), checking the
        residual after each.

    Notes
    -----
    ``simulate`` records the states at ``linspace(0, duration, n_points)``: it steps with the
    largest step <= ``dt`` that divides ``duration / (n_points - 1)``, so every returned state
    is the state at its returned time.  ``settle_noisy`` steps with its own ``dt``.
    """

    name = "brian2"
    precise_deviations = False
    free_rtol = 1e-12
    default_max_time = 400.0

    def __init__(self, spec: CircuitSpec, codegen: str = "numpy", dt=None, rtol: float = 1e-6, max_time=None,
                 check_every=None):
        import brian2  # noqa: F401  (fail early with ImportError if missing)

        super().__init__(spec, rtol, max_time)
        self.codegen = check_choice("codegen", codegen, ("numpy", "cython"))
        self.dt = self._seconds(dt, "dt", 0.1)
        self.check_every = self._seconds(check_every, "check_every", 5.0)
        net = spec.network
        self._inverses = {}  # the feedback matrices: W^-1, or the spec's feedback weights Q
        for i, w in enumerate(net.weights[1:], start=1):
            q = spec.feedback_matrix(i)
            if q is None:
                models.network.lu_checked(i, w)  # refuse singular weights with a clear error
                q = np.linalg.inv(w)
            self._inverses[i] = q

    # ------------------------------------------------------------------ model
    def build(self, x, target=None, initial=None) -> Brian2Circuit:
        """The circuit for a batch as Brian2 objects: a :class:`Brian2Circuit` (network, layers, coupling).

        ``target`` None: the free phase (no nudge at the output); else the output is nudged toward
        it.  ``initial``: the starting state (a SteadyState, a Trajectory's last state or the
        per-layer rates; default the forward pass).  The time step is the engine's ``dt``::

            c = engine.build(x, target)
            monitor = brian2.StateMonitor(c.layers[-1], "r", record=True)
            c.network.add(monitor)
            c.network.run(100 * ms)
        """
        x, target = self.check_batch(x, target)
        fwd = self.forward(x)
        rates = fwd.rates[1:] if initial is None else \
            [y + d for y, d in zip(fwd.rates[1:], self._initial_deviations(initial, x, fwd))]
        circuit, _, _ = self._build(x, target, rates, self.couplings(fwd, nudged=target is not None))
        return circuit

    def _build(self, x, target, initial_rates, k, noise: float | None = None, dt: float | None = None):
        """(Brian2Circuit, per-layer (r, h, psi) arrays of the groups, the coupling function).

        ``noise`` None: exponential Euler; a number (0 included): Euler-Maruyama with that noise.
        """
        import brian2 as b2

        b2.prefs.codegen.target = self.codegen
        spec = self.spec
        batch = x.shape[0]
        dt = (self.dt if dt is None else dt) * b2.second
        eqs = equations(spec, noise or 0.0)
        method = "exponential_euler" if noise is None else "euler"  # Euler-Maruyama for settle_noisy
        groups = []
        for i, n in enumerate(spec.widths[1:]):
            g = b2.NeuronGroup(batch * n, eqs, method=method, dt=dt, namespace={"tau": spec.tau * b2.second},
                               name=f"layer_{i + 1}*")
            g.r = initial_rates[i].ravel()
            g.k = k[i].ravel()
            groups.append(g)
        views = [(g.variables["r"].get_value(), g.variables["h"].get_value(), g.variables["psi"].get_value())
                 for g in groups]
        if target is not None:
            views[-1][2][:] = target.ravel()
        coupling = self._coupling(x, views)
        op = b2.NetworkOperation(coupling, when="start", dt=dt, name="coupling*")
        network = b2.Network(*groups, op)
        return Brian2Circuit(network, groups, op, batch, tuple(spec.widths[1:])), views, coupling

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

    def _rates(self, views, batch):
        return [v[0].reshape(batch, n).copy() for v, n in zip(views, self.spec.widths[1:])]

    def _residual(self, views, k, y, batch):
        """Per-sample max over layers of |-r + (1-k) phi + k psi| / |r - y| (y = None: relative to |r|)."""
        act = self.spec.network.activation
        res = np.zeros(batch)
        for i, (r, h, psi) in enumerate(views):
            n = self.spec.widths[i + 1]
            r2, h2, p2 = r.reshape(batch, n), h.reshape(batch, n), psi.reshape(batch, n)
            drift = -r2 + (1 - k[i]) * act.f(h2) + k[i] * p2
            res = np.maximum(res, relative_residual(drift, r2 if y is None else r2 - y[i + 1]))
        return res

    def _settle(self, x, target, initial, k, fwd, phase, rtol, max_time, stop_early, relative_to_deviation=True):
        """Run in chunks of ``check_every`` until every sample's residual meets ``rtol`` or ``max_time`` passed."""
        import brian2 as b2

        batch = x.shape[0]
        tau = self.spec.tau
        circuit, views, coupling = self._build(x, target, initial, k)
        start = max(max(np.max(np.abs(r)) for r in initial), 1.0)
        watch = SettleWatch(rtol, max_time / tau) if stop_early else None
        elapsed, res = 0.0, np.full(batch, np.inf)
        while elapsed < max_time:
            circuit.network.run(self.check_every * b2.second, namespace={})
            elapsed = float(circuit.network.t / b2.second)
            coupling()  # drives at the current rates
            rates = self._rates(views, batch)
            size = max(np.max(np.abs(r)) for r in rates)
            if not np.isfinite(size) or size > BLOW_UP * start:
                raise escape_error(self, phase, x, rates, time_tau=elapsed / tau)
            res = self._residual(views, k, fwd.rates if relative_to_deviation else None, batch)
            if np.any(np.isnan(res)):  # the residual overflowed
                raise escape_error(self, phase, x, None)
            if np.all(res <= rtol) or (watch and watch.hopeless(elapsed / tau, float(res.max()))):
                break
        rates = self._rates(views, batch)
        return SteadyState(rates=rates, deviations=[r - yy for r, yy in zip(rates, fwd.rates[1:])],
                           converged=res <= rtol, residual=res, time=elapsed, target=target, engine=self.name,
                           precise_deviations=False, forward=fwd if target is not None else None, tau=tau)

    def _rounding_advice(self) -> str:
        return (f", use a larger gamma (now down to {np.min(self.spec.gamma):g}: deviations ~gamma^(L-l+1) further "
                "above the rounding of the rates), or the fast engine (deviation coordinates)")

    # ------------------------------------------------------------------ verbs
    def _settle_free(self, x, fwd, rtol, max_time, stop_early):
        zeros = [np.zeros((x.shape[0], n)) for n in self.spec.widths[1:]]
        state = self._settle(x, None, zeros, self.couplings(fwd, nudged=False), fwd, "free phase", rtol, max_time,
                             stop_early, relative_to_deviation=False)
        return state, ""

    def _settle_nudged(self, x, target, fwd, rtol, max_time, stop_early):
        state = self._settle(x, target, fwd.rates[1:], self.couplings(fwd), fwd, "nudged phase", rtol, max_time,
                             stop_early)
        return state, ""

    def _settle_noisy(self, x, target, fwd, noise, duration, average_from, dt, rtol, seed):
        """Brian2's ``xi`` (Euler-Maruyama, steps of ``dt``); the average is taken at the end of each step."""
        import brian2 as b2

        b2.seed(seed)
        k = self.couplings(fwd)
        circuit, views, coupling = self._build(x, target, fwd.rates[1:], k, noise, dt=dt)
        if average_from > 0:
            circuit.network.run(average_from * b2.second, namespace={})
        sums = [np.zeros_like(v[0]) for v in views]
        count = [0]

        def accumulate():
            for total, v in zip(sums, views):
                total += v[0]
            count[0] += 1

        circuit.network.add(b2.NetworkOperation(accumulate, when="end", dt=dt * b2.second))
        circuit.network.run((duration - average_from) * b2.second, namespace={})
        batch = x.shape[0]
        rates = [(t / count[0]).reshape(batch, n) for t, n in zip(sums, self.spec.widths[1:])]
        for v, r in zip(views, rates):
            v[0][:] = r.ravel()
        coupling()
        res = self._residual(views, k, fwd.rates, batch)
        res = np.where(np.isnan(res), np.inf, res)  # an unstable step overflows: not converged
        return SteadyState(rates=rates, deviations=[r - y for r, y in zip(rates, fwd.rates[1:])],
                           converged=res <= rtol, residual=res, time=duration, target=target, engine=self.name,
                           precise_deviations=False, forward=fwd, tau=self.spec.tau)

    def _simulate(self, x, target, fwd, times, start, deviations):
        """Samples at ``times``: the step is the largest <= ``dt`` that divides the sampling interval."""
        import brian2 as b2

        if start == "free":
            initial = fwd.rates[1:]
        elif start == "rest":
            initial = [np.zeros_like(r) for r in fwd.rates[1:]]
        else:
            initial = [y + d for y, d in zip(fwd.rates[1:], deviations)]
        interval = times[1] - times[0]
        per_sample = max(1, int(np.ceil(interval / self.dt - 1e-9)))
        dt = interval / per_sample
        circuit, views, _ = self._build(x, target, initial, self.couplings(fwd, nudged=target is not None), dt=dt)
        batch = x.shape[0]
        samples, counter = [], [0]

        def record():  # at the start of a step: the state at the step's time
            if counter[0] % per_sample == 0:
                samples.append(self._rates(views, batch))
            counter[0] += 1

        circuit.network.add(b2.NetworkOperation(record, when="start", dt=dt * b2.second, name="recorder*"))
        circuit.network.run((len(times) - 1) * per_sample * dt * b2.second, namespace={})
        samples.append(self._rates(views, batch))  # the state at t = duration
        rates = [np.stack([s[i] for s in samples]) for i in range(self.spec.depth)]
        return rates, [r - y[None] for r, y in zip(rates, fwd.rates[1:])]

    def _scaled_errors(self, state, x, fwd):
        """From absolute rates and potentials: "gait" ``S_l (u_l - h_l)``, "itp" ``S_l f'(h0_l) (r_l - phi_l)``."""
        net, act = self.spec.network, self.spec.network.activation
        presynaptic = [x] + state.rates[:-1]
        errors = []
        for i, (w, b) in enumerate(zip(net.weights, net.biases)):
            h = presynaptic[i][:, : w.shape[0]] @ w.T + b
            r = state.rates[i]
            e = act.inverse(r) - h if self.spec.mode == "gait" else fwd.derivatives[i] * (r - act.f(h))
            errors.append(self.scales[i] * e)
        return errors


def summed_synapses_network(spec: CircuitSpec, x, target, dt=None):
    """The plain Brian2 formulation for one sample: dense ``(summed)`` Synapses for both couplings.

    ``dt``: the time step in seconds or a Brian2 quantity (default tau / 10).
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
    dt = (spec.tau / 10 if dt is None else to_seconds(dt, "dt")) * b2.second
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
            inv = np.linalg.inv(w) if spec.feedback_matrix(i) is None else spec.feedback_matrix(i)
            fb = b2.Synapses(groups[i + 1], groups[i], "winv : 1\npsi_post = winv * (u_pre - b_pre) : 1 (summed)",
                             dt=dt)
            fb.connect(i=pre.ravel(), j=post.ravel())
            fb.winv = inv.T.ravel()  # synapse (pre=a in layer i+1, post=c in layer i) carries W^-1[c, a]
            objects.append(fb)
    return b2.Network(*objects)
