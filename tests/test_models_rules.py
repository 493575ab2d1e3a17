"""The discrete reference checked against theory: finite differences, Eq. 8, Alg. 1, orthogonality."""

import numpy as np
import pytest

import models
from analysis.metrics import loglog_slope
from models import losses
from tests import tolerances as tol
from tests.helpers import cosine, literal_alg1, random_batch, relative_error


def mean_loss(net, x, labels, loss):
    return losses.loss_value(loss, net.forward(x).rates[-1], labels, net.n_out)


@pytest.mark.parametrize("loss", models.LOSSES)
@pytest.mark.parametrize("widths", [[6, 6, 6, 6], [7, 6, 4, 3]])
def test_bp_is_minus_finite_difference_gradient(loss, widths):
    net = models.init_network(widths, "xavier", seed=3, n_out=min(3, widths[-1]))
    rng = np.random.default_rng(1)
    for b in net.biases:
        b[:] = 0.3 * rng.standard_normal(b.shape)
    x = rng.standard_normal((5, widths[0]))
    labels = rng.integers(0, net.n_out, size=5)
    y = net.forward(x).rates[-1]
    target = losses.constructed_target(loss, y, labels, net.n_out)
    dW, db = models.updates(net.weights, net.biases, x, target, "bp")
    for params, directions in ((net.weights, dW), (net.biases, db)):
        for p, d in zip(params, directions):
            fd = np.zeros_like(p)
            for idx in np.ndindex(p.shape):
                old = p[idx]
                p[idx] = old + tol.FD_STEP
                up = mean_loss(net, x, labels, loss)
                p[idx] = old - tol.FD_STEP
                down = mean_loss(net, x, labels, loss)
                p[idx] = old
                fd[idx] = (up - down) / (2 * tol.FD_STEP)
            assert relative_error(d, -fd) < tol.FD_RTOL


def test_gait_matches_bp_with_orthogonal_weights():
    net = models.init_network([60] * 6, "orthogonal", seed=0, n_out=10)  # 4 hidden layers
    x, target = random_batch(net, batch=20, seed=2)
    bp, _ = models.updates(net.weights, net.biases, x, target, "bp")
    for gamma in (1e-3, 1e-4):
        gait, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=gamma)
        for layer, (a, b) in enumerate(zip(gait, bp)):
            assert cosine(a, b) >= tol.GAIT_BP_COSINE, (gamma, layer)


def test_gait_bp_difference_is_proportional_to_gamma():
    """With piecewise-linear f and orthogonal W, GAIT = BP exactly unless an increment
    crosses the kink of the leaky ReLU; that happens with probability O(gamma) per
    sample, so the mean per-sample difference of the error signals is O(gamma)."""
    net = models.init_network([100] * 6, "orthogonal", seed=0, n_out=10)
    x, target = random_batch(net, batch=20000, seed=2)
    fwd = net.forward(x)
    bp = models.bp_error_signals(net, fwd, target)
    gammas = [1e-2, 1e-3, 1e-4]
    errors = []
    for gamma in gammas:
        gait = models.error_signals(models.compute_targets(net, fwd, target, "gait", gamma))
        errors.append([np.mean(np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1))
                       for a, b in zip(gait[:-1], bp[:-1])])
    errors = np.array(errors)
    for layer in range(net.depth - 1):
        assert 0.9 <= loglog_slope(gammas, errors[:, layer]) <= 1.1, errors[:, layer]


def test_linear_networks_eq8_tp_equals_bp_orthogonal_itp_equals_gait():
    widths = [12] * 5
    rng = np.random.default_rng(4)
    for init in ("xavier", "orthogonal"):
        net = models.init_network(widths, init, seed=5, activation="identity")
        for b in net.biases:
            b[:] = 0.1 * rng.standard_normal(b.shape)
        x, target = random_batch(net, batch=9, seed=6)
        kw = dict(activation="identity")
        bp, _ = models.updates(net.weights, net.biases, x, target, "bp", **kw)
        tp, _ = models.updates(net.weights, net.biases, x, target, "tp", **kw)
        for i in range(net.depth):
            F = np.eye(widths[-1])
            for w in net.weights[i + 1:]:
                F = w @ F
            assert relative_error(bp[i], F.T @ F @ tp[i]) < tol.IDENTITY_RTOL  # Eq. 8
            if init == "orthogonal":
                assert relative_error(tp[i], bp[i]) < tol.IDENTITY_RTOL
        itp, _ = models.updates(net.weights, net.biases, x, target, "itp", gamma=1e-2, **kw)
        gait, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=1e-2, **kw)
        for a, b in zip(itp, gait):
            assert relative_error(a, b) < tol.IDENTITY_RTOL
        # f' = 1: GAIT's scaled deviations follow TP's recursion operation for operation, whatever gamma
        # (so a linear GAIT run equals the TP run with the same learning rate bit for bit, as seen in training)
        for a, b in zip(tp, gait):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("rule", ["tp", "itp", "gait"])
