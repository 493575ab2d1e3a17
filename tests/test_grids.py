"""Grids of training runs (fig2, fig3, coupling_learning) as sweeps: a Dask cluster gives the local pool's results,
and an interrupted grid trains only what is missing."""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from experiments import coupling_learning
from experiments.grid import grid_data, grid_points, point_config, train_grid
from experiments.sweep import run_points
from models.training import read_checkpoint, train

#: What a grid's results hold besides the seconds they took.
TIMINGS = ("seconds_per_epoch", "evaluation_overhead", "evaluation_share", "seconds")


def settings(tmp_path: Path, epochs: int = 2, eval_every=None) -> dict:
    return {"runs": tmp_path / "runs", "epochs": epochs, "eval_every": eval_every}


def without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMINGS}


def same_checkpoints(a: Path, b: Path) -> bool:
    (ma, aa), (mb, ab) = read_checkpoint(a / "checkpoint.npz"), read_checkpoint(b / "checkpoint.npz")
    return (aa.keys() == ab.keys() and all(np.array_equal(aa[k], ab[k]) for k in aa)
            and ma["history"] == mb["history"])


def test_a_grid_on_a_dask_cluster_gives_the_local_pools_results(tmp_path):
    """fig2/fig3 runs (784 wide, a few batches, evaluated every 2 batches) and coupling_learning points on a
    loopback Dask cluster, against the local process pool: the same records and the same checkpoints."""
    distributed = pytest.importorskip("dask.distributed")
    cells = [("A", "embedded", "sq1", "bp", 0), ("C", "embedded", "lin1", "gait", 0)]
    learning = [{"rule": rule, "engine": engine, "gamma": gamma, "noise": 0.0, "hidden": 1, "epochs": 2, "lr": 1e-3,
                 "seed": 0, "train_samples": 120}
                for rule, engine, gamma in (("bp", "discrete", None), ("gait", "circuit", 0.1))]
    records = {}
    for where in ("local", "dask"):
        points = grid_points(cells, settings(tmp_path / where, eval_every=2), quick=True)
        (tmp_path / where).mkdir()
        learn = partial(coupling_learning.learn_point, runs=str(tmp_path / where / "cl"))
        if where == "local":
            grid = train_grid(points, tmp_path / where / "points.jsonl", workers=2)
            learned = run_points(learning, learn, tmp_path / where / "cl.jsonl", workers=2)
        else:
            with distributed.LocalCluster(processes=False, n_workers=1, threads_per_worker=1,
                                          dashboard_address=None) as cluster:
                address = cluster.scheduler_address
                grid = train_grid(points, tmp_path / where / "points.jsonl", scheduler=address)
                learned = run_points(learning, learn, tmp_path / where / "cl.jsonl", scheduler=address)
        records[where] = [without_timings(r["result"]) for r in grid + learned]
    assert records["local"] == records["dask"]
    assert [r["evaluations"] for r in records["local"][:2]] == [4, 4]   # 6 batches: after 2, 3 (an epoch), 4, 6
    for name in ("embedded-bp-sq1-s0-eval2", "embedded-gait-lin1-s0-eval2"):
        assert same_checkpoints(tmp_path / "local" / "runs" / name, tmp_path / "dask" / "runs" / name), name
    for point in learning:
        name = coupling_learning.point_name(point)
        assert same_checkpoints(tmp_path / "local" / "cl" / name, tmp_path / "dask" / "cl" / name), name


class Interrupted(Exception):
    """Stands for a grid's process being killed while it trains."""


class StopInEpoch:
    """An ``on_batch`` that interrupts a run in its ``epoch``-th epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def __call__(self, epoch, i, n, running_loss):
        if epoch == self.epoch and i == 1:
            raise Interrupted(f"in epoch {epoch}")


class LogBatches:
    """An ``on_batch`` that appends the epoch of every batch it sees to a file (from any worker process)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __call__(self, epoch, i, n, running_loss):
        with open(self.path, "a") as fh:
            fh.write(f"{epoch}\n")


