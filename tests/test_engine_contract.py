"""The engine contract (circuit.Engine), checked on every engine: the same verbs and options,
the same units, the same results against independent solutions, and the same errors."""

import inspect
import re

import numpy as np
import pytest
import scipy.linalg

import circuit
import models
from circuit.engine import Engine
from tests import tolerances as tol
from tests.helpers import linear_circuit_system, random_batch, relative_error

ENGINES = [pytest.param("fast", id="fast"), pytest.param("brian2", id="brian2")]
VERBS = ("settle_free", "settle_nudged", "settle_noisy", "simulate", "plasticity", "stability", "drift",
         "settle_rounded", "build")


@pytest.fixture(params=ENGINES)
def engine_name(request):
    return request.param


def small(widths=(8, 8, 6, 4), gamma=1e-2, mode="gait", seed=0, **options):
    net = models.init_network(list(widths), "orthogonal", seed=seed, n_out=3)
    return net, circuit.build_circuit(net, gamma, mode, **options)


def linear_circuit(gamma=0.3):
    """f = identity: the dynamics of d = r - y are linear, tau dd/dt = (M - I) d + n."""
    net = models.init_network([5, 5, 5, 5], "xavier", seed=6, activation="identity", n_out=3)
    x, target = random_batch(net, batch=2, seed=7)
    return net, circuit.build_circuit(net, gamma, "itp"), x, target


def exact_linear_deviations(net, spec, x, target, times):
    """d(t) = (I - e^{(M - I) t / tau}) d*, d* = (I - M)^-1 n: per sample, stacked over layers, (T, batch, L n)."""
    size = net.widths[1] * net.depth
    out = np.zeros((len(times), x.shape[0], size))
    for s, (M, drive) in enumerate(linear_circuit_system(net, spec, x, target)):
        steady = np.linalg.solve(np.eye(size) - M, drive)
        for j, t in enumerate(times):
            out[j, s] = steady - scipy.linalg.expm((M - np.eye(size)) * t / spec.tau) @ steady
    return out


def transient_error(engine, net, spec, x, target, duration, n_points=11):
    traj = engine.simulate(x, target, duration=duration, n_points=n_points)
    exact = exact_linear_deviations(net, spec, x, target, traj.times)
    return np.max(np.abs(np.concatenate(traj.deviations, axis=2) - exact)) / np.max(np.abs(exact))


# ---------------------------------------------------------------- one interface


def test_every_engine_offers_the_same_verbs_with_the_same_options():
    from circuit.brian import Brian2Engine

    for verb in VERBS:
        want = inspect.signature(getattr(Engine, verb)).parameters
        for cls in (circuit.FastEngine, Brian2Engine):
            assert inspect.signature(getattr(cls, verb)).parameters == want, (cls.__name__, verb)
    assert "tol" not in inspect.signature(Engine.settle_free).parameters


def test_missing_features_raise_not_implemented_naming_the_engine_and_the_feature():
    net, spec = small()
    x, target = random_batch(net, batch=2, seed=0)
    fast, brian = circuit.make_engine(spec, "fast"), circuit.make_engine(spec, "brian2")
    with pytest.raises(NotImplementedError, match="fast engine: build .* brian2 engine only"):
        fast.build(x, target)
    with pytest.raises(NotImplementedError, match="brian2 engine: settle_rounded .* fast engine only"):
        brian.settle_rounded(x, target)
    with pytest.raises(NotImplementedError, match="brian2 engine: drift .* fast engine only"):
        brian.drift(x, net.forward(x).rates[1:])


# ---------------------------------------------------------------- results against independent solutions


