"""Every experiment runs end to end in its quick mode and writes summary.json with the promised fields."""

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.__main__ import EXPERIMENTS, main
from tests import tolerances as tol
from tests.helpers import write_run

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
        if key not in ("meta", "checksum"):  # the metadata hold the run times
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
    if name == "coupling_learning":  # the quick run is short, but long enough to learn
        noiseless = [r["final_test_accuracy"] for r in summary["rows"] if not r["noise"]]
        assert noiseless and min(noiseless) > tol.QUICK_LEARNING_MIN_ACCURACY, noiseless
    if name == "bench":
        assert summary["matmul_gflops"] > 0
        assert all(f["getrf_ms"] > 0 and f["getrs_ms"] > 0 for f in summary["inverse_floor_ms"].values())
        assert summary["gait_target_rel_diff_vs_direct"] < 1e-10


def test_alignment_of_a_trained_checkpoint(tmp_path):
    """alignment --checkpoint: cosines with BP, orthogonality, the regulariser's share and Adam's step per layer."""
    train = run_cli("train", "--quick", "--rule", "gait", "--widths", "784,40,40,10", "--allow-narrow-input",
                    "--epochs", "1", "--out", str(tmp_path / "run"))
    assert train.returncode == 0, train.stderr[-3000:]
    result = run_cli("alignment", "--checkpoint", str(tmp_path / "run" / "checkpoint.npz"), "--out",
                     str(tmp_path / "align"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "align" / "summary.json").read_text())
    assert len(summary["orthogonality_error"]) == 3 and len(summary["regulariser_over_task"]) == 3
    assert all(r > 0 for r in summary["regulariser_over_task"])  # lambda 0.1 by default for GAIT
    assert len(summary["adam_step_hidden"]) == 2 and summary["adam_step_output"]["task_rows"] > 0
    assert "regulariser (lambda 0.1) / task update" in result.stdout


