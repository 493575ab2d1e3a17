"""The circuit checked against the discrete reference (models/), an analytic linear fixed
point, closed-form eigenvalues, and the other engine."""

import numpy as np
import pytest

import circuit
import models
from analysis.metrics import loglog_slope
from circuit.stability import largest_real_eigenvalue
from tests import tolerances as tol
from tests.helpers import linear_circuit_system, random_batch, relative_error


def circuit_updates(net, x, target, gamma, mode="gait", engine="fast"):
    eng = circuit.make_engine(circuit.build_circuit(net, gamma, mode), engine)
    return eng.plasticity(eng.settle_nudged(x, target), x)


@pytest.mark.parametrize("mode", circuit.MODES)
def test_fast_engine_updates_converge_to_discrete_rule_first_order_in_gamma(mode):
    net = models.init_network([40] * 5, "orthogonal", seed=0, n_out=10)  # 4 layers
    x, target = random_batch(net, batch=8, seed=1)
    # Below ~1e-2 no output increment crosses a kink of the leaky ReLU for this batch; a
    # crossing costs O(1) for its unit (probability O(gamma)) and would blur the slope
    # (the equilibrium experiment shows the whole range up to gamma = 0.1).
    gammas = [1e-3, 1e-4, 1e-5]
    errors = []
    for gamma in gammas:
        dW, _ = circuit_updates(net, x, target, gamma, mode)
        ref, _ = models.updates(net.weights, net.biases, x, target, mode, gamma=gamma)
        errors.append([relative_error(a, b) for a, b in zip(dW, ref)])
    errors = np.array(errors)
    if mode == "gait":
        assert np.all(errors[1] <= tol.CIRCUIT_UPDATE_RTOL_AT_1E3), errors[1]
    for layer in range(net.depth - 1):
        lo, hi = tol.SLOPE_HIDDEN
        assert lo <= loglog_slope(gammas, errors[:, layer]) <= hi, errors[:, layer]
    lo, hi = tol.SLOPE_OUTPUT
    assert lo <= loglog_slope(gammas, errors[:, -1]) <= hi, errors[:, -1]


def test_gait_circuit_follows_bp_with_orthogonal_weights():
    net = models.init_network([40] * 5, "orthogonal", seed=0, n_out=10)
    x, target = random_batch(net, batch=8, seed=1)
    dW, _ = circuit_updates(net, x, target, 1e-3)
    bp, _ = models.updates(net.weights, net.biases, x, target, "bp")
    assert all(relative_error(a, b) <= tol.CIRCUIT_UPDATE_RTOL_AT_1E3 for a, b in zip(dW, bp))


def test_variable_width_cross_entropy_and_per_layer_gamma():
    net = models.init_network([30, 30, 20, 12, 6], "orthogonal", seed=4, n_out=4)
    x, _ = random_batch(net, batch=6, seed=5)
    labels = np.arange(6) % 4
    target = models.constructed_target("cross_entropy", net.forward(x).rates[-1], labels, 4)
    gamma = [2e-3, 1e-3, 5e-4, 1e-3]
    dW, db = circuit_updates(net, x, target, gamma)
    ref, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=gamma)
    for a, b in zip(dW, ref):
        assert relative_error(a, b) <= tol.CIRCUIT_UPDATE_RTOL_AT_1E3
    # auxiliary units (no feedback, no target): no update, to rounding
    for i in range(net.depth - 1):
        n_next = net.weights[i + 1].shape[0]
        assert np.max(np.abs(dW[i][n_next:])) <= 1e-12 * np.max(np.abs(dW[i]))
    assert np.max(np.abs(dW[-1][4:])) <= 1e-12 * np.max(np.abs(dW[-1]))