def test_settle_free_is_the_forward_pass_at_itp_coupling(engine_name):
    net, spec = small(gamma=0.1, mode="itp")
    x, _ = random_batch(net, batch=2, seed=1)
    state = circuit.make_engine(spec, engine_name).settle_free(x)
    atol = tol.FREE_PHASE_ATOL if engine_name == "fast" else tol.BRIAN2_FREE_PHASE_ATOL
    assert state.converged.all() and state.forward is None and state.target is None
    assert max(np.max(np.abs(r - y)) for r, y in zip(state.rates, net.forward(x).rates[1:])) <= atol


@pytest.mark.parametrize("mode", circuit.MODES)
def test_settle_nudged_and_plasticity_follow_the_discrete_rule(engine_name, mode):
    net, spec = small(mode=mode)
    x, target = random_batch(net, batch=3, seed=2)
    engine = circuit.make_engine(spec, engine_name)
    state = engine.settle_nudged(x, target)
    dW, db = engine.plasticity(state, x)
    ref, _ = models.updates(net.weights, net.biases, x, target, mode, gamma=1e-2)
    L = net.depth
    for layer, (a, b) in enumerate(zip(dW, ref), start=1):
        assert relative_error(a, b) <= tol.UPDATE_ERROR_PER_GAMMA * max(L - layer, 1) * 1e-2, (layer, a, b)
    assert [d.shape for d in db] == [b.shape for b in net.biases]
    assert np.all(state.residual[state.converged] <= engine.rtol)
    assert np.isclose(state.time_in_tau * spec.tau, state.time) or np.isnan(state.time)


FEEDBACK = {"perturbed": lambda net: models.perturbed_inverses(net, 1e-3, seed=1),
            "transpose": models.transposed_weights}


@pytest.mark.parametrize("feedback", FEEDBACK)
@pytest.mark.parametrize("mode", circuit.MODES)
def test_plasticity_with_feedback_weights_follows_the_discrete_absolute_form(engine_name, mode, feedback):
    """With feedback Q != W^-1 the local rule reads the absolute form of the targets (Alg. 1 as written with
    Q; docs/imperfect_inverses.md section 3) to first order in gamma, with the bound of the exact case;
    both engines agree on the settled deviations (leaky ReLU, orthogonal weights: Q = W^T is exact up to
    rounding, which the absolute form amplifies by S_l as the circuit does).  Brian2's absolute rates
    resolve the deviations at gamma 1e-2 (at 1e-3 the deepest, ~1e-9 of the rates, are at its rounding floor)."""
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0, n_out=3)
    x, target = random_batch(net, batch=3, seed=2)
    fb = FEEDBACK[feedback](net)
    L = net.depth
    for gamma in (1e-3, 1e-2) if engine_name == "fast" else (1e-2,):
        spec = circuit.build_circuit(net, gamma, mode, feedback=fb)
        engine = circuit.make_engine(spec, engine_name)
        state = engine.settle_nudged(x, target)
        dW, _ = engine.plasticity(state, x)
        ref, _ = models.updates_with_feedback(net, net.forward(x), target, mode, gamma, fb, form="absolute")
        for layer, (a, b) in enumerate(zip(dW, ref), start=1):
            assert relative_error(a, b) <= tol.UPDATE_ERROR_PER_GAMMA * max(L - layer, 1) * gamma, (gamma, layer)
        if engine_name == "brian2":
            fast = circuit.make_engine(spec, "fast").settle_nudged(x, target)
            for a, b in zip(state.deviations, fast.deviations):
                assert relative_error(a, b) <= tol.CROSS_ENGINE_RTOL


def test_max_time_is_the_settle_budget_in_seconds(engine_name):
    """ITP at gamma 0.9 relaxes with a time constant of ~200 tau: a 20-tau budget ends the settle unconverged."""
    net, spec = small(gamma=0.9, mode="itp")
    x, target = random_batch(net, batch=2, seed=2)
    state = circuit.make_engine(spec, engine_name).settle_nudged(x, target, max_time=20 * spec.tau, on_failure="mask")
    assert not state.converged.any() and np.all(state.residual > 1e-6)
    assert 0 < state.time <= 20 * spec.tau * (1 + 1e-9) and state.time_in_tau == pytest.approx(20)


