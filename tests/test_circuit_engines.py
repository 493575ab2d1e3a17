"""Engine contract: every engine offers the same verbs, shapes, determinism and errors."""

import numpy as np
import pytest

import circuit
import models
from tests import tolerances as tol
from tests.helpers import random_batch, relative_error

ENGINES = [
    pytest.param(("fast", {}), id="fast"),
    pytest.param(("brian2", {"codegen": "numpy"}), id="brian2-numpy"),
    pytest.param(("brian2", {"codegen": "cython"}), id="brian2-cython", marks=pytest.mark.slow),
]


@pytest.fixture(params=ENGINES)
def engine_factory(request):
    name, options = request.param

    def make(spec, **extra):
        return circuit.make_engine(spec, name, **{**options, **extra})

    make.name = name
    return make


def small_circuit(widths=(8, 8, 6, 4), gamma=1e-2, mode="gait", seed=0):
    net = models.init_network(list(widths), "orthogonal", seed=seed, n_out=3)
    return net, circuit.build_circuit(net, gamma, mode)


def test_free_phase_reproduces_forward_pass(engine_factory):
    net, spec = small_circuit()
    x, _ = random_batch(net, batch=3, seed=1)
    state = engine_factory(spec).settle_free(x)
    assert state.converged.all()
    atol = tol.FREE_PHASE_ATOL if engine_factory.name == "fast" else tol.BRIAN2_FREE_PHASE_ATOL
    for r, y in zip(state.rates, net.forward(x).rates[1:]):
        assert r.shape == y.shape
        assert np.max(np.abs(r - y)) <= atol


@pytest.mark.parametrize("mode", circuit.MODES)
def test_nudged_phase_shapes_residual_and_updates(engine_factory, mode):
    net, spec = small_circuit(mode=mode)
    x, target = random_batch(net, batch=3, seed=2)
    engine = engine_factory(spec)
    state = engine.settle_nudged(x, target)
    assert state.converged.shape == (3,) and state.converged.all()
    assert state.residual.shape == (3,) and np.all(state.residual <= 1e-6)
    assert [r.shape for r in state.rates] == [(3, n) for n in spec.widths[1:]]
    assert state.precise_deviations == (engine_factory.name == "fast")
    dW, db = engine.plasticity(state, x)
    with pytest.raises(ValueError, match="x: expected the input batch this state was settled for"):
        engine.plasticity(state, x + 1.0)
    assert [d.shape for d in dW] == [w.shape for w in net.weights]
    assert [d.shape for d in db] == [b.shape for b in net.biases]
    # deterministic
    again = engine.settle_nudged(x, target)
    assert all(np.array_equal(a, b) for a, b in zip(state.rates, again.rates))


def test_trajectory_shapes_and_end_state(engine_factory):
    net, spec = small_circuit()
    x, target = random_batch(net, batch=2, seed=3)
    engine = engine_factory(spec)
    traj = engine.simulate(x, target, duration=30 * spec.tau, n_points=31)
    T = traj.times.shape[0]
    assert T >= 30 and np.isclose(traj.times[-1], 30 * spec.tau, rtol=0.05)
    for group in (traj.rates, traj.deviations, traj.somatic, traj.basal):
        assert [a.shape for a in group] == [(T, 2, n) for n in spec.widths[1:]]
    settled = circuit.make_engine(spec, "fast").settle_nudged(x, target)
    for d_traj, d_ss in zip(traj.deviations, settled.deviations):
        assert relative_error(d_traj[-1], d_ss) < tol.TRAJECTORY_END_RTOL
    assert np.all(traj.deviations[0][0] == 0) or engine_factory.name == "brian2"


def test_bad_input_is_refused_with_clear_errors(engine_factory):
    net, spec = small_circuit()
    x, target = random_batch(net, batch=2, seed=4)
    engine = engine_factory(spec)
    with pytest.raises(ValueError, match=r"x: expected shape \(any, 8\), got \(2, 7\)"):
        engine.settle_nudged(x[:, :7], target)
    with pytest.raises(ValueError, match=r"target: expected shape \(2, 4\)"):
        engine.settle_nudged(x, target[:, :3])
    bad = x.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="x: expected finite values"):
        engine.settle_free(bad)
    singular = net.copy()
    singular.weights[1][0] = singular.weights[1][1]
    with pytest.raises(models.SingularWeightsError, match=r"weights\[1\] \(layer 2\)"):
        engine_factory(circuit.build_circuit(singular, 1e-2))


