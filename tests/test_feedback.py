"""Feedback weights in place of exact inverses (models.feedback), checked against docs/imperfect_inverses.md.

Oracles: the exact rules (bit for bit where the feedback is the exact inverse), BP (the difference form
with Q = W^T), literal transcriptions of the recursions, the first-order formulas of the docs page, a
dense solve of a linear circuit's steady state, and the delta rule's contraction rate.
"""

import numpy as np
import pytest

import models
from analysis.metrics import loglog_slope
from models.errors import NonFiniteError, ValidationError
from models.feedback import (
    FORMS,
    RECONSTRUCTIONS,
    FeedbackWeights,
    LearnedFeedback,
    exact_inverses,
    feedback_targets,
    inverse_errors,
    perturbed_inverses,
    reconstruction_errors,
    transposed_weights,
    updates_with_feedback,
)
from models.training import epoch_order, train_epoch
from tests import tolerances as tol
from tests.helpers import literal_alg1, random_batch, relative_error

NETWORKS = {"square": ([9, 9, 9, 9], 9), "variable_width": ([10, 9, 7, 6], 4)}


def network(kind, init="orthogonal", activation="leaky_relu", seed=2):
    widths, n_out = NETWORKS[kind]
    return models.init_network(widths, init, seed=seed, activation=activation, n_out=n_out)


def blended(widths, alpha, seed=1, activation="leaky_relu"):
    """Orthogonal weights blended with Xavier ones: cond(W) a few units for alpha ~ 0.3."""
    net = models.init_network(widths, "orthogonal", seed=seed, activation=activation)
    rng = np.random.default_rng([seed, 7])
    for w in net.weights:
        w += alpha * models.xavier_normal(w.shape[0], rng)
    return net


# ------------------------------------------------------------------ the exact path is unchanged


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("rule", ["tp", "itp", "gait"])
def test_exact_entries_give_bit_identical_targets_and_updates(kind, rule):
    """FeedbackWeights with every entry None (the exact inverse) is the default path, bit for bit."""
    net = network(kind)
    x, target = random_batch(net, batch=6, seed=3)
    fwd = net.forward(x)
    default = models.compute_targets(net, fwd, target, rule, 1e-3)
    ours = feedback_targets(net, fwd, target, rule, 1e-3, FeedbackWeights([None] * net.depth))
    for a, b in zip(default.scaled_deviations, ours.scaled_deviations):
        assert np.array_equal(a, b)
    dW, db, _ = models.rule_updates(net, x, target, rule, 1e-3)
    dW2, db2, _ = models.rule_updates(net, x, target, rule, 1e-3, inverse=FeedbackWeights([None] * net.depth))
    for a, b in zip(dW + db, dW2 + db2):
        assert np.array_equal(a, b)


def test_training_epoch_with_exact_entries_is_bit_identical():
    """train_epoch takes FeedbackWeights as its `inverse` unchanged; None entries reproduce the default run."""
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((40, 9)), rng.integers(0, 9, 40)
    nets = []
    for inverse in (None, FeedbackWeights([None] * 3, exact=models.DirectInverse(2))):
        net = network("square")
        train_epoch(net, models.Adam.published(1e-3), x, labels, rule="gait", seed=1, epoch=0, batch=8,
                    inverse=inverse)
        nets.append(net)
    for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------ validation


def test_feedback_shapes_are_validated_with_layer_expected_and_got():
    net = network("variable_width")
    good = exact_inverses(net).matrices
    with pytest.raises(ValidationError, match=r"feedback\[2\] \(layer 3\): expected shape \(6, 6\) like "
                                              r"weights\[2\], got \(7, 7\)"):
        FeedbackWeights([None, good[1], np.eye(7)]).check(net)
    with pytest.raises(ValidationError, match=r"feedback\[1\]: expected shape \(3, 3\), got \(3, 4\)"):
        FeedbackWeights([None, np.ones((3, 4))])
    with pytest.raises(ValidationError, match="expected 3 entries .* got 2"):
        FeedbackWeights([None, good[1]]).check(net)
    with pytest.raises(ValidationError, match="expected a list"):
        FeedbackWeights([])
    with pytest.raises(ValidationError, match=r"feedback\[1\]: expected finite values"):
        FeedbackWeights([None, np.full((2, 2), np.nan)])
    x, target = random_batch(net, batch=3, seed=0)
    with pytest.raises(ValidationError, match=r"layer 3\): expected shape \(6, 6\)"):
        models.compute_targets(net, net.forward(x), target, "gait", 1e-3, FeedbackWeights([None, good[1], np.eye(7)]))
    with pytest.raises(ValidationError, match="form: expected one of"):
        feedback_targets(net, net.forward(x), target, "gait", 1e-3, exact_inverses(net), form="literal")