def test_plasticity_needs_the_nudged_state_of_the_same_batch(engine_name):
    net, spec = small()
    x, target = random_batch(net, batch=2, seed=3)
    engine = circuit.make_engine(spec, engine_name)
    with pytest.raises(ValueError, match="state: expected a nudged steady state"):
        engine.plasticity(engine.settle_free(x), x)
    with pytest.raises(ValueError, match="x: expected the input batch this state was settled for"):
        engine.plasticity(engine.settle_nudged(x, target), x[::-1])


def test_simulate_returns_the_states_at_the_returned_times(engine_name):
    """Both engines: t = 0 ... duration, n_points states, the first the starting state."""
    net, spec = small()
    x, target = random_batch(net, batch=2, seed=4)
    engine = circuit.make_engine(spec, engine_name)
    traj = engine.simulate(x, target, duration=0.07, n_points=8)  # 7 tau: 10 steps of 0.1 tau per sample
    assert np.array_equal(traj.times, np.linspace(0.0, 0.07, 8))
    assert np.allclose(traj.times_in_tau, np.linspace(0.0, 7.0, 8), rtol=0, atol=1e-12)
    for group in (traj.rates, traj.deviations, traj.somatic, traj.basal):
        assert [a.shape for a in group] == [(8, 2, n) for n in spec.widths[1:]]
    assert all(np.all(d[0] == 0) for d in traj.deviations)       # from the forward pass
    rest = engine.simulate(x, None, duration=0.05, n_points=3, start="rest")
    assert all(np.all(r[0] == 0) for r in rest.rates)
    assert np.array_equal(rest.times, [0.0, 0.025, 0.05])


def test_transients_of_both_engines_match_the_matrix_exponential(engine_name):
    """A linear circuit's deviations at the returned times against (I - e^{(M - I) t/tau}) d*."""
    net, spec, x, target = linear_circuit()
    engine = circuit.make_engine(spec, engine_name)
    error = transient_error(engine, net, spec, x, target, duration=5 * spec.tau)
    if engine_name == "fast":
        assert error <= tol.LINEAR_TRANSIENT_RTOL
    else:
        assert error <= tol.BRIAN2_TRANSIENT_ERROR_PER_STEP * engine.dt / spec.tau


def test_brian2_transient_error_halves_when_dt_halves():
    """Exponential Euler with drives held over a step: first order in dt."""
    net, spec, x, target = linear_circuit()
    errors = [transient_error(circuit.make_engine(spec, "brian2", dt=dt * spec.tau), net, spec, x, target,
                              duration=5 * spec.tau) for dt in (0.1, 0.05)]
    lo, hi = tol.EULER_HALVING_RATIO
    assert lo <= errors[0] / errors[1] <= hi, errors


def test_simulate_continues_from_a_state(engine_name):
    """simulate(2T) = simulate(T), then simulate(T, initial=its last state); initial= a settled state stays put."""
    net, spec = small(gamma=0.1)
    x, target = random_batch(net, batch=2, seed=5)
    engine = circuit.make_engine(spec, engine_name)
    T = 3 * spec.tau
    whole = engine.simulate(x, target, duration=2 * T, n_points=7)
    first = engine.simulate(x, target, duration=T, n_points=4)
    again = engine.simulate(x, target, duration=T, n_points=4, initial=first)
    for w, a in zip(whole.deviations, again.deviations):
        assert relative_error(a, w[3:]) <= tol.CONTINUATION_RTOL
    from_rates = engine.simulate(x, target, duration=T, n_points=4, initial=[r[-1] for r in first.rates])
    for w, a in zip(whole.deviations, from_rates.deviations):
        assert relative_error(a, w[3:]) <= tol.CONTINUATION_RTOL
    settled = circuit.make_engine(spec, "fast").settle_nudged(x, target)
    stay = engine.simulate(x, target, duration=T, n_points=3, initial=settled)
    for d, s in zip(stay.deviations, settled.deviations):
        assert relative_error(d[-1], s) <= tol.TRAJECTORY_END_RTOL


