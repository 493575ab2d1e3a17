"""Activations, losses, regulariser, Adam and bad input of the discrete reference."""

import re
import warnings

import numpy as np
import pytest

import models
from models import activations, losses
from tests import tolerances as tol
from tests.helpers import random_batch, relative_error


def test_leaky_relu_inverse_derivative_and_exact_increments():
    f = activations.LeakyReLU(0.1)
    h = np.linspace(-3, 3, 61)
    assert np.allclose(f.inverse(f.f(h)), h, rtol=0, atol=1e-15)
    assert np.array_equal(f.derivative(h), np.where(h > 0, 1.0, 0.1))
    # Increments of 1e-30 on O(1) rates: the plain difference is 0, ours is exact.
    y = np.array([0.5, -0.2, 1e-31, -1e-31, 0.0])
    d = np.array([1.0, 1.0, -3.0, 3.0, -1.0])
    scale = 1e30
    got = f.inverse_increment(y, d, scale)
    want = np.array([
        1.0,                                          # positive side: slope 1
        10.0,                                         # negative side: 1 / 0.1
        scale * ((1e-31 - 3e-30) / 0.1 - 1e-31),      # crosses the kink downwards
        scale * ((-1e-31 + 3e-30) - (-1e-31) / 0.1),  # crosses the kink upwards
        -10.0,                                        # from the kink, downwards
    ])
    assert np.allclose(got, want, rtol=1e-12, atol=0)
    assert np.all(f.inverse(y[:2] + d[:2] / scale) - f.inverse(y[:2]) == 0)  # what the plain formula gives
    got_f = f.forward_increment(np.array([2.0, -2.0, 1e-31]), np.array([1.0, 1.0, -3.0]), scale)
    assert np.allclose(got_f, [1.0, 0.1, scale * (0.1 * (1e-31 - 3e-30) - 1e-31)], rtol=1e-12)


def test_activation_errors():
    with pytest.raises(ValueError, match="negative_slope"):
        activations.LeakyReLU(0.0)
    with pytest.raises(ValueError, match="expected 'leaky_relu'"):
        activations.get_activation("tanh")


def test_cross_entropy_constructed_target_and_quadratic_target():
    y = np.array([[1.0, 2.0, 0.5, 7.0]])
    t = losses.constructed_target("quadratic", y, [1], n_out=3)
    assert np.array_equal(t, [[0.0, 1.0, 0.0, 7.0]])
    p = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
    t = losses.constructed_target("cross_entropy", y, [1], n_out=3)
    assert np.allclose(t[0, :3], y[0, :3] - (p - [0, 1, 0]))
    assert t[0, 3] == 7.0
    assert np.isclose(losses.loss_value("cross_entropy", y, [1], 3), -np.log(p[1]))


def test_regulariser_value_and_gradient_against_finite_differences():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 5))
    lam = 0.7
    m = w.T @ w
    assert np.isclose(models.orthogonality_penalty(w, lam), lam * np.sum((m - np.diag(np.diag(m))) ** 2))
    grad = models.orthogonality_gradient(w, lam)
    fd = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += tol.FD_STEP
        wm[idx] -= tol.FD_STEP
        fd[idx] = (models.orthogonality_penalty(wp, lam) - models.orthogonality_penalty(wm, lam)) / (2 * tol.FD_STEP)
    assert relative_error(grad, fd) < tol.FD_RTOL
    q = models.orthogonal(6, rng)
    assert models.orthogonality_penalty(q, 1.0) < 1e-28


@pytest.mark.parametrize("published", [False, True])
def test_adam_against_hand_computed_steps(published):
    opt = models.Adam.published(lr=0.01) if published else models.Adam(lr=0.01)
    p = np.array([1.0, -2.0, 0.5])
    p0 = p.copy()
    d1, d2 = np.array([0.1, -0.2, 0.0]), np.array([0.3, 0.1, -0.5])
    opt.step([p], [d1])
    opt.step([p], [d2])
    b1, b2 = (0.9, 0.99) if published else (0.9, 0.999)
    m = (1 - b1) * (b1 * d1 + d2)
    v = (1 - b2) * (b2 * d1**2 + d2**2)
    m1, v1 = (1 - b1) * d1, (1 - b2) * d1**2
    if published:
        want = p0 + 0.01 * m1 / (np.sqrt(v1) + 1e-8) + 0.01 * m / (np.sqrt(v) + 1e-8)
    else:
        s1 = 0.01 * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + 1e-8)
        s2 = 0.01 * (m / (1 - b1**2)) / (np.sqrt(v / (1 - b2**2)) + 1e-8)
        want = p0 + s1 + s2
    assert np.allclose(p, want, rtol=tol.ADAM_RTOL, atol=0)


