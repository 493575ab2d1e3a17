"""Circuits with feedback weights Q_l in place of W_l^-1 (circuit.build_circuit(..., feedback=)).

Oracles: the engines without feedback weights (bit for bit where every entry is the exact inverse),
the dense solve of a linear circuit's steady state and the eigenvalues of its dynamics, the discrete
absolute and difference forms (models.feedback, docs/imperfect_inverses.md section 3), and the other
engine.  The engines against the discrete absolute form in a leaky-ReLU network are in
tests/test_engine_contract.py.
"""

import numpy as np
import pytest

import circuit
import models
from models.errors import DataFormatError, ValidationError
from models.feedback import FeedbackWeights, feedback_targets, perturbed_inverses, reconstruction_errors
from tests import tolerances as tol
from tests.helpers import random_batch, relative_error
from tests.test_feedback import blended, linear_circuit_deviations

ENGINES = ("fast", "brian2")


def same_bits(a, b) -> bool:
    return all(np.array_equal(p, q) for p, q in zip(a, b)) and len(a) == len(b)


@pytest.mark.parametrize("engine_name", ENGINES)
@pytest.mark.parametrize("mode", circuit.MODES)
def test_exact_feedback_entries_are_the_exact_circuit_bit_for_bit(engine_name, mode):
    """No feedback argument, feedback=None, L - 1 None entries and FeedbackWeights of None entries: one
    specification (``spec.feedback`` None), so the same states and plasticity, bit for bit."""
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0, n_out=3)
    x, target = random_batch(net, batch=3, seed=1)
    specs = [circuit.build_circuit(net, 1e-2, mode), circuit.build_circuit(net, 1e-2, mode, feedback=None),
             circuit.build_circuit(net, 1e-2, mode, feedback=[None, None]),
             circuit.build_circuit(net, 1e-2, mode, feedback=FeedbackWeights([None] * 3))]
    results = []
    for spec in specs:
        assert spec.feedback is None
        engine = circuit.make_engine(spec, engine_name)
        state = engine.settle_nudged(x, target)
        dW, db = engine.plasticity(state, x)
        results.append(state.rates + state.deviations + dW + db + engine.settle_free(x).rates)
    for other in results[1:]:
        assert same_bits(results[0], other)


@pytest.mark.parametrize("gamma", [1e-3, 1e-2])
def test_linear_circuit_engines_reach_the_dense_steady_state_with_feedback_q(gamma):
    """f = identity: both engines' free and nudged deviations against the dense solve of d = M d + n with
    feedback blocks k Q (tests.test_feedback.linear_circuit_deviations), and the docs' four first-order
    statements read from the engines' states (free deviation, free signal, nudged signal = absolute form,
    nudged minus free = difference form; docs/imperfect_inverses.md section 3)."""
    net = blended([7, 7, 7, 7], 0.3, activation="identity", seed=3)
    x, target = random_batch(net, batch=3, seed=5)
    fwd = net.forward(x)
    fb = perturbed_inverses(net, 1e-2, seed=6)
    free = linear_circuit_deviations(net, fb, gamma, x, target, nudged=False)
    nudged = linear_circuit_deviations(net, fb, gamma, x, target, nudged=True)
    rho = reconstruction_errors(net, fwd, fb)
    absolute = feedback_targets(net, fwd, target, "gait", gamma, fb, "absolute").deviations
    difference = feedback_targets(net, fwd, target, "gait", gamma, fb, "difference").deviations
    spec = circuit.build_circuit(net, gamma, "gait", feedback=fb)

    def signals(d):  # e_l = u_l - h_l = d_l - W_l d_{l-1} in a linear circuit
        return [d[i] - (d[i - 1] @ net.weights[i].T if i > 0 else 0.0) for i in range(net.depth)]

    for name in ENGINES:
        engine = circuit.make_engine(spec, name)
        state_free, state = engine.settle_free(x), engine.settle_nudged(x, target)
        exact_rtol = (tol.FREE_DEVIATION_RTOL, tol.LINEAR_FIXED_POINT_RTOL) if name == "fast" else \
            (tol.CROSS_ENGINE_RTOL, tol.CROSS_ENGINE_RTOL)
        for got, want in zip(state_free.deviations, free):
            assert relative_error(got, want) <= exact_rtol[0], name
        for got, want in zip(state.deviations, nudged):
            assert relative_error(got, want) <= exact_rtol[1], name
        e_free, e_nudged = signals(state_free.deviations), signals(state.deviations)
        for i in range(net.depth - 1):
            bound = tol.CIRCUIT_LEAK_PER_LAYER * (net.depth - i) * gamma
            assert relative_error(e_free[i] / gamma, rho[i]) <= bound
            assert relative_error(e_nudged[i] / gamma, absolute[i]) <= bound
            assert relative_error((e_nudged[i] - e_free[i]) / gamma, difference[i]) <= bound