def test_brian2_build_gives_a_network_to_monitor_and_run_repeatedly():
    import brian2 as b2

    net, spec = small(gamma=0.1)
    x, target = random_batch(net, batch=2, seed=6)
    engine = circuit.make_engine(spec, "brian2")
    built = engine.build(x, target)
    assert isinstance(built.network, b2.Network) and isinstance(built.coupling, b2.NetworkOperation)
    assert [g.N for g in built.layers] == [2 * n for n in spec.widths[1:]]
    monitor = b2.StateMonitor(built.layers[-1], "r", record=True)
    built.network.add(monitor)
    built.network.run(20 * b2.ms)
    built.network.run(10 * b2.ms)
    assert np.allclose(monitor.t_, np.arange(30) * 1e-3)  # the state at the start of each 1 ms step (dt = tau/10)
    traj = engine.simulate(x, target, duration=30 * b2.ms, n_points=4)  # 0, 10, 20, 30 ms
    for r, t in zip(built.rates(), traj.rates):
        assert np.allclose(r, t[-1], rtol=0, atol=1e-14)
    for step, sample in ((10, 1), (20, 2)):
        assert np.allclose(monitor.r_[:, step].reshape(2, -1), traj.rates[-1][sample], rtol=0, atol=1e-14)
    later = engine.build(x, target, initial=traj)  # continues from the trajectory's last state
    assert all(np.allclose(r, t[-1], rtol=0, atol=tol.EPS) for r, t in zip(later.rates(), traj.rates))  # y + (r - y)


# ---------------------------------------------------------------- units


def test_durations_are_seconds_or_brian2_quantities(engine_name):
    from brian2 import ms, mV

    net = models.init_network([6, 6, 4], "orthogonal", seed=0, n_out=2)
    x, target = random_batch(net, batch=1, seed=0)
    spec = circuit.build_circuit(net, 0.1, tau=10 * ms)
    assert spec.tau == 0.01
    engine = circuit.make_engine(spec, engine_name)
    a = engine.simulate(x, target, duration=50 * ms, n_points=3)
    b = engine.simulate(x, target, duration=0.05, n_points=3)
    assert np.array_equal(a.times, b.times) and all(np.array_equal(p, q) for p, q in zip(a.rates, b.rates))
    with pytest.raises(ValueError, match=r"duration: expected a duration > 0 \(seconds, .*\), got 5. \* mvolt, "
                                         "which is not a time"):
        engine.simulate(x, target, duration=5 * mV)
    with pytest.warns(UserWarning, match="tau: 10 s is longer than one second"):
        circuit.build_circuit(net, 0.1, tau=10)


# ---------------------------------------------------------------- bad input