# ------------------------------------------------------------------ perturbed and transposed feedback


@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.1])
def test_perturbed_inverse_has_spectral_relative_error_eps(eps):
    """Q = W^-1 (I + eps E) with ||E||_2 = 1: ||W Q - I||_2 = eps, and for orthogonal W also ||Q W - I||_2."""
    net = network("square")
    fb = perturbed_inverses(net, eps, seed=4)
    assert fb.matrices[0] is None
    for q, w in zip(fb.matrices[1:], net.weights[1:]):
        assert abs(np.linalg.norm(w @ q - np.eye(len(w)), 2) - eps) <= tol.IDENTITY_RTOL
    for err in inverse_errors(net, fb)[1:]:
        assert abs(err - eps) <= tol.IDENTITY_RTOL
    again = perturbed_inverses(net, eps, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(fb.matrices[1:], again.matrices[1:]))


@pytest.mark.parametrize("activation, gamma", [("identity", 0.3), ("leaky_relu", 1e-6)])
def test_difference_form_is_bp_with_q_in_place_of_w_transpose(activation, gamma):
    """Where no increment crosses a kink, the difference form's signals obey e_l = A_l (e_{l+1} Q_{l+1}^T)
    (row form): BP with Q_{l+1} in the place of W_{l+1}^T, whatever gamma.  Q = W^T gives BP itself,
    for weights far from orthogonal."""
    net = models.init_network([8, 8, 8, 8], "xavier", seed=5, activation=activation)
    x, target = random_batch(net, batch=5, seed=6)
    fwd = net.forward(x)
    dW, _ = updates_with_feedback(net, fwd, target, "gait", gamma, transposed_weights(net))
    bp, _ = models.backprop(net, fwd, target)
    for a, b in zip(dW, bp):
        assert relative_error(a, b) <= tol.IDENTITY_RTOL
    fb = perturbed_inverses(net, 0.2, seed=1)
    signals = [None] * net.depth
    signals[-1] = fwd.derivatives[-1] * (target - fwd.rates[-1])
    for i in range(net.depth - 2, -1, -1):
        signals[i] = fwd.derivatives[i] * (signals[i + 1] @ fb.matrices[i + 1].T)
    want, _ = models.updates_from_signals(net, fwd, signals)
    got, _ = updates_with_feedback(net, fwd, target, "gait", gamma, fb)
    for a, b in zip(got, want):
        assert relative_error(a, b) <= tol.IDENTITY_RTOL


def test_transposed_feedback_follows_the_weights():
    net = network("square")
    fb = transposed_weights(net)
    net.weights[2] += 0.5
    assert np.array_equal(fb.matrices[2], net.weights[2].T)


def literal_targets_with_feedback(net, fwd, target, rule, gamma, matrices):
    """Alg. 1 with Q in place of W^-1, as written: t_{l-1} = Q (f^-1((1 - eps) y + eps t) - b) (absolute targets)."""
    f, y, A = net.activation, fwd.rates, fwd.derivatives
    t = [None] * (net.depth + 1)
    t[-1] = target
    for layer in range(net.depth, 1, -1):
        q, b = matrices[layer - 1], net.biases[layer - 1]
        eps = gamma * A[layer - 1] ** 2 if rule == "gait" else (gamma if rule == "itp" else 1.0)
        below = y[layer - 1].copy()
        below[:, : len(q)] = (f.inverse((1 - eps) * y[layer] + eps * t[layer]) - b) @ q.T
        t[layer - 1] = below
    return [tl - yl for tl, yl in zip(t[1:], y[1:])]


