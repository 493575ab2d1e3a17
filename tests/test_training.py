"""Training: a run learns, writes its records, and a killed run resumes to identical results."""

import csv
import json
import os

import numpy as np
import pytest

from experiments import datasets
from experiments.demo import shrink
from experiments.train import RunDirBusyError, TrainConfig, run_dir_lock, train


@pytest.fixture(scope="module")
def tiny():
    data = datasets.load_embedded()
    return datasets.Dataset("tiny", shrink(data.train_x[:600]), data.train_y[:600],
                            shrink(data.test_x[:200]), data.test_y[:200])


def tiny_config(**kw):
    return TrainConfig(**{"dataset": "tiny", "rule": "gait", "widths": [49, 49, 49, 10], "epochs": 2,
                          "lr": 1e-3, "regulariser": 0.1, "seed": 3, **kw})


@pytest.mark.parametrize("rule", ["bp", "tp", "itp", "gait"])
def test_training_learns_and_writes_records(tiny, tmp_path, rule):
    result = train(tiny_config(rule=rule, regulariser=0.0 if rule == "bp" else 0.1), tiny, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert {r["split"] for r in rows} == {"train", "test", "train_running"}
    initial = float(next(r["value"] for r in rows if r["epoch"] == "0" and r["split"] == "test"
                         and r["metric"] == "accuracy"))
    # BP and GAIT learn fast even here; TP learns little in non-linear networks, as the paper
    # reports, but must move off chance.  ITP's updates are nearly orthogonal to BP's in
    # non-linear networks (see the alignment experiment), so only its records are checked.
    if rule != "itp":
        assert result["peak_test_accuracy"] > initial + (0.2 if rule in ("bp", "gait") else 0.05)
    assert np.isfinite(result["final_test_accuracy"])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["rule"] == rule and summary["provenance"]["git_commit"] is not None
    assert (tmp_path / "learning_curves.png").exists() and (tmp_path / "checkpoint.npz").exists()


def test_resume_after_kill_is_bit_identical(tiny, tmp_path):
    full = tmp_path / "full"
    killed = tmp_path / "killed"
    cfg = tiny_config(epochs=3)
    train(cfg, tiny, full)
    with pytest.raises(SystemExit):
        train(cfg, tiny, killed, stop_after_batches=4)          # dies in epoch 1: no checkpoint yet
    assert not (killed / "checkpoint.npz").exists()
    train(tiny_config(epochs=2), tiny, killed, resume=True)     # runs epochs 1-2, checkpoints
    with pytest.raises(SystemExit):
        train(cfg, tiny, killed, resume=True, stop_after_batches=3)  # dies in epoch 3
    train(cfg, tiny, killed, resume=True)                       # finishes epoch 3
    a, b = np.load(full / "checkpoint.npz"), np.load(killed / "checkpoint.npz")
    for key in a.files:
        if key != "meta":
            assert np.array_equal(a[key], b[key]), key
    ra = [r for r in csv.DictReader(open(full / "metrics.csv"))]
    rb = [r for r in csv.DictReader(open(killed / "metrics.csv"))]
    assert ra == rb


def test_resume_refuses_a_different_configuration(tiny, tmp_path):
    train(tiny_config(epochs=1), tiny, tmp_path)
    # a checkpoint written before a setting existed resumes with that setting's default
    ckpt = tmp_path / "checkpoint.npz"
    with np.load(ckpt) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["config"]["engine"]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(ckpt, **arrays)
    train(tiny_config(epochs=1), tiny, tmp_path, resume=True)
    with pytest.raises(ValueError, match="another configuration.*'lr'"):
        train(tiny_config(epochs=2, lr=5e-4), tiny, tmp_path, resume=True)


def test_resume_warns_when_blas_started_differently(tiny, tmp_path, monkeypatch, capsys):
    """The checkpoint records the BLAS threads its process started with; a different start rounds differently."""
    import experiments.train

    train(tiny_config(epochs=1), tiny, tmp_path)
    monkeypatch.setattr(experiments.train, "blas_start_threads", lambda: [7, 7])
    train(tiny_config(epochs=2), tiny, tmp_path, resume=True)
    assert "last bits will differ from an uninterrupted run" in capsys.readouterr().err
    train(tiny_config(epochs=3), tiny, tmp_path, resume=True)  # epoch 2 was written by the [7, 7] process
    assert "last bits will differ" not in capsys.readouterr().err


def test_a_run_directory_is_trained_by_one_process_at_a_time(tiny, tmp_path):
    """A second training in the same --out would overwrite the first one's checkpoints: refused, naming the holder."""
    with run_dir_lock(tmp_path):  # flock: a second open file conflicts even within one process
        with pytest.raises(RunDirBusyError, match=f"process {os.getpid()} holds its lock.*another --out"):
            train(tiny_config(epochs=1), tiny, tmp_path)
    assert not (tmp_path / "checkpoint.npz").exists()
    train(tiny_config(epochs=1), tiny, tmp_path)  # released: trains
    assert (tmp_path / "checkpoint.npz").exists()


def test_circuit_engine_training_follows_discrete_gait(tiny, tmp_path):
    """Updates from the circuit's steady state train like discrete GAIT-prop (O(gamma) apart)."""
    from experiments.train import circuit_update

    cfg = tiny_config(epochs=1, gamma=1e-4)
    discrete = train(cfg, tiny, tmp_path / "discrete")
    circ_cfg = tiny_config(epochs=1, gamma=1e-4, engine="circuit")
    circuit_result = train(circ_cfg, tiny, tmp_path / "circuit", update=circuit_update(circ_cfg))
    assert abs(circuit_result["final_test_accuracy"] - discrete["final_test_accuracy"]) <= 0.02


def test_noisy_circuit_training_is_reproducible_and_needs_the_circuit_engine(tiny):
    """The noise stream follows the batch (so --resume stays bit-identical); weak noise barely moves the update."""
    import argparse

    import models
    from experiments.train import add_arguments, circuit_update, config_from_args

    net = models.init_network([49, 49, 49, 10], "orthogonal", seed=0, n_out=10)
    x = tiny.train_x[:60]
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], tiny.train_y[:60], 10)
    noisy = circuit_update(tiny_config(engine="circuit", gamma=0.1, noise=1e-9))
    quiet = circuit_update(tiny_config(engine="circuit", gamma=0.1))
    first, again, exact = noisy(net, x, target, fwd)[0], noisy(net, x, target, fwd)[0], quiet(net, x, target, fwd)[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    # the averaged noise of 1e-9 (x 1/sqrt(100 tau)) on deviations ~gamma^3 = 1e-3: ~1e-6 relative
    assert all(0 < np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) for a, b in zip(first, exact))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--quick", action="store_true")
    with pytest.raises(ValueError, match="--engine circuit"):
        config_from_args(parser.parse_args(["--noise", "1e-6"]))


