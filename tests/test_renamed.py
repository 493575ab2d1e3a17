"""Renamed functions and modules: each former name warns, naming the new one, and gives the new name's results."""

import importlib
import sys

import numpy as np
import pytest

import circuit
import models
import models.regulariser
from models.errors import NonFiniteError
from tests.helpers import random_batch

#: Former name -> (new name, the modules it was importable from): every renamed function.
NEW_NAMES = {
    "compute_updates": ("rule_updates", ("models.rules", "models")),
    "weight_updates": ("updates_from_signals", ("models.rules", "models")),
    "target_updates": ("updates_from_targets", ("models.rules", "models")),
    "batch_mean_updates": ("plasticity_step", ("models.rules", "models")),
    "check_updates_finite": ("check_finite_updates", ("models.rules",)),
    "feedback_updates": ("updates_with_feedback", ("models.feedback", "models")),
    "updates_from_errors": ("steady_state_updates", ("circuit.plasticity",)),
}
RENAMED = [(module, old, new) for old, (new, modules) in NEW_NAMES.items() for module in modules]


def arguments(new: str) -> tuple:
    """Arguments for the function now called ``new``, on a small network with auxiliary units."""
    net = models.init_network([6, 6, 5, 4], "orthogonal", seed=0, n_out=3)
    x, target = random_batch(net, batch=5, seed=1)
    fwd = net.forward(x)
    targets = models.compute_targets(net, fwd, target, "gait", 1e-3)
    signals = models.error_signals(targets)
    if new == "rule_updates":
        return net, x, target, "gait", 1e-3
    if new == "updates_from_signals":
        return net, fwd, signals
    if new == "updates_from_targets":
        return net, targets
    if new == "plasticity_step":
        return signals, fwd.rates, net.weights
    if new == "check_finite_updates":  # updates that overflowed: the check raises
        huge = [np.full_like(e, 1e300) for e in signals]
        dW = [np.full_like(w, np.inf) for w in net.weights]
        return net, "gait", fwd, target, huge, dW, [b.copy() for b in net.biases]
    if new == "updates_with_feedback":
        return net, fwd, target, "gait", 1e-3, models.transposed_weights(net)
    if new == "steady_state_updates":
        return circuit.build_circuit(net, 1e-2, "gait"), signals, fwd.rates[:-1]
    raise AssertionError(new)


def outcome(function, args):
    """The arrays a call returns (flattened), or the type and message of the error it raises."""
    try:
        result = function(*args)
    except NonFiniteError as err:
        return ("raised", type(err), str(err))
    arrays = []

    def flatten(value):
        if isinstance(value, (list, tuple)):
            for v in value:
                flatten(v)
        elif isinstance(value, models.ForwardPass):
            flatten(value.rates)
        else:
            arrays.append(np.asarray(value))

    flatten(result)
    return arrays


def assert_same(a, b):
    if isinstance(a, tuple):
        assert a == b
    else:
        assert len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("module, old, new", RENAMED, ids=[f"{m}.{o}" for m, o, _ in RENAMED])
def test_old_name_warns_naming_the_new_one_and_gives_its_results(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"^{module}\.{old} is deprecated .*0\.3\.0: use {module}\.{new}\b"):
        alias = getattr(mod, old)
    assert alias is getattr(mod, new)
    args = arguments(new)
    with pytest.warns(DeprecationWarning):
        called = outcome(getattr(mod, old), args)
    assert_same(called, outcome(getattr(mod, new), args))


def test_check_finite_updates_passes_finite_updates_under_both_names():
    net, rule, fwd, target, _, _, _ = arguments("check_finite_updates")
    signals = models.error_signals(models.compute_targets(net, fwd, target, rule, 1e-3))
    dW, db = models.updates_from_signals(net, fwd, signals)
    with pytest.warns(DeprecationWarning, match="check_finite_updates"):
        old = models.rules.check_updates_finite
    assert old(net, rule, fwd, target, signals, dW, db) is None
    assert models.rules.check_finite_updates(net, rule, fwd, target, signals, dW, db) is None


def test_old_name_imported_with_from_warns_at_the_importing_line():
    with pytest.warns(DeprecationWarning, match=r"use models\.rules\.rule_updates") as record:
        from models.rules import compute_updates
    assert compute_updates is models.rules.rule_updates
    assert record[0].filename == __file__


@pytest.mark.parametrize("module, name", [("models", "check_updates_finite"), ("models", "no_such_name"),
                                          ("models.rules", "no_such_name"), ("circuit.plasticity", "no_such_name")])
def test_names_that_were_never_there_still_raise_attribute_error(module, name):
    with pytest.raises(AttributeError, match=rf"module '{module}' has no attribute '{name}'"):
        getattr(importlib.import_module(module), name)


def test_old_names_are_left_out_of_the_public_names():
    for module, old, new in RENAMED:
        public = importlib.import_module(module).__all__
        assert old not in public and (new in public or new == "check_finite_updates")


def test_regularizer_module_warns_on_import_and_is_the_regulariser(monkeypatch):
    monkeypatch.delitem(sys.modules, "models.regularizer", raising=False)
    monkeypatch.delattr(models, "regularizer", raising=False)
    with pytest.warns(DeprecationWarning, match=r"^models\.regularizer is deprecated .*: use models\.regulariser\b") \
            as record:
        import models.regularizer as old
    assert record[0].filename == __file__
    new = models.regulariser
    assert old.__all__ == new.__all__
    assert all(getattr(old, name) is getattr(new, name) for name in new.__all__)
    assert old._off_diagonal_gram is new._off_diagonal_gram  # private helpers too
    w = np.random.default_rng(0).standard_normal((6, 6))
    assert np.array_equal(old.orthogonality_gradient(w, 0.1), new.orthogonality_gradient(w, 0.1))
    assert old.orthogonality_penalty(w, 0.1) == new.orthogonality_penalty(w, 0.1)