def test_bad_input_names_what_was_expected():
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0)
    x, target = random_batch(net)
    W, b = net.weights, net.biases
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, n_0\) with n_0 >= 8 .* got \(7, 5\)"):
        models.updates(W, b, x[:, :5], target, "gait")
    with pytest.raises(ValueError, match=r"x: expected shape \(any, 8\), got \(7, 9\)"):
        net.forward(np.zeros((7, 9)))
    with pytest.raises(ValueError, match=r"target: expected shape \(7, 4\)"):
        models.updates(W, b, x, target[:, :3], "bp")
    with pytest.raises(ValueError, match=r"weights\[1\]: expected a square matrix"):
        models.updates([W[0], W[1][:, :5], W[2]], b, x, target, "bp")
    with pytest.raises(ValueError, match=r"biases\[2\]: expected shape \(4,\)"):
        models.updates(W, [b[0], b[1], np.zeros(3)], x, target, "bp")
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="x: expected finite values, got 1 NaN"):
        models.updates(W, b, bad, target, "bp")
    with pytest.raises(ValueError, match="rule: expected one of"):
        models.updates(W, b, x, target, "dfa")
    with pytest.raises(ValueError, match="gamma: expected values in"):
        models.updates(W, b, x, target, "gait", gamma=0.0)
    with pytest.raises(ValueError, match="gamma: expected a number or a sequence of 3"):
        models.updates(W, b, x, target, "gait", gamma=[1e-3, 1e-3])
    singular = [w.copy() for w in W]
    singular[2][:, 0] = singular[2][:, 1]
    for rule in ("tp", "itp", "gait"):
        with pytest.raises(models.SingularWeightsError, match=r"weights\[2\] \(layer 3\)"):
            models.updates(singular, b, x, target, rule)
    badly = [w.copy() for w in W]
    badly[1][:, 0] = badly[1][:, 1] * (1 + 1e-13)
    with pytest.raises(models.SingularWeightsError, match="reciprocal condition number"):
        models.updates(badly, b, x, target, "gait")
    dW, _ = models.updates(singular, b, x, target, "bp")  # BP needs no inverse
    assert all(np.all(np.isfinite(d)) for d in dW)
    with pytest.raises(ValueError, match="widths must not grow"):
        models.Network([np.eye(3), np.eye(4)], [np.zeros(3), np.zeros(4)], 3)


def test_huge_targets_never_leak_nan():
    net = models.init_network([6, 6, 6], "orthogonal", seed=0)
    x, target = random_batch(net)
    with pytest.raises(ValueError, match="target: expected finite"):
        models.updates(net.weights, net.biases, x, target * np.inf, "gait")


def test_threaded_layer_inverses_give_bit_identical_targets_and_errors():
    """DirectInverse(threads=2) factorises the layers side by side: same LAPACK calls, same bits."""
    net = models.init_network([12, 12, 12, 12, 12], "orthogonal", seed=3, n_out=4)
    x = np.random.default_rng(0).standard_normal((5, 12))
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], np.arange(5) % 4, 4)
    threaded = models.DirectInverse(threads=2)
    for rule in ("tp", "itp", "gait"):
        one = models.compute_targets(net, fwd, target, rule, 1e-3).scaled_deviations
        two = models.compute_targets(net, fwd, target, rule, 1e-3, inverse=threaded).scaled_deviations
        assert all(np.array_equal(a, b) for a, b in zip(one, two))
    # factors prepared for one array are never used for another (a stale prepare falls back to a fresh LU)
    threaded.prepare(net.weights, [1])
    other = net.weights[1] + 0.0
    u = np.ones((2, 12))
    assert np.array_equal(threaded.solve(1, other, u), models.DirectInverse().solve(1, other, u))
    threaded.discard()
    # a singular layer factorised on the pool raises in the caller, naming the layer
    singular = net.copy()
    singular.weights[2][:, 0] = singular.weights[2][:, 1]
    with pytest.raises(models.SingularWeightsError, match=r"weights\[2\] \(layer 3\)"):
        models.compute_targets(singular, singular.forward(x), target, "gait", 1e-3, inverse=threaded)
    with pytest.raises(ValueError, match="threads: expected an integer >= 1, got 0"):
        models.DirectInverse(threads=0)