@pytest.mark.parametrize("kind", NETWORKS)
@pytest.mark.parametrize("rule", ["tp", "itp", "gait"])
def test_absolute_form_is_alg1_as_written_with_q(kind, rule):
    """The absolute form against a literal transcription (absolute targets; accurate at gamma = 0.1 where
    the deviations are >= 1e-2 of the rates), and with exact inverses against tests.helpers.literal_alg1."""
    net = network(kind)
    x, target = random_batch(net, batch=5, seed=8)
    fwd = net.forward(x)
    fb = perturbed_inverses(net, 1e-3, seed=2)
    ours = feedback_targets(net, fwd, target, rule, 0.1, fb, form="absolute").deviations
    want = literal_targets_with_feedback(net, fwd, target, rule, 0.1, fb.matrices)
    for a, b in zip(ours[:-1], want[:-1]):
        assert relative_error(a, b) <= tol.LITERAL_RTOL
    exact = FeedbackWeights([None] * net.depth)
    dW, db = updates_with_feedback(net, fwd, target, rule, 1e-2, exact, form="absolute")
    dW_lit, db_lit = literal_alg1(net, x, target, rule, 1e-2)
    for a, b in zip(dW + db, dW_lit + db_lit):
        assert relative_error(a, b) <= tol.LITERAL_RTOL


def test_absolute_minus_difference_is_the_amplified_reconstruction_error():
    """Linear network: delta^abs_l - delta^diff_l = S_l rho_l + Q_{l+1} A_{l+1} (delta^abs_{l+1} - delta^diff_{l+1})
    exactly, and its leading term S_l rho_l carries all but O(gamma) of it (docs, section 2)."""
    net = blended([8, 8, 8, 8, 8], 0.3, activation="identity")
    x, target = random_batch(net, batch=6, seed=1)
    fwd = net.forward(x)
    fb = perturbed_inverses(net, 1e-4, seed=3)
    for gamma in (1e-3, 1e-2):
        absolute = feedback_targets(net, fwd, target, "gait", gamma, fb, "absolute")
        difference = feedback_targets(net, fwd, target, "gait", gamma, fb, "difference")
        gap = [a - d for a, d in zip(absolute.scaled_deviations, difference.scaled_deviations)]
        rho = reconstruction_errors(net, fwd, fb)
        S = absolute.scales
        assert np.array_equal(gap[-1], np.zeros_like(gap[-1]))
        for i in range(net.depth - 1):
            above = gap[i + 1] @ fb.matrices[i + 1].T  # A = 1 in a linear network
            assert relative_error(gap[i], S[i] * rho[i] + above) <= tol.IDENTITY_RTOL
            assert relative_error(gap[i], S[i] * rho[i]) <= tol.LEADING_TERM_GAMMAS * gamma


def test_absolute_form_error_grows_like_eps_over_gamma_to_the_layers_above():
    """Update error against exact GAIT: slope 1 in eps, slope -(L - l) in gamma for the absolute form;
    slope 1 in eps and independent of gamma for the difference form (no kinks crossed at these gammas)."""
    net = network("square")
    x, target = random_batch(net, batch=8, seed=4)
    fwd = net.forward(x)
    L = net.depth
    eps_grid, gammas = [1e-9, 1e-8, 1e-7], [1e-4, 1e-3, 1e-2]

    def errors(form, eps, gamma):
        exact, _ = models.updates_from_targets(net, models.compute_targets(net, fwd, target, "gait", gamma))
        dW, _ = updates_with_feedback(net, fwd, target, "gait", gamma, perturbed_inverses(net, eps, seed=0), form)
        return [relative_error(a, b) for a, b in zip(dW, exact)]

    for i in range(L - 1):
        layer = i + 1
        abs_eps = [errors("absolute", e, 1e-3)[i] for e in eps_grid]
        abs_gamma = [errors("absolute", 1e-8, g)[i] for g in gammas]
        diff_eps = [errors("difference", e, 1e-3)[i] for e in eps_grid]
        diff_gamma = [errors("difference", 1e-8, g)[i] for g in gammas]
        assert tol.SLOPE_HIDDEN[0] <= loglog_slope(eps_grid, abs_eps) <= tol.SLOPE_HIDDEN[1]
        assert tol.SLOPE_HIDDEN[0] <= loglog_slope(gammas, abs_gamma) / -(L - layer) <= tol.SLOPE_HIDDEN[1]
        assert tol.SLOPE_HIDDEN[0] <= loglog_slope(eps_grid, diff_eps) <= tol.SLOPE_HIDDEN[1]
        assert max(diff_gamma) - min(diff_gamma) <= tol.IDENTITY_RTOL


