"""Every experiment runs end to end in its quick mode and writes summary.json with the promised fields."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

REQUIRED_ROW_FIELDS = {
    "alignment": {"init", "rule", "layer", "cosine"},
    "equilibrium": {"engine", "mode", "gamma", "layer", "rel_error_update", "cosine_bp"},
    "demo": {"engine", "layer", "rel_error_update_vs_gait", "cosine_circuit_bp"},
    "bench": {"rule", "regulariser", "ms_per_batch", "gflops"},
    "train": {"epoch", "step", "split", "metric", "value"},
    "fig2": {"panel", "dataset", "arch", "rule", "seed", "peak_test_accuracy"},
    "fig3": {"panel", "dataset", "arch", "rule", "seed", "peak_test_accuracy"},
    "coupling": {"schedule", "mode", "depth", "gamma", "noise", "precision", "layer", "cosine_bp", "stability",
                 "settle_time_tau"},
    "coupling_learning": {"rule", "engine", "gamma", "noise", "final_test_accuracy", "test_accuracy"},
    "inverse_error": {"form", "depth", "gamma", "layer", "rel_error_update", "cosine_bp"},
}


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "MPLBACKEND": "Agg"})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to start a process on one")
def test_training_gives_the_same_bits_whatever_cpus_the_process_sees(tmp_path):
    """OpenBLAS started on two CPUs and limited to one thread rounds differently from one started on one CPU;
    `train` starts it with one thread, so a run under `taskset -c 0` and a free run agree bit for bit."""
    runs = {}
    for name, cpus in (("free", None), ("one_cpu", {min(os.sched_getaffinity(0))})):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
        result = subprocess.run(
            [sys.executable, "-m", "experiments", "train", "--quick", "--rule", "gait", "--out", str(tmp_path / name)],
            cwd=ROOT, capture_output=True, text=True, timeout=600, env={**env, "MPLBACKEND": "Agg"},
            preexec_fn=(lambda cpus=cpus: os.sched_setaffinity(0, cpus)) if cpus else None)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = np.load(tmp_path / name / "checkpoint.npz")
        provenance = json.loads((tmp_path / name / "summary.json").read_text())["provenance"]
        assert all(b["threads"] == 1 for b in provenance["blas"]), provenance["blas"]
    for key in runs["free"].files:
        if key != "meta":
            assert np.array_equal(runs["free"][key], runs["one_cpu"][key]), key


def test_help_lists_every_experiment():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in REQUIRED_ROW_FIELDS:
        assert name in result.stdout


@pytest.mark.parametrize("name", [n for n in REQUIRED_ROW_FIELDS if n not in ("bench", "fig2", "coupling")] + [
    pytest.param(n, marks=pytest.mark.slow) for n in ("bench", "fig2", "coupling")])
def test_quick_mode_writes_summary_and_figures(name, tmp_path):
    result = run_cli(name, "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["experiment"] == name
    assert summary["provenance"]["packages"]["numpy"]
    assert summary["provenance"]["blas"] and all("architecture" in b for b in summary["provenance"]["blas"])
    assert summary["rows"], "no rows"
    for row in summary["rows"]:
        assert REQUIRED_ROW_FIELDS[name] <= set(row), set(row)
    if name != "bench":
        assert list(tmp_path.glob("*.png")), "no figure written"
    assert f"[{name}] done" in result.stderr
    if name == "bench":
        assert summary["matmul_gflops"] > 0
        assert all(f["getrf_ms"] > 0 and f["getrs_ms"] > 0 for f in summary["inverse_floor_ms"].values())
        assert summary["gait_target_rel_diff_vs_direct"] < 1e-10


def test_alignment_of_a_trained_checkpoint(tmp_path):
    """alignment --checkpoint: cosines with BP, orthogonality, the regulariser's share and Adam's step per layer."""
    train = run_cli("train", "--quick", "--rule", "gait", "--widths", "784,40,40,10", "--epochs", "1",
                    "--out", str(tmp_path / "run"))
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_cli("alignment", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--out",
                     str(tmp_path / "align"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "align" / "summary.json").read_text())
    assert len(summary["orthogonality_error"]) == 3 and len(summary["regulariser_over_task"]) == 3
    assert all(r > 0 for r in summary["regulariser_over_task"])  # lambda 0.1 by default for GAIT
    assert len(summary["adam_step_hidden"]) == 2 and summary["adam_step_output"]["task_rows"] > 0
    assert "regulariser (lambda 0.1) / task update" in result.stdout
