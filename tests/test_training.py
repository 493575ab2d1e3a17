"""Training as a library: a run learns and returns its history, checkpoints survive damage, resumes are exact."""

import csv
import errno
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

import models
import models.training as training
from experiments import datasets
from experiments.demo import shrink
from models.errors import CheckpointError, RunDirBusyError, RunExistsError, ValidationError
from models.training import TrainConfig, read_checkpoint, run_dir_lock, train
from tests.tolerances import CIRCUIT_TRAINING_ACCURACY, NOISY_UPDATE_RTOL, UNSETTLED_UPDATE_RTOL

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    data = datasets.load_embedded()
    return datasets.Dataset("tiny", shrink(data.train_x[:600]), data.train_y[:600],
                            shrink(data.test_x[:200]), data.test_y[:200])


def tiny_config(**kw):
    return TrainConfig(**{"dataset": "tiny", "rule": "gait", "widths": [49, 49, 49, 10], "epochs": 2,
                          "lr": 1e-3, "regulariser": 0.1, "seed": 3, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tiny, tmp_path_factory):
    """Three epochs in one go: the reference every resumed run must equal bit for bit."""
    out = tmp_path_factory.mktemp("uninterrupted")
    train(tiny_config(epochs=3), tiny, out, progress=False)
    return out


class Killed(Exception):
    """Stands for the process being killed in the middle of an epoch."""


def kill_after(batches):
    def on_batch(epoch, i, n, running_loss):
        if i + 1 >= batches:
            raise Killed
    return on_batch


def assert_same_run(a: Path, b: Path):
    """Two run directories hold the same weights, Adam state and records, bit for bit."""
    ma, aa = read_checkpoint(a / "checkpoint.npz")
    mb, ab = read_checkpoint(b / "checkpoint.npz")
    assert ma["epoch"] == mb["epoch"] and ma["adam_steps"] == mb["adam_steps"]
    assert aa.keys() == ab.keys()
    for key in aa:
        assert np.array_equal(aa[key], ab[key]), key
    assert list(csv.DictReader(open(a / "metrics.csv"))) == list(csv.DictReader(open(b / "metrics.csv")))


@pytest.mark.parametrize("rule", ["bp", "tp", "itp", "gait"])
def test_training_learns_and_writes_records(tiny, tmp_path, rule):
    from experiments.train import record_run

    result = train(tiny_config(rule=rule, regulariser=0.0 if rule == "bp" else 0.1), tiny, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert {r["split"] for r in rows} == {"train", "test", "train_running"}
    assert [float(r["value"]) for r in rows] == [r["value"] for r in result.rows]  # the same history in memory
    epochs, test_acc = result.series("test", "accuracy")
    assert epochs.tolist() == [0, 1, 2]
    # BP and GAIT learn fast even here; TP learns little in non-linear networks, as the paper
    # reports, but must move off chance.  ITP's updates are nearly orthogonal to BP's in
    # non-linear networks (see the alignment experiment), so only its records are checked.
    if rule != "itp":
        assert result.summary["peak_test_accuracy"] > test_acc[0] + (0.2 if rule in ("bp", "gait") else 0.05)
    assert np.isfinite(result.summary["final_test_accuracy"])
    record_run(result, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["rule"] == rule and summary["provenance"]["git_commit"] is not None
    assert (tmp_path / "learning_curves.png").exists() and (tmp_path / "checkpoint.npz").exists()


def test_training_without_a_directory_writes_nothing_and_returns_the_same_history(tiny, tmp_path, monkeypatch,
                                                                                  uninterrupted):
    monkeypatch.chdir(tmp_path)
    result = train(tiny_config(epochs=3), tiny, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert result.rows == read_checkpoint(uninterrupted / "checkpoint.npz")[0]["history"]
    _, arrays = read_checkpoint(uninterrupted / "checkpoint.npz")
    assert all(np.array_equal(w, arrays[f"w{i}"]) for i, w in enumerate(result.network.weights))


def test_resume_after_kill_is_bit_identical(tiny, tmp_path, uninterrupted):
    cfg = tiny_config(epochs=3)
    with pytest.raises(Killed):
        train(cfg, tiny, tmp_path, on_batch=kill_after(4))           # dies in epoch 1: no checkpoint yet
    assert not (tmp_path / "checkpoint.npz").exists()
    train(tiny_config(epochs=2), tiny, tmp_path, resume=True)         # runs epochs 1-2, checkpoints
    with pytest.raises(Killed):
        train(cfg, tiny, tmp_path, resume=True, on_batch=kill_after(3))  # dies in epoch 3
    train(cfg, tiny, tmp_path, resume=True)                           # finishes epoch 3
    assert_same_run(uninterrupted, tmp_path)


def save_checkpoint_format1(path, cfg, net, opt, epoch, history, times, blas):
    """A checkpoint exactly as the code before checksums and data digests wrote it (format 1)."""
    arrays = {f"w{i}": w for i, w in enumerate(net.weights)}
    arrays.update({f"b{i}": b for i, b in enumerate(net.biases)})
    arrays.update({f"m{i}": m for i, m in enumerate(opt.m)})
    arrays.update({f"v{i}": v for i, v in enumerate(opt.v)})
    config = {k: v for k, v in asdict(cfg).items() if k != "allow_narrow_input"}  # a setting it did not have
    meta = {"config": config, "epoch": epoch, "adam_steps": opt.step_count, "history": history, "times": times,
            "blas_start_threads": blas}
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)


def test_a_checkpoint_of_format_1_resumes_bit_identically(tiny, tmp_path, uninterrupted):
    """Runs started by the code before checksums and data digests continue to the same bits."""
    first = train(tiny_config(epochs=1), tiny, progress=False)
    save_checkpoint_format1(tmp_path / "checkpoint.npz", first.config, first.network, first.optimizer, 1, first.rows,
                            first.epoch_times, training.blas_start_threads())
    train(tiny_config(epochs=3), tiny, tmp_path, resume=True)
    assert_same_run(uninterrupted, tmp_path)
    assert read_checkpoint(tmp_path / "checkpoint.npz")[0]["data_digest"] == training.data_digest(tiny)


def test_resume_refuses_a_different_configuration(tiny, tmp_path):
    train(tiny_config(epochs=1), tiny, tmp_path)
    # a checkpoint written before a setting existed resumes with that setting's default
    ckpt = tmp_path / "checkpoint.npz"
    with np.load(ckpt) as data:
        arrays = {k: data[k] for k in data.files if k != "checksum"}
    meta = json.loads(str(arrays["meta"]))
    del meta["config"]["engine"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(ckpt, **arrays)
    train(tiny_config(epochs=1), tiny, tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="another configuration.*'lr'"):
        train(tiny_config(epochs=2, lr=5e-4), tiny, tmp_path, resume=True)


def test_resume_refuses_other_data(tiny, tmp_path):
    train(tiny_config(epochs=1), tiny, tmp_path)
    other = datasets.Dataset("tiny", tiny.train_x.copy(), tiny.train_y, tiny.test_x, tiny.test_y)
    other.train_x[5, 7] += 1e-12
    with pytest.raises(CheckpointError, match="checkpoint.npz: the checkpoint was trained on other data"):
        train(tiny_config(epochs=2), other, tmp_path, resume=True)
    train(tiny_config(epochs=2), tiny, tmp_path, resume=True)  # the same data resume


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zero(path):
    path.write_bytes(bytes(path.stat().st_size))


def flip_a_weight_bit(path):
    blob = bytearray(path.read_bytes())
    with np.load(path) as f:
        at = blob.find(f["w1"].tobytes()[:64])
    assert at > 0
    blob[at + 20] ^= 0x10
    path.write_bytes(bytes(blob))


def forge_a_weight(path):
    """Change a weight and rewrite the file consistently (valid zip): only the stored checksum can tell."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["w1"][3, 4] = np.nextafter(arrays["w1"][3, 4], 1.0)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", [truncate, zero, flip_a_weight_bit, forge_a_weight], ids=lambda f: f.__name__)
def test_a_damaged_checkpoint_is_named_and_the_previous_one_resumes(tiny, tmp_path, uninterrupted, damage):
    train(tiny_config(epochs=2), tiny, tmp_path, progress=False)
    ckpt, prev = tmp_path / "checkpoint.npz", tmp_path / "checkpoint.prev.npz"
    assert read_checkpoint(prev)[0]["epoch"] == 1
    damage(ckpt)
    with pytest.raises(CheckpointError, match=f"{ckpt}: .*damaged.*{prev} \\(after epoch 1\\) is intact"):
        train(tiny_config(epochs=3), tiny, tmp_path, resume=True)
    prev.replace(ckpt)  # as the message says
    train(tiny_config(epochs=3), tiny, tmp_path, resume=True, progress=False)
    assert_same_run(uninterrupted, tmp_path)


def test_a_failed_checkpoint_write_leaves_the_last_one_and_no_temporary_file(tiny, tmp_path, uninterrupted,
                                                                            monkeypatch):
    train(tiny_config(epochs=1), tiny, tmp_path, progress=False)

    def disk_full(fh, **arrays):
        fh.write(b"PK\x03\x04 part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train(tiny_config(epochs=2), tiny, tmp_path, resume=True, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "checkpoint.npz", "metrics.csv"]
    assert read_checkpoint(tmp_path / "checkpoint.npz")[0]["epoch"] == 1
    train(tiny_config(epochs=3), tiny, tmp_path, resume=True, progress=False)
    assert_same_run(uninterrupted, tmp_path)


def test_a_finished_run_is_never_replaced_unless_asked(tiny, tmp_path):
    train(tiny_config(epochs=1), tiny, tmp_path, progress=False)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    with pytest.raises(RunExistsError, match="already holds a training run.*--resume.*--overwrite"):
        train(tiny_config(epochs=1, seed=4), tiny, tmp_path)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    with pytest.raises(ValidationError, match="resume and overwrite"):
        train(tiny_config(epochs=1, seed=4), tiny, tmp_path, resume=True, overwrite=True)
    result = train(tiny_config(epochs=1, seed=4), tiny, tmp_path, overwrite=True, progress=False)
    meta, _ = read_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["config"]["seed"] == 4 and meta["history"] == result.rows
    assert not (tmp_path / "checkpoint.prev.npz").exists()  # nothing of the old run is left


def test_resume_warns_when_blas_started_differently(tiny, tmp_path, monkeypatch, capsys):
    """The checkpoint records the BLAS threads its process started with; a different start rounds differently."""
    train(tiny_config(epochs=1), tiny, tmp_path)
    monkeypatch.setattr(training, "blas_start_threads", lambda: [7, 7])
    train(tiny_config(epochs=2), tiny, tmp_path, resume=True)
    assert "last bits will differ from an uninterrupted run" in capsys.readouterr().err
    train(tiny_config(epochs=3), tiny, tmp_path, resume=True)  # epoch 2 was written by the [7, 7] process
    assert "last bits will differ" not in capsys.readouterr().err


def test_a_run_directory_is_trained_by_one_process_at_a_time(tiny, tmp_path):
    """A second process in the same directory would overwrite the first one's checkpoints: refused, naming it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom models.training import run_dir_lock\n"
                               "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusyError, match=f"process {holder.pid} holds its lock.*another output directory"):
            train(tiny_config(epochs=1), tiny, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "checkpoint.npz").exists()
    with run_dir_lock(tmp_path):  # the process holding the lock may train there (nested use)
        train(tiny_config(epochs=1), tiny, tmp_path, progress=False)
    assert (tmp_path / "checkpoint.npz").exists()


@pytest.mark.parametrize("settings, field", [
    ({"epochs": 0}, "epochs"), ({"batch": 0}, "batch"), ({"batch": -60}, "batch"), ({"lr": float("nan")}, "lr"),
    ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr"), ({"lr": float("inf")}, "lr"), ({"regulariser": -0.1}, "regulariser"),
    ({"noise": -1.0, "engine": "circuit"}, "noise"), ({"widths": [49, 60, 10]}, "widths"), ({"widths": [49]}, "widths"),
    ({"widths": "49,49"}, "widths"), ({"widths": [49, 0, 10]}, "widths"), ({"rule": "sgd"}, "rule"),
    ({"schedule": "geometric"}, "schedule"), ({"gamma": 0.0}, "gamma"), ({"gamma": 1.5}, "gamma"),
    ({"gamma": 1.0, "engine": "circuit"}, "gamma"), ({"n_out": 11}, "n_out"), ({"seed": -1}, "seed"),
    ({"engine": "analog"}, "engine"), ({"eval_every": 0}, "eval_every"), ({"eval_every": 2.5}, "eval_every")])
def test_a_configuration_checks_itself(settings, field):
    with pytest.raises(ValidationError, match=f"^{field}"):
        tiny_config(**settings)


def test_a_first_layer_narrower_than_the_input_needs_saying_so(tiny):
    with pytest.raises(ValidationError, match="narrower than the input.*only the first 20 of its 49 inputs"):
        tiny_config(widths=[49, 20, 10])
    result = train(tiny_config(widths=[49, 20, 10], allow_narrow_input=True, epochs=1), tiny, progress=False)
    assert result.network.widths == (49, 20, 10)


def test_the_data_are_checked_against_the_configuration(tiny):
    with pytest.raises(ValidationError, match="batch: expected at most the 600 training samples, got 601"):
        train(tiny_config(batch=601), tiny)
    with pytest.raises(ValidationError, match=r"data.train_x: expected shape \(n > 0, 784\)"):
        train(tiny_config(widths=[784, 784, 10]), tiny)
    with pytest.raises(ValidationError, match="data: expected an object with arrays.*without test_x, test_y"):
        train(tiny_config(), {"train_x": tiny.train_x, "train_y": tiny.train_y})
    arrays = {"train_x": tiny.train_x, "train_y": tiny.train_y, "test_x": tiny.test_x, "test_y": tiny.test_y}
    assert train(tiny_config(epochs=1), arrays, progress=False).summary["final_test_accuracy"] > 0.1
    bad = datasets.Dataset("tiny", tiny.train_x, tiny.train_y + 5, tiny.test_x, tiny.test_y)
    with pytest.raises(ValidationError, match=r"data.train_y: expected labels in 0..9"):
        train(tiny_config(), bad)


def test_circuit_engine_training_follows_discrete_gait(tiny):
    """Updates from the circuit's steady state train like discrete GAIT-prop (O(gamma) apart)."""
    import circuit

    with pytest.raises(ValidationError, match="circuit.train"):
        train(tiny_config(epochs=1, gamma=1e-4, engine="circuit"), tiny)
    discrete = circuit.train(tiny_config(epochs=1, gamma=1e-4), tiny, progress=False)
    by_circuit = circuit.train(tiny_config(epochs=1, gamma=1e-4, engine="circuit"), tiny, progress=False)
    gap = by_circuit.summary["final_test_accuracy"] - discrete.summary["final_test_accuracy"]
    assert abs(gap) <= CIRCUIT_TRAINING_ACCURACY
    assert by_circuit.series("train_running", "unsettled_samples")[1].tolist() == [0]
    assert by_circuit.summary["unsettled_samples"] == 0 and "unsettled_samples" not in discrete.summary
    with pytest.raises(ValidationError, match="rule: expected 'gait' or 'itp' with engine 'circuit'"):
        circuit.train(tiny_config(rule="bp", engine="circuit"), tiny)


def test_noisy_circuit_training_is_reproducible_and_needs_the_circuit_engine(tiny):
    """The noise stream follows the batch (so a resumed run stays bit-identical); weak noise barely moves the update."""
    import argparse

    import models
    from circuit.learning import CircuitUpdate
    from experiments.train import add_arguments, config_from_args

    net = models.init_network([49, 49, 49, 10], "orthogonal", seed=0, n_out=10)
    x = tiny.train_x[:60]
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], tiny.train_y[:60], 10)
    noisy = CircuitUpdate(tiny_config(engine="circuit", gamma=0.1, noise=1e-9))
    quiet = CircuitUpdate(tiny_config(engine="circuit", gamma=0.1))
    first, again, exact = noisy(net, x, target, fwd)[0], noisy(net, x, target, fwd)[0], quiet(net, x, target, fwd)[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(0 < np.linalg.norm(a - b) <= NOISY_UPDATE_RTOL * np.linalg.norm(b) for a, b in zip(first, exact))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--quick", action="store_true")
    with pytest.raises(ValidationError, match="^--schedule and --noise: .*--update circuit"):
        config_from_args(parser.parse_args(["--noise", "1e-6"]))


def test_grid_tabulates_only_runs_finished_with_the_same_configuration(tiny, tmp_path):
    """fig2/fig3 --tabulate-only: a finished run counts only if its whole configuration matches."""
    from experiments.grid import finished_run
    from experiments.train import record_run

    cfg = tiny_config(epochs=1)
    result = train(cfg, tiny, tmp_path / "run", progress=False)
    record_run(result, tmp_path / "run")
    assert finished_run(tmp_path / "run", cfg)["peak_test_accuracy"] == result.summary["peak_test_accuracy"]
    assert finished_run(tmp_path / "run", tiny_config(epochs=2)) is None   # the configuration wants more epochs
    assert finished_run(tmp_path / "run", tiny_config(epochs=1, seed=4)) is None
    assert finished_run(tmp_path / "missing", cfg) is None


def test_circuit_training_counts_the_samples_that_did_not_settle(tiny, tmp_path, monkeypatch):
    """A sample that misses the tolerance within the settle's time budget keeps its state and is counted per epoch."""
    import circuit
    import models
    from circuit.fast import FastEngine
    from experiments.train import record_run

    net = models.init_network([49, 49, 49, 10], "orthogonal", seed=0, n_out=10)
    x = tiny.train_x[:60]
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], tiny.train_y[:60], 10)
    update = circuit.CircuitUpdate(tiny_config(engine="circuit", gamma=0.1))
    settled = update(net, x, target, fwd)[0]
    assert update.epoch_statistics() == {"unsettled_samples": 0}
    original = FastEngine.settle_nudged

    def unsettled(self, x, target, **kw):  # every sample misses its tolerance (a residual can reach exactly 0,
        state = original(self, x, target, **kw)  # so no rtol guarantees that on every platform)
        state.converged = np.zeros_like(state.converged)
        return state

    monkeypatch.setattr(FastEngine, "settle_nudged", unsettled)
    kept = update(net, x, target, fwd)[0]
    assert update.epoch_statistics() == {"unsettled_samples": 60}
    # the state at the end of the time budget is the steady state to rounding: the same update
    assert all(np.linalg.norm(a - b) <= UNSETTLED_UPDATE_RTOL * np.linalg.norm(b) for a, b in zip(kept, settled)), \
        [np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(kept, settled)]
    two_batches = datasets.Dataset("tiny", tiny.train_x[:120], tiny.train_y[:120], tiny.test_x, tiny.test_y)
    result = circuit.train(tiny_config(engine="circuit", gamma=0.1, epochs=1), two_batches, tmp_path, progress=False)
    assert result.series("train_running", "unsettled_samples")[1].tolist() == [120]
    assert any(r["metric"] == "unsettled_samples" and r["value"] == "120"
               for r in csv.DictReader(open(tmp_path / "metrics.csv")))
    record_run(result, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["unsettled_samples"] == 120 and summary["unsettled_samples_per_epoch"] == [120]


def test_regulariser_on_threads_started_before_the_updates_gives_the_same_bits():
    """train_epoch's regulariser_threads overlap the regulariser with the rule's updates: same weights."""
    data = datasets.load_embedded()
    x, y = data.train_x[:240], data.train_y[:240]
    ends = []
    for threads in (1, 2):
        net = models.init_network([784, 64, 64, 10], "orthogonal", seed=3, n_out=10)
        opt = models.Adam.published(1e-4)
        training.train_epoch(net, opt, x, y, rule="gait", seed=0, epoch=1, batch=60, regulariser=0.1,
                    inverse=models.DirectInverse(threads), regulariser_threads=threads)
        ends.append(net.weights + net.biases)
    assert all(np.array_equal(a, b) for a, b in zip(*ends))


# --------------------------------------------------------------------------- the published evaluation protocol

@pytest.fixture(scope="module")
def every_four(tiny, tmp_path_factory):
    """Three epochs of 10 batches, evaluated every 4 batches, in one go."""
    out = tmp_path_factory.mktemp("every_four")
    return out, train(tiny_config(epochs=3, eval_every=4), tiny, out, progress=False)


def test_evaluating_every_n_batches_changes_the_records_never_the_weights(tiny, uninterrupted, every_four):
    """eval_every evaluates the whole training set and the test set every N batches and at every epoch's end;
    the weights, and the test set's evaluations at the ends of epochs, are those of a run evaluated per epoch."""
    _, result = every_four
    _, per_epoch = read_checkpoint(uninterrupted / "checkpoint.npz")
    assert all(np.array_equal(w, per_epoch[f"w{i}"]) for i, w in enumerate(result.network.weights))
    steps, accuracy = result.series("test", "accuracy", by="step")
    assert steps.tolist() == [0, 4, 8, 10, 12, 16, 20, 24, 28, 30]       # every 4 batches, and every epoch's end
    assert result.series("test", "accuracy")[0].tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # the epoch in progress
    reference = read_checkpoint(uninterrupted / "checkpoint.npz")[0]["history"]
    ends = {r["epoch"]: r["value"] for r in reference if r["split"] == "test" and r["metric"] == "accuracy"}
    assert [a for s, a in zip(steps, accuracy) if s % 10 == 0] == [ends[e] for e in range(4)]
    first = models.init_network([49, 49, 49, 10], "orthogonal", seed=3, n_out=10)   # step 0: the whole training set
    assert result.rows[1]["value"] == training.evaluate(first, tiny.train_x, tiny.train_y)[1]
    best = int(np.argmax(accuracy[1:])) + 1                                # the first of the peaks after step 0
    summary = result.summary
    assert (summary["peak_test_accuracy"], summary["peak_test_step"]) == (accuracy[best], steps[best])
    assert summary["peak_test_epoch"] == result.series("test", "accuracy")[0][best] and summary["evaluations"] == 9
    assert 0 < summary["evaluation_share"] < 1


def test_a_run_evaluated_every_n_batches_resumes_bit_identically(tiny, tmp_path, every_four):
    """Killed between evaluations inside an epoch, the run restarts that epoch and repeats its evaluations."""
    cfg = tiny_config(epochs=3, eval_every=4)
    with pytest.raises(Killed):
        train(cfg, tiny, tmp_path, on_batch=kill_after(9), progress=False)       # after the evaluations at 4, 8
    train(tiny_config(epochs=1, eval_every=4), tiny, tmp_path, resume=True, progress=False)
    with pytest.raises(Killed):
        train(cfg, tiny, tmp_path, resume=True, on_batch=kill_after(7), progress=False)  # after 12 and 16
    train(cfg, tiny, tmp_path, resume=True, progress=False)
    assert_same_run(every_four[0], tmp_path)
    with pytest.raises(CheckpointError, match="another configuration.*eval_every"):   # the records would mix
        train(tiny_config(epochs=4), tiny, tmp_path, resume=True)