def bad_calls(engine, x, target, tau):
    """(call, message regex): each names the argument, the allowed range and the value got."""
    return [
        (lambda: engine.settle_nudged(x[:0], target[:0]), r"x: expected at least one sample, got an empty array"),
        (lambda: engine.settle_free(x[:0]), r"x: expected at least one sample"),
        (lambda: engine.settle_nudged(x, target, rtol=0), r"rtol: expected a finite number > 0, got 0"),
        (lambda: engine.settle_nudged(x, target, max_time=-1.0), r"max_time: expected a duration > 0 .* got -1"),
        (lambda: engine.settle_nudged(x, target, on_failure="ignore"), r"on_failure: expected one of .* 'ignore'"),
        (lambda: engine.simulate(x, target, duration=0), r"duration: expected a duration > 0 .* got 0"),
        (lambda: engine.simulate(x, target, duration=-0.01), r"duration: expected a duration > 0 .* got -0.01"),
        (lambda: engine.simulate(x, target, n_points=1), r"n_points: expected an integer >= 2, got 1"),
        (lambda: engine.simulate(x, target, n_points=2.5), r"n_points: expected an integer >= 2, got 2.5"),
        (lambda: engine.simulate(x, target, start="middle"), r"start: expected one of \('free', 'rest'\), got"),
        (lambda: engine.simulate(x, target, start="rest", initial=[np.zeros((2, n)) for n in (8, 6, 4)]),
         r"start: expected None together with initial="),
        (lambda: engine.simulate(x, target, initial=[np.zeros((2, 8))] * 3), r"initial\[1\]: expected shape \(2, 6\)"),
        (lambda: engine.simulate(x, target, initial="forward"), r"initial: expected a SteadyState, a Trajectory"),
        (lambda: engine.settle_noisy(x, target, 1e-3, dt=0), r"dt: expected a duration > 0 .* got 0"),
        (lambda: engine.settle_noisy(x, target, 1e-3, dt=-1e-3), r"dt: expected a duration > 0 .* got -0.001"),
        (lambda: engine.settle_noisy(x, target, 1e-3, dt=10 * tau),
         r"dt: expected a step below 2 tau = 0.02 s .*got 0.1"),
        (lambda: engine.settle_noisy(x, target, -1.0), r"noise: expected a finite number >= 0, got -1"),
        (lambda: engine.settle_noisy(x, target, 0.0, duration=10 * tau, average_from=10 * tau),
         r"average_from: expected a time in \[0, duration = 0.1 s\), got 0.1 s"),
    ]


def test_bad_arguments_are_refused_naming_the_argument_the_range_and_the_value(engine_name):
    net, spec = small()
    x, target = random_batch(net, batch=2, seed=7)
    engine = circuit.make_engine(spec, engine_name)
    for call, message in bad_calls(engine, x, target, spec.tau):
        with pytest.raises(models.ValidationError, match=message):
            call()


def test_bad_engine_options_are_refused():
    _, spec = small()
    for options, message in (({"max_sweeps": 0}, r"max_sweeps: expected an integer >= 1, got 0"),
                             ({"rtol": -1e-3}, r"rtol: expected a finite number > 0, got -0.001"),
                             ({"max_time": 0}, r"max_time: expected a duration > 0 .* got 0")):
        with pytest.raises(models.ValidationError, match=message):
            circuit.make_engine(spec, "fast", **options)
    for options, message in (({"check_every": 0}, r"check_every: expected a duration > 0 .* got 0"),
                             ({"dt": 0}, r"dt: expected a duration > 0 .* got 0"),
                             ({"dt": -1e-4}, r"dt: expected a duration > 0 .* got -0.0001"),
                             ({"codegen": "c++"}, r"codegen: expected one of \('numpy', 'cython'\), got 'c\+\+'")):
        with pytest.raises(models.ValidationError, match=message):
            circuit.make_engine(spec, "brian2", **options)


def test_overflowing_inputs_are_reported_as_overflow_not_instability(engine_name):
    net, spec = small()
    x, target = random_batch(net, batch=2, seed=8)
    engine = circuit.make_engine(spec, engine_name)
    with pytest.raises(models.NonFiniteError, match="overflow") as info:
        engine.settle_nudged(x * 1e300, target)
    assert "unstable" not in str(info.value)
    overflow = r"forward pass: .* layer 1 rates are NaN or infinite.*largest \|x\| = 1.8e\+308"
    with pytest.raises(models.NonFiniteError, match=overflow):
        engine.settle_free(np.where(x > 0, np.finfo(float).max, x))