# ------------------------------------------------------------------ the circuit's steady state with feedback Q


def linear_circuit_deviations(net, fb, gamma, x, target, nudged):
    """Steady state of the linear circuit (f = identity, GAIT coupling k = gamma) with feedback drive
    psi_l = Q_{l+1} (u_{l+1} - b_{l+1}), by a dense solve of d = M d + n per sample (docs, section 3)."""
    y = net.forward(x).rates
    rho = reconstruction_errors(net, net.forward(x), fb)
    n, L = net.widths[1], net.depth
    k = np.full(L, gamma)
    M = np.zeros((n * L, n * L))
    for i in range(L):
        blk = slice(i * n, (i + 1) * n)
        k_i = k[i] if (i < L - 1 or nudged) else 0.0  # free phase: no nudge at the output
        if i > 0:
            M[blk, (i - 1) * n: i * n] = (1 - k_i) * net.weights[i]
        if i < L - 1:
            M[blk, (i + 1) * n: (i + 2) * n] = k_i * fb.matrices[i + 1]
    rhs = np.concatenate([k[i] * rho[i] for i in range(L - 1)] + [k[-1] * (target - y[L]) if nudged
                                                                   else np.zeros_like(y[L])], axis=1)
    d = np.linalg.solve(np.eye(n * L) - M, rhs.T).T
    return [d[:, i * n: (i + 1) * n] for i in range(L)]


@pytest.mark.parametrize("gamma", [1e-3, 1e-2])
def test_linear_circuit_with_feedback_q_reads_the_absolute_form(gamma):
    """Free phase: d_l = k_l rho_l + W_l d_{l-1} (the offsets of the layers below carried forward, output
    included) and e_l = u_l - h_l = k_l rho_l, to O(k) relative.  Nudged: e_l is k_l (t_l - y_l) of the
    absolute form to O(k); subtracting the free phase's e_l gives the difference form (docs, section 3)."""
    net = blended([7, 7, 7, 7], 0.3, activation="identity", seed=3)
    x, target = random_batch(net, batch=3, seed=5)
    fwd = net.forward(x)
    fb = perturbed_inverses(net, 1e-2, seed=6)
    rho = reconstruction_errors(net, fwd, fb)
    free = linear_circuit_deviations(net, fb, gamma, x, target, nudged=False)
    nudged = linear_circuit_deviations(net, fb, gamma, x, target, nudged=True)

    def signals(d):  # e_l = u_l - h_l = d_l - W_l d_{l-1} in a linear circuit
        return [d[i] - (d[i - 1] @ net.weights[i].T if i > 0 else 0.0) for i in range(net.depth)]

    e_free, e_nudged = signals(free), signals(nudged)
    absolute = feedback_targets(net, fwd, target, "gait", gamma, fb, "absolute").deviations
    difference = feedback_targets(net, fwd, target, "gait", gamma, fb, "difference").deviations
    carried = [gamma * rho[0]]
    for i in range(1, net.depth):
        carried.append(gamma * rho[i] + carried[-1] @ net.weights[i].T)
    for i in range(net.depth):
        bound = tol.CIRCUIT_LEAK_PER_LAYER * (net.depth - i) * gamma
        assert relative_error(free[i], carried[i]) <= bound
        if i == net.depth - 1:
            break
        assert relative_error(e_free[i] / gamma, rho[i]) <= bound
        assert relative_error(e_nudged[i] / gamma, absolute[i]) <= bound
        assert relative_error((e_nudged[i] - e_free[i]) / gamma, difference[i]) <= bound


# ------------------------------------------------------------------ learned feedback