@pytest.mark.parametrize("mode", circuit.MODES)
def test_linear_circuit_matches_analytic_fixed_point(mode):
    """With f = identity the steady state solves (I - M) d = n exactly (a dense solve)."""
    net = models.init_network([7, 7, 7, 7], "xavier", seed=6, activation="identity", n_out=3)
    x, target = random_batch(net, batch=2, seed=7)
    gamma = 0.05
    spec = circuit.build_circuit(net, gamma, mode)
    state = circuit.FastEngine(spec).settle_nudged(x, target)
    n, L = 7, net.depth
    for s, (M, rhs) in enumerate(linear_circuit_system(net, spec, x, target)):
        d = np.linalg.solve(np.eye(n * L) - M, rhs)
        for i in range(L):
            assert relative_error(state.deviations[i][s], d[i * n: (i + 1) * n]) <= tol.LINEAR_FIXED_POINT_RTOL


@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_eigenvalues_of_a_chain_match_closed_form(gamma):
    """One unit per layer, ITP coupling: tridiagonal Jacobian with off-diagonal products
    k(1-k), so lambda_max = -1 + 2 sqrt(k (1 - k)) cos(pi / (L + 1))."""
    L = 4
    net = models.init_network([1] * (L + 1), "orthogonal", seed=0)
    x = np.array([[0.7]])
    lam = largest_real_eigenvalue(circuit.build_circuit(net, gamma, "itp"), x)
    want = -1 + 2 * np.sqrt(gamma * (1 - gamma)) * np.cos(np.pi / (L + 1))
    assert abs(lam[0] - want) <= tol.EIGENVALUE_ATOL


def test_arpack_path_agrees_with_dense(monkeypatch):
    import circuit.stability as stability

    net = models.init_network([12, 12, 10, 8], "xavier", seed=8, n_out=4)
    x, _ = random_batch(net, batch=2, seed=9)
    spec = circuit.build_circuit(net, 0.3, "gait")
    dense = largest_real_eigenvalue(spec, x)
    monkeypatch.setattr(stability, "DENSE_LIMIT", 0)
    sparse = largest_real_eigenvalue(spec, x)
    assert np.allclose(dense, sparse, rtol=0, atol=tol.EIGENVALUE_ATOL)


@pytest.mark.parametrize("mode", circuit.MODES)
def test_brian2_and_fast_engines_agree(mode):
    """Issue requirement: 3 layers, 50 wide, gamma = 1e-2: settled r - y within 1e-3 per layer."""
    net = models.init_network([50] * 4, "orthogonal", seed=10, n_out=10)
    x, target = random_batch(net, batch=4, seed=11)
    spec = circuit.build_circuit(net, 1e-2, mode)
    fast = circuit.make_engine(spec, "fast").settle_nudged(x, target)
    brian = circuit.make_engine(spec, "brian2").settle_nudged(x, target)
    for a, b in zip(fast.deviations, brian.deviations):
        assert relative_error(b, a) <= tol.CROSS_ENGINE_RTOL


def test_noisy_settle_averages_to_the_steady_state_and_noise_error_scales_like_sigma():
    net = models.init_network([10] * 4, "orthogonal", seed=12, n_out=4)
    x, target = random_batch(net, batch=3, seed=13)
    spec = circuit.build_circuit(net, 1e-1, "gait")
    engine = circuit.FastEngine(spec)
    tau = spec.tau
    exact = engine.settle_nudged(x, target)
    quiet = engine.settle_noisy(x, target, 0.0, duration=60 * tau, average_from=40 * tau, dt=0.05 * tau)
    # noiseless Euler-Maruyama is Euler; after 40 tau the transient is gone: same fixed point
    assert max(relative_error(a, b) for a, b in zip(quiet.deviations, exact.deviations)) < 1e-6
    errors = []
    for sigma in (1e-5, 1e-4):
        noisy = engine.settle_noisy(x, target, sigma, duration=240 * tau, average_from=40 * tau, dt=0.05 * tau,
                                    seed=1, on_failure="mask")
        errors.append(relative_error(noisy.deviations[-1], exact.deviations[-1]))
    assert 5 < errors[1] / errors[0] < 20  # linear dynamics: the averaged noise is proportional to sigma