def test_training_with_factorisations_started_before_the_forward_pass_is_bit_identical():
    """train_epoch starts the LU factorisations before each forward pass; compute_targets finds them under way."""
    from models.training import train_epoch

    rng = np.random.default_rng(4)
    x, labels = rng.standard_normal((40, 12)), rng.integers(0, 4, 40)
    nets = []
    for inverse in (models.DirectInverse(), models.DirectInverse(threads=2), None):
        net = models.init_network([12, 12, 12, 12, 12], "orthogonal", seed=3, n_out=4)
        train_epoch(net, models.Adam.published(1e-3), x, labels, rule="gait", seed=0, epoch=1, batch=8,
                    regulariser=0.1, inverse=inverse)
        nets.append(net)
        assert inverse is None or not inverse._pending  # nothing outlives the epoch
    for net in nets[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(nets[0].weights, net.weights))
    # preparing the same arrays again keeps the factorisations under way; other arrays start afresh
    inverse = models.DirectInverse(threads=2)
    inverse.prepare(nets[0].weights, [3, 2, 1])
    under_way = dict(inverse._pending)
    inverse.prepare(nets[0].weights, [3, 2, 1])
    assert all(inverse._pending[i][1] is under_way[i][1] for i in (3, 2, 1))
    inverse.prepare(nets[1].weights, [3, 2, 1])
    assert all(inverse._pending[i][0] is nets[1].weights[i] for i in (3, 2, 1))
    inverse.discard()


def test_empty_batch_is_refused_on_every_path():
    """No zero updates and NaN bias changes from an empty batch: an error naming the argument."""
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0)
    x, target = random_batch(net)
    empty_x, empty_t = x[:0], target[:0]
    sample = r"expected at least one sample, got an empty array of shape \(0, "
    for rule in models.RULES:
        with pytest.raises(models.ValidationError, match="x: " + sample + r"8\)"):
            models.updates(net.weights, net.biases, empty_x, empty_t, rule)
        with pytest.raises(models.ValidationError, match="x: " + sample):
            models.rule_updates(net, empty_x, empty_t, rule)
        with pytest.raises(models.ValidationError, match=r"target: expected shape \(7, 4\), got \(0, 4\)"):
            models.updates(net.weights, net.biases, x, empty_t, rule)
    with pytest.raises(models.ValidationError, match="x: " + sample):
        net.forward(empty_x)
    fwd = net.forward(x)
    with pytest.raises(models.ValidationError, match=r"target: expected shape \(7, 4\), got \(0, 4\)"):
        models.compute_targets(net, fwd, empty_t, "gait")
    # a forward pass of no samples (built by hand) is refused through its target
    empty_fwd = models.ForwardPass([r[:0] for r in fwd.rates], [h[:0] for h in fwd.preactivations],
                                   [a[:0] for a in fwd.derivatives])
    with pytest.raises(models.ValidationError, match="target: " + sample):
        models.compute_targets(net, empty_fwd, empty_t, "gait")
    with pytest.raises(models.ValidationError, match="target: " + sample):
        models.rule_updates(net, empty_x, empty_t, "bp", fwd=empty_fwd)