def learning_problem(reconstruct, seed=1):
    net = blended([8, 8, 8, 8], 0.3, seed=seed)
    return net, LearnedFeedback(net, reconstruct=reconstruct, learning_rate=0.05, noise=1.0, seed=0)


def distances(net, learned):
    return [np.linalg.norm(q - np.linalg.inv(w), 2) for q, w in zip(learned.feedback.matrices[1:], net.weights[1:])]


@pytest.mark.parametrize("reconstruct", RECONSTRUCTIONS)
def test_learned_feedback_converges_to_the_inverse_at_the_delta_rules_rate(reconstruct):
    """||Q_l - W_l^-1||_2 never grows (each step multiplies the error by I - lr C / m, a contraction) and
    after K steps is below its start times (1 - lr sigma^2 s_min^2 / mean m)^K, the mean recursion's rate
    in its slowest direction, with a margin for the random product (docs, section 5)."""
    net, learned = learning_problem(reconstruct)
    rng = np.random.default_rng(3)
    start = distances(net, learned)
    previous, mean_m, K = start, np.zeros(net.depth - 1), 600
    for _ in range(K):
        fwd = net.forward(rng.standard_normal((16, 8)))
        learned.learn(net, fwd)
        now = distances(net, learned)
        assert all(a <= b * (1 + tol.IDENTITY_RTOL) for a, b in zip(now, previous))
        previous = now
        for i, w in enumerate(net.weights[1:], start=1):  # E[m] = sigma^2 ||W||_F^2 / n (+ the rates' share)
            data = np.mean((fwd.rates[i] @ w.T) ** 2) if reconstruct == "rates" else 0.0
            mean_m[i - 1] += (np.mean(w * w) * len(w) + data) / K
    for i, w in enumerate(net.weights[1:]):
        s_min = np.linalg.svd(w, compute_uv=False)[-1]
        predicted = (1 - learned.learning_rate * learned.noise**2 * s_min**2 / mean_m[i]) ** K
        assert previous[i] <= tol.DELTA_RULE_MARGIN * predicted * start[i]
        assert previous[i] / np.linalg.norm(np.linalg.inv(w), 2) <= 1e-4  # i.e. learned to 1e-4 relative


def test_exact_inverse_is_a_fixed_point_of_the_feedback_rule():
    net = blended([8, 8, 8], 0.3)
    for reconstruct in RECONSTRUCTIONS:
        learned = LearnedFeedback(net, reconstruct=reconstruct, initial="exact")
        before = [q.copy() for q in learned.feedback.matrices[1:]]
        learned.learn(net, net.forward(np.random.default_rng(0).standard_normal((5, 8))))
        for a, b in zip(learned.feedback.matrices[1:], before):
            assert relative_error(a, b) <= tol.IDENTITY_RTOL


def test_learned_feedback_is_an_update_hook_for_training():
    """Starting from the exact inverse, the hook's first update is exact GAIT's; in train_epoch it takes one
    feedback step per batch and tracks the moving W^-1 with a lag ~ drift / rate: 4x the learning rate,
    ~4x less lag (docs, section 5), far below the error of the feedback kept from the start."""
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((320, 9)), rng.integers(0, 9, 320)
    lags = {}
    for learning_rate in (0.05, 0.2):
        net = network("square")
        hook = LearnedFeedback(net, gamma=1e-3, initial="exact", learning_rate=learning_rate, seed=1)
        xb = x[epoch_order(320, 2, 0)[:8]]
        fwd = net.forward(xb)
        target = models.constructed_target("quadratic", fwd.rates[-1], labels[:8], 9)
        ours = hook(net, xb, target, fwd)
        exact = models.rule_updates(net, xb, target, "gait", 1e-3, fwd=fwd)[:2]
        for a, b in zip(ours[0] + ours[1], exact[0] + exact[1]):
            assert relative_error(a, b) <= tol.IDENTITY_RTOL
        stale = hook.feedback.copy()  # the inverses of the weights before the epoch
        stats = train_epoch(net, models.Adam.published(1e-3), x, labels, rule="gait", seed=2, epoch=0, batch=8,
                            update=hook)
        assert np.isfinite(stats["running_loss"]) and hook.steps == 1 + 320 // 8
        lags[learning_rate] = np.array(hook.inverse_errors(net)[1:])
        assert np.all(lags[learning_rate] < np.array(inverse_errors(net, stale)[1:]) / 2)
    ratio = lags[0.05] / lags[0.2]
    assert np.all((tol.TRACKING_LAG_RATIO[0] <= ratio) & (ratio <= tol.TRACKING_LAG_RATIO[1])), ratio