def test_stability_uses_the_feedback_weights():
    """The linearised circuit of a linear network is M - I with feedback blocks k Q: its largest real
    eigenvalue, dense, against engine.stability."""
    net = blended([6, 6, 6, 6], 0.3, activation="identity", seed=2)
    x, target = random_batch(net, batch=2, seed=0)
    fb = perturbed_inverses(net, 0.3, seed=1)
    for gamma in (0.05, 0.5):
        spec = circuit.build_circuit(net, gamma, "itp", feedback=fb)
        n, L = 6, net.depth
        M = np.zeros((n * L, n * L))
        for i in range(L):
            if i > 0:
                M[i * n: (i + 1) * n, (i - 1) * n: i * n] = (1 - gamma) * net.weights[i]
            if i < L - 1:
                M[i * n: (i + 1) * n, (i + 1) * n: (i + 2) * n] = gamma * fb.matrices[i + 1]
        want = np.max(np.linalg.eigvals(M - np.eye(n * L)).real)
        exact = circuit.make_engine(circuit.build_circuit(net, gamma, "itp"), "fast").stability(x)
        got = circuit.make_engine(spec, "fast").stability(x)
        assert np.all(np.abs(got - want) <= tol.EIGENVALUE_ATOL)
        assert np.all(np.abs(got - exact) > 100 * tol.EIGENVALUE_ATOL)  # the feedback weights matter


def test_rounded_circuit_applies_the_feedback_weights():
    """settle_rounded("float64") with Q: the absolute rates of the fast engine's nudged state (settled to a
    residual of 1e-13 of the deviations, ~1e-3 of the rates at gamma 0.1), to a few ulps."""
    net = models.init_network([8, 8, 6, 4], "orthogonal", seed=0, n_out=3)
    x, target = random_batch(net, batch=3, seed=4)
    spec = circuit.build_circuit(net, 0.1, "gait", feedback=perturbed_inverses(net, 1e-2, seed=2))
    engine = circuit.FastEngine(spec)
    exact, rounded = engine.settle_nudged(x, target, rtol=1e-13), engine.settle_rounded(x, target, "float64")
    for a, b in zip(rounded.rates, exact.rates):
        assert np.max(np.abs(a - b)) <= tol.ROUNDED_ULPS * tol.EPS * np.max(np.abs(b))


def test_layers_with_feedback_weights_need_no_invertible_weights():
    """A singular W_l is refused where the circuit inverts it, and accepted where Q_l replaces its inverse."""
    net = models.init_network([5, 5, 5], "orthogonal", seed=0)
    net.weights[1][:, 0] = 0.0
    x, target = random_batch(net, batch=2, seed=0)
    with pytest.raises(models.SingularWeightsError, match=r"weights\[1\]"):
        circuit.FastEngine(circuit.build_circuit(net, 1e-2))
    spec = circuit.build_circuit(net, 1e-2, feedback=[np.eye(5)])
    for name in ENGINES:
        assert circuit.make_engine(spec, name).settle_nudged(x, target).converged.all()


