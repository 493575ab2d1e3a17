"""Training with learned or transposed feedback weights (TrainConfig.feedback, train --feedback).

Oracles: an uninterrupted run (a resumed one equals it bit for bit, learned matrices included), BP
(GAIT with Q = W^T in the difference form is BP: cosine 1), and the feedback's own state.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import CheckpointError, ValidationError
from models.training import FeedbackUpdate, TrainConfig, read_checkpoint, read_update_state, train
from tests import test_training
from tests import tolerances as tol
from tests.test_training import Killed, kill_after

tiny = test_training.tiny  # the fixture: the embedded Fashion-MNIST subset at 7 x 7 pixels

ROOT = Path(__file__).resolve().parents[1]


def config(**kw):
    return TrainConfig(**{"dataset": "tiny", "rule": "gait", "widths": [49, 49, 49, 49, 10], "epochs": 2,
                          "lr": 1e-3, "regulariser": 0.1, "seed": 3, "feedback": "learned", **kw})


def test_learned_feedback_is_checkpointed_and_resumes_bit_identically(tiny, tmp_path):
    """Learned feedback on the embedded data, killed in epoch 2 and resumed: weights, Adam state, learned Q, the
    rule's generator and the records equal the uninterrupted run's, bit for bit."""
    whole = train(config(), tiny, tmp_path / "whole", progress=False)
    with pytest.raises(Killed):
        train(config(), tiny, tmp_path / "resumed", on_batch=lambda e, i, n, loss: e == 2 and kill_after(3)(e, i, n,
                                                                                                          loss))
    meta, arrays = read_checkpoint(tmp_path / "resumed" / "checkpoint.npz")
    assert meta["epoch"] == 1 and read_update_state(meta, arrays)["steps"] == 10
    train(config(), tiny, tmp_path / "resumed", resume=True, progress=False)
    (ma, aa), (mb, ab) = (read_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("whole", "resumed"))
    assert aa.keys() == ab.keys() and {f"update_matrices_{i}" for i in range(3)} <= set(aa)
    for key in aa:
        assert np.array_equal(aa[key], ab[key]), key
    assert ma["update_state"] == mb["update_state"] and ma["history"] == mb["history"]
    state = read_update_state(ma, aa)
    assert state["steps"] == 20 and all(np.array_equal(q, aa[f"update_matrices_{i}"])
                                        for i, q in enumerate(state["matrices"]))
    assert list(csv.DictReader(open(tmp_path / "whole" / "metrics.csv"))) == \
        list(csv.DictReader(open(tmp_path / "resumed" / "metrics.csv")))
    assert whole.summary["feedback_final"]["inverse_error_layer2"] > 0


def test_feedback_records_inverse_errors_and_cosines_per_layer(tiny):
    """Epochs 0..E: ||Q W - I|| for layers 2..L and cosines with BP for layers 1..L.  Learned feedback starts at
    W^T of orthogonal weights (an inverse to rounding); Q = W^T in the difference form is BP up to the kinks its
    increments cross (cosine 1 - O(gamma))."""
    learned = train(config(), tiny, progress=False)
    rows = [r for r in learned.rows if r["split"] == "feedback"]
    metrics = {r["metric"] for r in rows}
    assert metrics == {f"inverse_error_layer{l}" for l in (2, 3, 4)} | {
        f"{kind}cosine_bp_layer{l}" for kind in ("", "exact_") for l in (1, 2, 3, 4)}
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2]
    _, start = learned.series("feedback", "inverse_error_layer2")
    assert start[0] <= tol.IDENTITY_RTOL and np.all(start[1:] > 0)
    transpose = train(config(feedback="transpose"), tiny, progress=False)
    for layer in (1, 2, 3):
        _, cos = transpose.series("feedback", f"cosine_bp_layer{layer}")
        assert np.all(cos >= tol.GAIT_BP_COSINE)
    assert "feedback_final" not in train(config(feedback="exact", epochs=1), tiny, progress=False).summary


def test_a_learned_feedback_checkpoint_needs_its_state(tiny, tmp_path):
    train(config(epochs=1, feedback="transpose"), tiny, tmp_path / "transpose", progress=False)
    with pytest.raises(CheckpointError, match=r"another configuration .*'feedback': \('transpose', 'learned'\)"):
        train(config(), tiny, tmp_path / "transpose", resume=True, progress=False)
    train(config(epochs=1), tiny, tmp_path / "learned", progress=False)
    path = tmp_path / "learned" / "checkpoint.npz"
    meta, arrays = read_checkpoint(path)
    with pytest.raises(CheckpointError, match="holds the state of an update .* that this run does not have"):
        from models.training import _restore_update

        _restore_update(path, meta, arrays, None)
    del meta["update_state"]
    update = FeedbackUpdate(config(), train(config(epochs=1), tiny, progress=False).network, tiny.train_x[:5],
                            tiny.train_y[:5])
    with pytest.raises(CheckpointError, match=r"expected the state of the run's update \(FeedbackUpdate\)"):
        _restore_update(path, meta, arrays, update)


@pytest.mark.parametrize("settings, message", [
    ({"rule": "bp", "regulariser": 0.0}, "feedback: expected 'exact' with rule 'bp'"),
    ({"feedback": "approximate"}, "feedback: expected one of"),
    ({"feedback_lr": 0.0}, "feedback_lr: expected a finite number > 0"),
    ({"feedback": "exact", "feedback_lr": 0.1}, "feedback_lr: expected the default 0.05 with feedback 'exact'"),
    ({"engine": "circuit"}, "feedback: expected 'exact' with rule 'gait' and engine 'circuit'")])
def test_feedback_settings_are_checked(settings, message):
    with pytest.raises(ValidationError, match=message):
        config(**settings)


def test_feedback_supplies_the_updates_so_no_other_update_is_taken(tiny):
    with pytest.raises(ValidationError, match="update: expected None with feedback 'learned'"):
        train(config(), tiny, update=lambda net, x, target, fwd: None, progress=False)


def test_train_command_takes_the_feedback_option(tmp_path):
    result = subprocess.run([sys.executable, "-m", "experiments", "train", "--quick", "--feedback", "transpose",
                             "--widths", "784,784,10", "--epochs", "1", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert {r["metric"] for r in rows if r["split"] == "feedback"} >= {"inverse_error_layer2", "cosine_bp_layer1"}
    bad = subprocess.run([sys.executable, "-m", "experiments", "train", "--quick", "--feedback", "learned",
                          "--feedback-lr", "-1", "--out", str(tmp_path / "bad")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode == 2 and "--feedback-lr: expected a finite number > 0, got -1" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