def test_noisy_settle_marks_converged_only_within_its_tolerance(engine_name):
    net, spec = small(gamma=0.1)
    x, target = random_batch(net, batch=2, seed=9)
    engine = circuit.make_engine(spec, engine_name)
    tau = spec.tau
    quiet = engine.settle_noisy(x, target, 0.0, duration=60 * tau, average_from=40 * tau)
    assert quiet.converged.all() and np.all(quiet.residual <= engine.noisy_rtol)
    loud = engine.settle_noisy(x, target, 1e-2, duration=60 * tau, average_from=40 * tau, on_failure="mask")
    assert not loud.converged.any() and np.all(loud.residual > engine.noisy_rtol)
    with pytest.raises(circuit.ConvergenceError, match="noisy settle: 2 of 2 samples did not settle to relative "
                                                       "residual 0.01 .* lengthen the averaging window"):
        engine.settle_noisy(x, target, 1e-2, duration=60 * tau, average_from=40 * tau)
    tight = engine.settle_noisy(x, target, 0.0, duration=60 * tau, average_from=40 * tau, rtol=1e-300,
                                on_failure="mask")
    assert not tight.converged.any()


def test_noisy_settle_with_too_long_euler_steps_says_so(engine_name):
    """dt = 1.9 tau: Euler-Maruyama oscillates on the fast modes of a strongly coupled circuit (2 tau is refused)."""
    net, spec = small(gamma=0.5, mode="itp")
    x, target = random_batch(net, batch=2, seed=7)
    engine = circuit.make_engine(spec, engine_name)
    with pytest.raises(circuit.ConvergenceError, match="noisy settle: 2 of 2 samples did not settle .* the steps dt = "
                                                       "1.9 tau are too long for Euler-Maruyama"):
        engine.settle_noisy(x, target, 0.0, dt=1.9 * spec.tau)


# ---------------------------------------------------------------- failures that name their cause


def test_a_slow_circuit_fails_early_with_advice_that_fits():
    """ITP at gamma 0.99: stable, but its slowest mode needs ~1e5 tau: the settle gives up early, saying why."""
    net = models.init_network([20] * 4, "orthogonal", seed=0, n_out=10)
    x, target = random_batch(net, batch=4, seed=1)
    engine = circuit.FastEngine(circuit.build_circuit(net, 0.99, "itp"))
    with pytest.raises(circuit.ConvergenceError, match="time constant of 2e[+]04 tau .* raise max_time .* smaller "
                                                       "coupling gamma or 'gait' mode") as info:
        engine.settle_nudged(x, target)
    assert "on_failure='mask'" not in str(info.value)  # no sample converged: masking would keep nothing
    spent = float(re.search(r"and ([0-9.]+) tau of dynamics", str(info.value)).group(1))
    assert spent < 2000


def test_brian2_failures_name_slowness_instability_or_rounding():
    net = models.init_network([6] * 4, "orthogonal", seed=0, n_out=3)
    x, target = random_batch(net, batch=2, seed=1)

    def brian(gamma, mode):
        return circuit.make_engine(circuit.build_circuit(net, gamma, mode), "brian2")

    with pytest.raises(circuit.ConvergenceError, match="slowest mode .* raise max_time") as info:
        brian(0.9, "itp").settle_nudged(x, target)
    assert "larger gamma" not in str(info.value)
    with pytest.raises(circuit.DivergenceError, match=r"unstable .* eigenvalue \+.* smaller coupling gamma"):
        brian(0.9, "gait").settle_nudged(x, target)
    with pytest.raises(circuit.ConvergenceError, match="rounding floor of the rates .* larger gamma"):
        brian(1e-4, "gait").settle_nudged(x, target)


def test_float32_circuit_calls_unstable_only_a_positive_eigenvalue():
    net = models.init_network([10] * 4, "xavier", seed=0, n_out=3)
    x, target = random_batch(net, batch=4, seed=0)
    engine = circuit.FastEngine(circuit.build_circuit(net, 0.7, "gait"))
    with pytest.raises(circuit.DivergenceError, match=r"unstable at the escaping state: largest real eigenvalue \+"):
        engine.settle_rounded(x, target, "float32")