def test_feedback_argument_is_validated_naming_what_was_expected():
    net = models.init_network([6, 6, 4, 3], seed=0)
    with pytest.raises(ValidationError, match=r"feedback: expected a models.FeedbackWeights or a sequence of "
                                              r"L - 1 = 2 feedback matrices .* got a list of 3 entries"):
        circuit.build_circuit(net, feedback=[None, None, None])
    with pytest.raises(ValidationError, match=r"feedback: expected .* got ndarray"):
        circuit.build_circuit(net, feedback=np.eye(4))
    with pytest.raises(ValidationError, match=r"feedback\[1\]: expected shape \(3, 3\)"):
        circuit.build_circuit(net, feedback=[None, np.eye(4)])
    with pytest.raises(ValidationError, match=r"feedback: expected 3 entries"):
        circuit.build_circuit(net, feedback=FeedbackWeights([None, np.eye(4)]))


def test_spec_holds_a_read_only_copy_and_describes_the_feedback():
    net = models.init_network([6, 6, 4, 3], "orthogonal", seed=0)
    fb = perturbed_inverses(net, 1e-3, seed=0)
    spec = circuit.build_circuit(net, 1e-2, feedback=fb)
    assert spec.feedback[0] is None and np.array_equal(spec.feedback[1], fb.matrices[1])
    fb.matrices[1][0, 0] += 1.0
    assert not np.array_equal(spec.feedback[1], fb.matrices[1])
    with pytest.raises(ValueError):
        spec.feedback[1][0, 0] = 0.0
    text = spec.describe()
    assert "feedback: weights Q_{l+1} in place of W_{l+1}^-1" in text
    assert "from layer 2, on 4 units through Q_2 (||Q W - I||_2 = 0.001)" in text
    assert "feedback=Q on layers [2, 3]" in repr(spec)
    assert "feedback: exact layer inverses" in circuit.build_circuit(net, 1e-2).describe()
    mixed = circuit.build_circuit(net, 1e-2, feedback=[None, fb.matrices[2]])
    assert [q is None for q in mixed.feedback] == [True, True, False]
    assert mixed.feedback_weights.matrices[1] is None


def test_spec_with_feedback_round_trips_bit_for_bit(tmp_path):
    net = models.init_network([6, 6, 4, 3], "orthogonal", seed=0)
    fb = perturbed_inverses(net, 1e-3, seed=0)
    for feedback in (fb, [None, fb.matrices[2]]):
        spec = circuit.build_circuit(net, [0.1, 0.2, 1e-3], "itp", 0.02, feedback=feedback)
        loaded = circuit.load_spec(circuit.save_spec(tmp_path / "spec.npz", spec))
        assert [q is None for q in loaded.feedback] == [q is None for q in spec.feedback]
        assert all(np.array_equal(a, b) for a, b in zip(loaded.feedback, spec.feedback) if a is not None)
    plain = circuit.save_spec(tmp_path / "plain.npz", circuit.build_circuit(net, 1e-3))
    assert not [k for k in np.load(plain).files if k.startswith("feedback")]
    assert circuit.load_spec(plain).feedback is None
    arrays = dict(np.load(tmp_path / "spec.npz"))
    np.savez(tmp_path / "odd.npz", **arrays, feedback_0=np.eye(6))
    with pytest.raises(DataFormatError, match=r"odd.npz: expected feedback arrays among \['feedback_1', "
                                              r"'feedback_2'\] .* got \['feedback_0'\]"):
        circuit.load_spec(tmp_path / "odd.npz")
    arrays["feedback_2"] = np.eye(4)
    np.savez(tmp_path / "shape.npz", **arrays)
    with pytest.raises(DataFormatError, match=r"shape.npz: feedback\[1\]: expected shape \(3, 3\)"):
        circuit.load_spec(tmp_path / "shape.npz")