def test_an_interrupted_grid_trains_only_what_is_missing(tmp_path):
    """Run A finished, run B stopped in its second epoch: the grid's rerun trains B's second epoch and nothing else,
    and ends with the checkpoints of uninterrupted runs."""
    points = grid_points([("A", "embedded", "sq1", "bp", 0), ("A", "embedded", "sq1", "bp", 1)], settings(tmp_path),
                         quick=True)
    path = tmp_path / "points.jsonl"
    first, second = (Path(p["run"]) for p in points)
    train_grid(points[:1], path, workers=1)                                     # A finishes
    records = train_grid(points, path, workers=1, on_batch=StopInEpoch(2))      # B stops in its second epoch
    assert records[1]["error"] == "Interrupted: in epoch 2"
    assert read_checkpoint(second / "checkpoint.npz")[0]["epoch"] == 1
    finished = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.iterdir()}
    epoch_one = read_checkpoint(second / "checkpoint.npz")[0]["times"]

    log = tmp_path / "batches.log"
    records = train_grid(points, path, workers=1, on_batch=LogBatches(log))
    assert log.read_text().split() == ["2", "2", "2"]                     # B's second epoch (3 batches), no more
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.iterdir()} == finished   # A untouched
    assert read_checkpoint(second / "checkpoint.npz")[0]["times"][:1] == epoch_one  # B's first epoch not redone
    assert [json.loads(line).keys() >= {"result"} for line in path.read_text().splitlines()] == [True, False, True]
    assert [r["result"]["evaluations"] for r in records] == [2, 2]

    for point, run in zip(points, (first, second)):  # the same bits as runs that were never interrupted
        train(point_config(point), grid_data("embedded", quick=True), tmp_path / "fresh" / run.name, progress=False)
        assert same_checkpoints(run, tmp_path / "fresh" / run.name), run.name


def test_a_float32_grid_trains_float32_runs_beside_the_float64_ones(tmp_path):
    """--dtype float32: its own run directories (a float64 run never resumes in float32), float32 weights, and
    float64 points keep the keys of earlier grids' points.jsonl."""
    cells = [("A", "embedded", "sq1", "bp", 0)]
    (f64,) = grid_points(cells, settings(tmp_path), quick=True)
    (f32,) = grid_points(cells, {**settings(tmp_path), "dtype": "float32"}, quick=True)
    assert "dtype" not in f64 and f32["dtype"] == "float32"
    assert Path(f64["run"]).name == "embedded-bp-sq1-s0" and Path(f32["run"]).name == "embedded-bp-sq1-s0-float32"
    assert point_config(f64).dtype == "float64" and point_config(f32).dtype == "float32"
    (record,) = train_grid([f32], tmp_path / "points.jsonl", workers=1)
    assert record["result"]["peak_test_accuracy"] > 0
    meta, arrays = read_checkpoint(Path(f32["run"]) / "checkpoint.npz")
    assert meta["config"]["dtype"] == "float32"
    assert {arrays[k].dtype for k in arrays if k[0] in "wb"} == {np.dtype(np.float32)}


def test_coupling_learning_with_eval_every_keeps_the_epoch_curve_and_peaks_over_every_evaluation(tmp_path):
    """The same weights as per-epoch evaluation, so the same curve at the ends of epochs; the peak also sees the
    evaluations within epochs; the run has its own directory."""
    base = {"rule": "bp", "engine": "discrete", "gamma": None, "noise": 0.0, "hidden": 1, "epochs": 2, "lr": 1e-3,
            "seed": 0, "train_samples": 180}  # 3 batches per epoch: evaluations after batches 2, 3, 4 and 6
    every = {**base, "eval_every": 2}
    assert coupling_learning.point_name(every) == coupling_learning.point_name(base) + "-eval2"
    per_epoch = coupling_learning.learn_point(base, runs=tmp_path)
    with_every = coupling_learning.learn_point(every, runs=tmp_path)
    assert with_every["test_accuracy"] == per_epoch["test_accuracy"] and len(per_epoch["test_accuracy"]) == 3
    # the peak of train's summary: over the trained network's evaluations (not the untrained one's, epoch 0)
    assert with_every["peak_test_accuracy"] >= per_epoch["peak_test_accuracy"] == max(per_epoch["test_accuracy"][1:])
    rows = read_checkpoint(tmp_path / coupling_learning.point_name(every) / "checkpoint.npz")[0]["history"]
    assert sorted(r["step"] for r in rows if r["split"] == "test" and r["metric"] == "accuracy") == [0, 2, 3, 4, 6]


@pytest.mark.parametrize("study", ["fig2", "fig3"])
def test_tabulating_a_grid_with_no_finished_runs_lists_them_and_draws_an_empty_figure(study, tmp_path, capsys):
    from experiments.__main__ import main

    out = tmp_path / "out"
    assert main([study, "--quick", "--tabulate-only", "--runs-dir", str(tmp_path / "none"), "--out", str(out)]) == 0
    assert "runs not finished in" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["rows"] == []
    assert (out / f"{study}.png").is_file()
