"""Sweeps: every point is run once, results survive a kill, failures are reported and retried."""

import json

import numpy as np
import pytest

import circuit
from experiments.sweep import load_records, run_points


def square(point):
    if point["x"] == 3 and point.get("fail"):
        raise RuntimeError("point 3 failed on purpose")
    return {"y": point["x"] ** 2}


def test_points_run_resume_and_failures_are_reported(tmp_path, capsys):
    path = tmp_path / "points.jsonl"
    points = [{"x": x, "fail": True} for x in range(5)]
    records = run_points(points[:2], square, path, workers=2)
    assert [r["result"]["y"] for r in records] == [0, 1]
    records = run_points(points, square, path, workers=2)            # resumes: only 2, 3, 4 are new
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 5                                           # 0, 1 once; then 2, 3 (error), 4
    assert records[3]["error"] == "RuntimeError: point 3 failed on purpose"
    assert "failed point" in capsys.readouterr().err
    assert len(load_records(path)) == 4                              # the failed point is not finished
    fixed = [{"x": x, "fail": x != 3} for x in range(5)]
    assert run_points(fixed, square, tmp_path / "other.jsonl", workers=1)[3]["result"] == {"y": 9}


def test_progress_is_a_bar_with_an_eta_and_a_line_per_point_only_when_asked(tmp_path, capsys):
    points = [{"x": x} for x in range(4)]
    run_points(points[:1], square, tmp_path / "points.jsonl", workers=1, label="squares")
    capsys.readouterr()
    run_points(points, square, tmp_path / "points.jsonl", workers=1, label="squares",
               describe=lambda point, result: f"x = {point['x']}: y = {result['y']}")
    err = capsys.readouterr().err
    assert "[squares] 1 of 4 points already done" in err
    assert "4/4" in err and ("point/s" in err or "s/point" in err)         # tqdm's bar: count, rate (and ETA)
    assert sorted(line for line in err.splitlines() if line.startswith("[squares] x = ")) == [
        f"[squares] x = {x}: y = {x * x}" for x in (1, 2, 3)]                # one line per finished point
    run_points(points, square, tmp_path / "other.jsonl", workers=1, label="squares")
    assert "{'x'" not in capsys.readouterr().err                             # no raw dicts


def test_coupling_schedules():
    assert np.allclose(circuit.coupling_schedule("uniform", 1e-3, 3), [1e-3] * 3)
    assert np.allclose(circuit.coupling_schedule("output", 1e-3, 3), [0.9, 0.9, 1e-3])
    assert np.allclose(circuit.coupling_schedule("geometric", 1e-3, 3, ratio=4), [1.6e-2, 4e-3, 1e-3])
    with pytest.raises(ValueError, match="schedule: expected one of"):
        circuit.coupling_schedule("linear", 1e-3, 3)


def test_local_and_dask_distributed_runs_give_identical_results(tmp_path):
    """A Dask cluster on loopback (scheduler and one worker process) against the local pool."""
    distributed = pytest.importorskip("dask.distributed")
    from experiments.coupling import measure_point

    points = [{"schedule": s, "mode": "gait", "depth": 3, "gamma": g, "width": 8, "batch": 3, "seed": 1}
              for s in ("uniform", "output") for g in (1e-3, 1e-1)]
    local = run_points(points, measure_point, tmp_path / "local.jsonl", workers=2)
    with distributed.LocalCluster(host="127.0.0.1", n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = run_points(points, measure_point, tmp_path / "dask.jsonl", scheduler=cluster.scheduler_address)
    assert all(cluster.scheduler_address.startswith(prefix) for prefix in ("tcp://127.0.0.1",))
    assert [r["result"] for r in local] == [r["result"] for r in remote]