def parse(name, *args):
    """The parsed command line of one study, as ``python -m experiments`` builds it."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=f"results/{name}")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    importlib.import_module(f"experiments.{name}").add_arguments(parser)
    return parser.parse_args(list(args))


BAD_OPTIONS = [
    (["train", "--epochs", "0"], "--epochs"), (["train", "--epochs", "-2"], "--epochs"),
    (["train", "--batch", "0"], "--batch"), (["train", "--batch", "5000"], "--batch"),  # 3000 training images
    (["train", "--lr", "nan"], "--lr"), (["train", "--lr", "inf"], "--lr"), (["train", "--lr", "0"], "--lr"),
    (["train", "--lr=-1e-3"], "--lr"), (["train", "--regulariser", "-1"], "--regulariser"),
    (["train", "--update", "circuit", "--noise", "-1"], "--noise"), (["train", "--noise", "1e-6"], "--noise"),
    (["train", "--lu-threads", "0"], "--lu-threads"), (["train", "--widths", "784,,10"], "--widths"),
    (["train", "--widths", "a,b"], "--widths"), (["train", "--widths", "784"], "--widths"),
    (["train", "--widths", "784,50,10"], "--allow-narrow-input"), (["train", "--hidden", "-1"], "--hidden"),
    (["train", "--update", "circuit", "--rule", "bp"], "rule"), (["train", "--gamma", "0"], "--gamma"),
    (["fig2", "--epochs", "0"], "--epochs"), (["fig2", "--seeds", "0,x"], "--seeds"),
    (["fig2", "--datasets", "mnist,cifar"], "--datasets"), (["fig2", "--hidden", "1,x"], "--hidden"),
    (["fig3", "--rules", "bp,sgd"], "--rules"), (["fig3", "--eval-every", "0"], "--eval-every"),
    (["fig2", "--workers", "0"], "--workers"), (["fig3", "--scheduler", "localhost"], "--scheduler"),
    (["train", "--eval-every", "-10"], "--eval-every"),
    (["train", "--update", "circuit", "--dtype", "float32"], "--update"),
    (["coupling_learning", "--epochs", "0"], "--epochs"), (["coupling_learning", "--eval-every", "0"], "--eval-every"),
    (["fig2", "--dtype", "float16"], "--dtype"),
    (["coupling_learning", "--lr", "-1"], "--lr"), (["coupling_learning", "--gammas", "0.1,2"], "--gammas"),
    (["coupling_learning", "--noises=-1e-3"], "--noises"), (["coupling_learning", "--train-samples", "10"],
                                                            "--train-samples"),
]


@pytest.mark.parametrize("argv, option", BAD_OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_options_are_usage_errors_before_anything_is_created(argv, option, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    status = main([argv[0], "--quick", "--out", str(out), *argv[1:]])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith(f"python -m experiments {argv[0]}: error: ") and len(err.strip().splitlines()) == 1, err
    assert option in err
    assert not (tmp_path / "new").exists()


def test_quick_changes_only_the_defaults():
    from experiments.coupling_learning import validate as coupling_learning_settings
    from experiments.fig2 import validate as fig2_settings
    from experiments.train import config_from_args

    assert config_from_args(parse("train", "--quick", "--epochs", "3")).epochs == 3
    quick = config_from_args(parse("train", "--quick"))
    assert (quick.epochs, quick.dataset) == (2, "embedded")
    assert config_from_args(parse("train", "--quick", "--dataset", "mnist")).dataset == "mnist"
    assert config_from_args(parse("train")).epochs == 5
    fig2 = fig2_settings(parse("fig2", "--quick", "--epochs", "3", "--seeds", "0,1", "--hidden", "3"))
    assert (fig2["epochs"], fig2["seeds"], fig2["hidden"], fig2["datasets"]) == (3, [0, 1], [3], ["embedded"])
    assert fig2_settings(parse("fig2", "--quick", "--runs-dir", "elsewhere"))["runs"] == Path("elsewhere")
    assert fig2_settings(parse("fig2"))["seeds"] == [0, 1] and fig2_settings(parse("fig2", "--quick"))["seeds"] == [0]
    learning = coupling_learning_settings(parse("coupling_learning", "--quick", "--epochs", "2", "--gammas", "0.3"))
    assert learning["common"]["epochs"] == 2 and learning["gammas"] == [0.3]
    coupling = importlib.import_module("experiments.coupling").validate
    assert coupling(parse("coupling", "--quick"))["width"] == 12
    quick = coupling(parse("coupling", "--quick", "--width", "20", "--hidden", "1,2", "--gammas", "1e-3"))
    assert (quick["width"], quick["depths"], quick["gammas"]) == (20, [2, 3], [1e-3])   # depth L = hidden + 1
    full = coupling(parse("coupling"))
    assert full["gammas"] == [float(g) for g in np.logspace(-4, np.log10(0.5), 13)] and full["depths"] == [3, 5]
    assert importlib.import_module("experiments.demo").validate(parse("demo", "--quick", "--batch", "5"))["batch"] == 5
    inverse = importlib.import_module("experiments.inverse_error").validate
    assert inverse(parse("inverse_error", "--quick", "--seeds", "0,1"))["seeds"] == [0, 1]
    assert inverse(parse("inverse_error"))["eps_grid"] == [float(e) for e in np.logspace(-6, -1, 11)]


def test_a_run_is_never_replaced_without_overwrite(tmp_path, capsys):
    args = ["train", "--quick", "--rule", "bp", "--widths", "784,784,10", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"checkpoint.npz", "metrics.csv", "summary.json", "learning_curves.png"} <= set(files)
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == files  # nothing touched
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["seed"] == 1
    assert not (tmp_path / "checkpoint.prev.npz").exists()


def test_a_killed_command_line_run_resumes_to_the_same_bits(tmp_path):
    args = ["train", "--quick", "--rule", "bp", "--widths", "784,784,10", "--epochs", "2"]
    assert run_cli(*args, "--out", str(tmp_path / "full")).returncode == 0
    killed = run_cli(*args, "--out", str(tmp_path / "killed"), "--stop-after-batches", "7")
    assert killed.returncode == 3, killed.stderr[-2000:]
    again = run_cli(*args, "--out", str(tmp_path / "killed"))
    assert again.returncode == 0  # killed in epoch 1: the directory holds no run yet
    for name in ("full", "killed"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["config"]["epochs"] == 2
    a, b = np.load(tmp_path / "full" / "checkpoint.npz"), np.load(tmp_path / "killed" / "checkpoint.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k not in ("meta", "checksum"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_study_checks_its_output_directory_before_computing(name, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    runs = [str(write_run(tmp_path / "run", "bp", [0.1, 0.8], finished=True))] if name == "compare_runs" else []
    assert main([name, *runs, "--quick", "--out", str(blocker / "out")]) == 2
    assert "--out: expected a directory this process can create and write" in capsys.readouterr().err


def test_a_study_refuses_a_directory_another_process_is_writing(tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom models.training import run_dir_lock\n"
                               "with run_dir_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
        assert f"process {holder.pid} holds its lock" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert {p.name for p in tmp_path.iterdir()} <= {".lock", ".lock.pid"}  # the lock's files, nothing of demo


def test_a_study_refuses_a_directory_holding_a_training_run(tmp_path, capsys):
    (tmp_path / "checkpoint.npz").write_bytes(b"a run")
    (tmp_path / "summary.json").write_text(json.dumps({"experiment": "train"}))
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 2
    assert "holds the results of `train`" in capsys.readouterr().err
    assert json.loads((tmp_path / "summary.json").read_text()) == {"experiment": "train"}


def test_provenance_records_only_the_projects_own_commit(tmp_path):
    from experiments.common import project_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "x.py").write_text("")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "another project")
    assert project_commit(tmp_path / "site-packages") == (None, None)   # installed inside another repository
    commit, dirty = project_commit(tmp_path)
    assert len(commit) == 40 and dirty is False
    assert project_commit(ROOT)[0] is not None                          # this project's own checkout


def test_provenance_records_the_command_as_typed_not_the_checkouts_path(monkeypatch):
    from experiments.common import command_line

    monkeypatch.setattr(sys, "argv", [str(ROOT / "experiments" / "__main__.py"), "train", "--epochs", "2"])
    assert command_line() == "python -m experiments train --epochs 2"
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/gaitcircuit", "demo"])
    assert command_line() == "/usr/local/bin/gaitcircuit demo"