@pytest.mark.parametrize("slope", ["0.1", None, True, 0, 0.0, -0.1, 1.5, np.nan, np.inf, [0.1]])
def test_negative_slope_must_be_a_real_number_in_0_1(slope):
    net = models.init_network([6, 6, 4], "orthogonal", seed=0)
    x, target = random_batch(net)
    got = f"got {type(slope).__name__} {slope!r}" if isinstance(slope, (str, bool, list, type(None))) else \
        f"got {slope!r}"
    match = r"negative_slope: expected a real number in \(0, 1\], " + re.escape(got) + ".*invertible"
    with pytest.raises(models.ValidationError, match=match):
        models.updates(net.weights, net.biases, x, target, "gait", negative_slope=slope)
    with pytest.raises(models.ValidationError, match=match):
        activations.LeakyReLU(slope)
    with pytest.raises(models.ValidationError, match=match):
        models.init_network([4, 4], negative_slope=slope)


def test_valid_negative_slopes_are_kept_as_floats():
    assert activations.LeakyReLU(1).negative_slope == 1.0 and isinstance(activations.LeakyReLU(1).negative_slope, float)
    assert activations.get_activation("leaky_relu", np.float64(0.25)) == activations.LeakyReLU(0.25)
    assert activations.get_activation("identity", 0.5) == activations.Identity()


@pytest.mark.parametrize("name", ["tanh", None, 3, "relu"])
def test_activation_names_are_checked(name):
    net = models.init_network([6, 6, 4], "orthogonal", seed=0)
    x, target = random_batch(net)
    got = repr(name) if isinstance(name, str) else f"{type(name).__name__} {name!r}"
    match = r"activation: expected 'leaky_relu' or 'identity' \(alias 'linear'\), or an Activation, got " + \
        re.escape(got)
    with pytest.raises(models.ValidationError, match=match):
        models.updates(net.weights, net.biases, x, target, "bp", activation=name)


@pytest.mark.parametrize("rule", models.RULES)
def test_overflow_raises_non_finite_error_naming_the_stage(rule):
    """Finite inputs too large for float64: an error saying what overflowed and what to do, no warning."""
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0)
    x, target = random_batch(net)
    W, b = net.weights, net.biases
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is reported once, as the error below
        # forward pass finite (|y| ~ 1e200) but the batch means of error times rate overflow
        expected = (rf"updates of rule '{rule}': \d+ of 64 values of dW\[0\] \(layer 1\) are NaN or infinite"
                    r".*largest \|x\| = [\d.]+e\+200.*scale the inputs")
        with pytest.raises(models.NonFiniteError, match=expected):
            models.updates(W, b, x * 1e200, target, rule)
        with pytest.raises(models.NonFiniteError, match=r"forward pass: \d+ of 56 values of the layer 1 rates are "
                                                        r"NaN or infinite.*scale the inputs"):
            models.updates(W, b, np.full_like(x, 1.7e308), target, rule)
        with pytest.raises(models.NonFiniteError, match="forward pass: .*layer 1 rates"):
            net.forward(np.full_like(x, 1.7e308))
        huge = np.full_like(target, 1.7e308) * np.sign(target - net.forward(x).rates[-1])
        stage = "updates" if rule == "bp" else "targets"
        with pytest.raises(models.NonFiniteError, match=rf"{stage} of rule '{rule}': .*largest \|target\| = 1.7e\+308"):
            models.updates(W, b, x, huge, rule)
        if rule != "bp":
            with pytest.raises(models.NonFiniteError, match="scaled target deviations of layer"):
                models.compute_targets(net, net.forward(x), huge, rule)


def test_large_but_finite_updates_are_returned_unchanged():
    """Near the overflow bound (|dW| ~ 1e300) the updates are looked at, found finite and returned as computed."""
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0)
    x, target = random_batch(net)
    deviation = target - net.forward(x).rates[-1]  # O(1), zero on the auxiliary output
    x = x * 1e152
    fwd = net.forward(x)
    target = fwd.rates[-1] + 1e152 * deviation
    for rule in models.RULES:
        dW, db = models.updates(net.weights, net.biases, x, target, rule)
        assert max(np.abs(d).max() for d in dW) > 1e300  # above SAFE_PRODUCT: dW was looked at
        direct = models.backprop(net, fwd, target) if rule == "bp" else \
            models.updates_from_targets(net, models.compute_targets(net, fwd, target, rule))
        assert all(np.array_equal(a, b) for a, b in zip(dW + db, direct[0] + direct[1]))