def test_learned_feedback_made_before_the_network_initialises_on_the_first_batch():
    """The hook can be made before the training loop builds the network (e.g. for models.training.train)."""
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((16, 9)), rng.integers(0, 9, 16)
    runs = []
    for lazy in (True, False):
        net = network("square")
        hook = LearnedFeedback(gamma=[0.5, 1e-2, 1e-3], seed=4) if lazy else \
            LearnedFeedback(net, gamma=[0.5, 1e-2, 1e-3], seed=4)
        train_epoch(net, models.Adam.published(1e-3), x, labels, rule="gait", seed=0, epoch=0, batch=8, update=hook)
        runs.append((net, hook))
    (a, ha), (b, hb) = runs
    assert all(np.array_equal(p, q) for p, q in zip(a.weights + ha.feedback.matrices[1:],
                                                     b.weights + hb.feedback.matrices[1:]))
    fresh = LearnedFeedback(gamma=[0.5, 1e-2, 1e-3])
    fresh.load_state(ha.state())
    assert all(np.array_equal(p, q) for p, q in zip(fresh.feedback.matrices[1:], ha.feedback.matrices[1:]))
    with pytest.raises(ValidationError, match="gamma: expected values in"):
        LearnedFeedback(gamma=2.0)
    with pytest.raises(ValidationError, match="state: the feedback is not initialised yet"):
        LearnedFeedback().state()


def test_learned_feedback_state_resumes_exactly():
    net, a = learning_problem("perturbation")
    _, b = learning_problem("perturbation")
    rng = np.random.default_rng(0)
    batches = [net.forward(rng.standard_normal((4, 8))) for _ in range(6)]
    for fwd in batches[:3]:
        a.learn(net, fwd)
    saved = a.state()
    b.load_state(saved)
    for fwd in batches[3:]:
        a.learn(net, fwd)
        b.learn(net, fwd)
    assert all(np.array_equal(p, q) for p, q in zip(a.feedback.matrices[1:], b.feedback.matrices[1:]))
    assert b.steps == a.steps == 6


def test_learned_feedback_arguments_are_validated():
    net = network("square")
    with pytest.raises(ValidationError, match="learning_rate: expected a finite number > 0, got -1"):
        LearnedFeedback(net, learning_rate=-1)
    with pytest.raises(ValidationError, match="reconstruct: expected one of"):
        LearnedFeedback(net, reconstruct="input")
    with pytest.raises(ValidationError, match="initial: expected a feedback matrix for every layer 2..L"):
        LearnedFeedback(net, initial=FeedbackWeights([None] * 3))
    with pytest.raises(ValidationError, match="state: expected 2 feedback matrices"):
        LearnedFeedback(net).load_state({"matrices": [np.eye(9)], "steps": 0, "rng": None})
    learned = LearnedFeedback(net, learning_rate=50.0, noise=1.0)
    rng = np.random.default_rng(0)
    with pytest.raises(NonFiniteError, match=r"feedback\[1\] \(layer 2\): the feedback rule diverged"):
        for _ in range(200):
            learned.learn(net, net.forward(rng.standard_normal((4, 9))))


@pytest.mark.parametrize("form", FORMS)
def test_feedback_targets_accept_per_layer_gamma(form):
    net = network("variable_width")
    x, target = random_batch(net, batch=4, seed=2)
    fwd = net.forward(x)
    exact = models.compute_targets(net, fwd, target, "gait", [0.5, 0.01, 0.02])
    ours = feedback_targets(net, fwd, target, "gait", [0.5, 0.01, 0.02], exact_inverses(net), form)
    assert np.array_equal(exact.scales, ours.scales)
    for a, b in zip(exact.deviations, ours.deviations):
        assert relative_error(a, b) <= tol.LITERAL_RTOL