def test_brian2_noise_matches_the_fast_engine_statistically():
    """Same noise strength, different random streams: errors of the same size, both ~ sigma."""
    net = models.init_network([10] * 4, "orthogonal", seed=12, n_out=4)
    x, target = random_batch(net, batch=3, seed=13)
    spec = circuit.build_circuit(net, 1e-1, "gait")
    exact = circuit.FastEngine(spec).settle_nudged(x, target)
    tau = spec.tau
    fast = circuit.FastEngine(spec).settle_noisy(x, target, 1e-4, duration=120 * tau, average_from=20 * tau, seed=2,
                                                 on_failure="mask")
    brian = circuit.make_engine(spec, "brian2", dt=0.05 * tau).settle_noisy(
        x, target, 1e-4, duration=120 * tau, average_from=20 * tau, seed=2, on_failure="mask")
    e_fast = relative_error(fast.deviations[-1], exact.deviations[-1])
    e_brian = relative_error(brian.deviations[-1], exact.deviations[-1])
    assert 0.2 < e_brian / e_fast < 5, (e_fast, e_brian)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rounded_settle_is_the_steady_state_to_rounding_of_the_rates(dtype):
    net = models.init_network([30] * 4, "orthogonal", seed=21, n_out=10)
    x, target = random_batch(net, batch=4, seed=22)
    engine = circuit.FastEngine(circuit.build_circuit(net, 0.1, "gait"))
    exact = engine.settle_nudged(x, target, rtol=1e-14)  # reference to ~1 ulp of the deviations, not 1e-10
    rounded = engine.settle_rounded(x, target, dtype)
    eps = np.finfo(dtype).eps
    assert rounded.converged.all() and rounded.precise_deviations is False
    for a, b, r in zip(rounded.deviations, exact.deviations, exact.rates):
        assert np.max(np.abs(a - b)) <= tol.ROUNDED_ULPS * eps * np.max(np.abs(r))


def test_float32_rates_lose_the_deep_layers_learning_signal_at_small_gamma():
    """Layer 1's deviation ~gamma^3 = 1e-9 is below float32 rounding of O(1) rates; the output's is not."""
    net = models.init_network([30] * 4, "orthogonal", seed=21, n_out=10)
    x, target = random_batch(net, batch=4, seed=22)
    engine = circuit.FastEngine(circuit.build_circuit(net, 1e-3, "gait"))
    exact, _ = engine.plasticity(engine.settle_nudged(x, target), x)
    f32, _ = engine.plasticity(engine.settle_rounded(x, target, "float32"), x)
    f64, _ = engine.plasticity(engine.settle_rounded(x, target, "float64"), x)
    assert relative_error(f32[0], exact[0]) > 0.5
    assert relative_error(f32[-1], exact[-1]) < 1e-3          # ~eps32 / gamma = 1e-4
    assert relative_error(f64[0], exact[0]) < 1e-5            # ~eps64 / gamma^3 = 2e-7
    with pytest.raises(ValueError, match="dtype: expected 'float32' or 'float64'"):
        engine.settle_rounded(x, target, "float16")


def test_a_supplied_forward_pass_gives_the_same_steady_state_and_must_match_the_input():
    net = models.init_network([12] * 4, "orthogonal", seed=5, n_out=4)
    x, target = random_batch(net, batch=3, seed=6)
    engine = circuit.FastEngine(circuit.build_circuit(net, 1e-2, "gait"))
    own = engine.settle_nudged(x, target)
    given = engine.settle_nudged(x, target, forward=net.forward(x))
    assert all(np.array_equal(a, b) for a, b in zip(own.scaled, given.scaled))
    with pytest.raises(ValueError, match="forward: expected the forward pass of this input batch"):
        engine.settle_nudged(x, target, forward=net.forward(x + 1.0))