def test_grid_tabulates_only_runs_finished_with_the_same_configuration(tiny, tmp_path):
    """fig2/fig3 --tabulate-only: a finished run counts only if its whole configuration matches."""
    from experiments.grid import finished_run

    cfg = tiny_config(epochs=1)
    result = train(cfg, tiny, tmp_path / "run")
    assert finished_run(tmp_path / "run", cfg)["peak_test_accuracy"] == result["peak_test_accuracy"]
    assert finished_run(tmp_path / "run", tiny_config(epochs=2)) is None   # asked for more epochs
    assert finished_run(tmp_path / "run", tiny_config(epochs=1, seed=4)) is None
    assert finished_run(tmp_path / "missing", cfg) is None


def test_circuit_training_keeps_a_slow_samples_state_and_says_so(tiny, monkeypatch, capsys):
    """A sample that misses the residual within the engine's 2000 tau does not stop a training run."""
    import circuit
    import models
    from experiments.train import circuit_update

    net = models.init_network([49, 49, 49, 10], "orthogonal", seed=0, n_out=10)
    x = tiny.train_x[:60]
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], tiny.train_y[:60], 10)
    update = circuit_update(tiny_config(engine="circuit", gamma=0.1))
    settled = update(net, x, target, fwd)[0]
    original = circuit.FastEngine.__init__
    monkeypatch.setattr(circuit.FastEngine, "__init__",  # a residual no state reaches: every sample "unconverged"
                        lambda self, spec, rtol=1e-10, max_sweeps=200, inverse=None:
                        original(self, spec, 1e-300, max_sweeps, inverse))
    kept = update(net, x, target, fwd)[0]
    update(net, x, target, fwd)
    assert capsys.readouterr().err.count("did not settle to residual 1e-10 within 2000 tau") == 1
    # the state after 2000 tau is the steady state to rounding: the same update
    assert all(np.linalg.norm(a - b) <= 1e-9 * np.linalg.norm(b) for a, b in zip(kept, settled)), \
        [np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(kept, settled)]