@pytest.mark.parametrize("gamma", [-0.1, 0.0, 1.0, 1.5, float("nan")])
def test_couplings_outside_unit_interval_are_refused(gamma):
    net, _ = small_circuit()
    with pytest.raises(ValueError, match=r"gamma: expected values in \(0, 1\)"):
        circuit.build_circuit(net, gamma)
    with pytest.raises(ValueError, match="gamma: expected a number or a sequence of 3 per-layer values"):
        circuit.build_circuit(net, [1e-2, 1e-2])
    with pytest.raises(ValueError, match="mode: expected one of"):
        circuit.build_circuit(net, 1e-2, mode="tp")
    with pytest.raises(ValueError, match="engine: expected one of"):
        circuit.make_engine(circuit.build_circuit(net, 1e-2), "nest")


def test_non_convergence_raises_with_residuals_or_returns_mask():
    net, spec = small_circuit()
    x, target = random_batch(net, batch=3, seed=5)
    engine = circuit.FastEngine(spec, max_sweeps=1)
    with pytest.raises(circuit.ConvergenceError, match="did not settle .* after 1 sweeps") as info:
        engine.settle_nudged(x, target)
    assert info.value.residuals.shape == (3,)
    state = engine.settle_nudged(x, target, on_failure="mask")
    assert state.converged.dtype == bool and not state.converged.any()


def test_fast_engine_factorising_on_two_threads_settles_to_the_same_bits():
    """The layers' LU factorisations side by side (DirectInverse(threads=2)): same LAPACK calls, same steady state."""
    net = models.init_network([10, 10, 10, 10, 4], "orthogonal", seed=1, n_out=4)
    x, target = random_batch(net, batch=5, seed=2)
    spec = circuit.build_circuit(net, 1e-2, "gait")
    one = circuit.FastEngine(spec).settle_nudged(x, target)
    two = circuit.FastEngine(spec, inverse=models.DirectInverse(threads=2)).settle_nudged(x, target)
    assert all(np.array_equal(a, b) for a, b in zip(one.rates, two.rates))
    singular = net.copy()
    singular.weights[2][:, 0] = singular.weights[2][:, 1]
    with pytest.raises(models.SingularWeightsError, match=r"weights\[2\] \(layer 3\)"):
        circuit.FastEngine(circuit.build_circuit(singular, 1e-2, "gait"), inverse=models.DirectInverse(threads=2))


def test_strong_gait_coupling_diverges_with_advice():
    net = models.init_network([6, 6, 6, 6], "xavier", seed=0, n_out=3)
    x, target = random_batch(net, batch=4, seed=0)
    engine = circuit.FastEngine(circuit.build_circuit(net, 0.9, "gait"))
    with pytest.raises(circuit.DivergenceError, match="largest real eigenvalue .* smaller coupling"):
        engine.settle_nudged(x, target)


def test_drift_vanishes_at_both_equilibria_and_is_a_fast_engine_feature():
    net, spec = small_circuit()
    x, target = random_batch(net, batch=2, seed=6)
    fast = circuit.make_engine(spec, "fast")
    free = net.forward(x).rates[1:]
    assert max(np.max(np.abs(d)) for d in fast.drift(x, free)) <= tol.FREE_PHASE_ATOL
    nudged = fast.settle_nudged(x, target)
    for d, r, y in zip(fast.drift(x, nudged.rates, target), nudged.rates, free):
        # absolute rates: the drift is the residual times |r - y|, plus rounding of r (~1e-16 |r|)
        assert np.max(np.abs(d)) <= 1e-9 * np.max(np.abs(r - y)) + 1e-15
    with pytest.raises(NotImplementedError, match="brian2 engine: drift"):
        circuit.make_engine(spec, "brian2").drift(x, free)