def test_scaled_targets_agree_with_literal_alg1(rule):
    net = models.init_network([30, 30, 20, 20, 10], "orthogonal", seed=7, n_out=5)
    x, target = random_batch(net, batch=6, seed=8)
    dW, db = models.updates(net.weights, net.biases, x, target, rule, gamma=1e-2)
    ldW, ldb = literal_alg1(net, x, target, rule, 1e-2)
    for a, b in zip(dW + db, ldW + ldb):
        assert relative_error(a, b) < tol.LITERAL_RTOL


def test_per_layer_gamma_matches_scalar_and_is_used():
    net = models.init_network([20] * 4, "orthogonal", seed=9)
    x, target = random_batch(net, seed=1)
    a, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=1e-3)
    b, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=[1e-3] * 3)
    c, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=[1e-3, 1e-3, 1e-2])
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert relative_error(c[0], a[0]) > 1e-4


def test_deep_network_keeps_precision_where_literal_formula_fails():
    """8 hidden layers, width 100, gamma 1e-4: deviations reach 1e-32 of the rates."""
    net = models.init_network([100] * 10, "orthogonal", seed=11, n_out=10)
    x, target = random_batch(net, batch=16, seed=12)
    bp, _ = models.updates(net.weights, net.biases, x, target, "bp")
    gait, _ = models.updates(net.weights, net.biases, x, target, "gait", gamma=1e-4)
    cos = [cosine(a, b) for a, b in zip(gait, bp)]
    assert min(cos) >= tol.DEEP_GAIT_BP_COSINE, cos
    plain, _ = literal_alg1(net, x, target, "gait", 1e-4)
    plain_cos = [cosine(a, b) for a, b in zip(plain, bp)]
    assert min(abs(c) for c in plain_cos[:3]) < 0.1, plain_cos  # lost to rounding
    # Already with 5 hidden layers at gamma = 1e-3 the literal formula fails.
    net5 = models.init_network([100] * 7, "orthogonal", seed=13, n_out=10)
    x5, t5 = random_batch(net5, batch=16, seed=14)
    bp5, _ = models.updates(net5.weights, net5.biases, x5, t5, "bp")
    plain5, _ = literal_alg1(net5, x5, t5, "gait", 1e-3)
    ours5, _ = models.updates(net5.weights, net5.biases, x5, t5, "gait", gamma=1e-3)
    assert abs(cosine(plain5[0], bp5[0])) < 0.5
    assert min(cosine(a, b) for a, b in zip(ours5, bp5)) >= tol.GAIT_BP_COSINE


def test_auxiliary_units_get_no_update_and_targets_are_exposed():
    net = models.init_network([12, 12, 8, 5, 3], "orthogonal", seed=2, n_out=2)
    x, target = random_batch(net, seed=3)
    fwd = net.forward(x)
    targets = models.compute_targets(net, fwd, target, "gait", 1e-3)
    assert [d.shape for d in targets.deviations] == [(7, 12), (7, 8), (7, 5), (7, 3)]
    for i in range(net.depth - 1):
        n_next = net.weights[i + 1].shape[0]
        assert np.all(targets.deviations[i][:, n_next:] == 0)  # auxiliary units keep forward values
    assert np.all(targets.deviations[-1][:, 2:] == 0)
    dW, _ = models.updates(net.weights, net.biases, x, target, "bp")
    assert np.all(dW[-1][2:] == 0)
    assert np.allclose(targets.targets[-1], target)


@pytest.mark.parametrize("rule", models.RULES)
def test_rule_updates_gives_the_bits_of_the_rule_functions(rule):
    """rule_updates writes backprop()/updates_from_targets() out (to check the error signals): same operations."""
    net = models.init_network([9, 8, 6, 5], "orthogonal", seed=1, n_out=3)
    x, target = random_batch(net, batch=6, seed=2)
    gamma = [0.3, 0.1, 1e-3]
    dW, db, fwd = models.rule_updates(net, x, target, rule, gamma)
    want = models.backprop(net, fwd, target) if rule == "bp" else \
        models.updates_from_targets(net, models.compute_targets(net, fwd, target, rule, gamma))
    assert all(np.array_equal(a, b) for a, b in zip(dW + db, want[0] + want[1]))
    assert all(np.array_equal(a, b) for a, b in zip(models.updates(net.weights, net.biases, x, target, rule, gamma)[0],
                                                    dW))
