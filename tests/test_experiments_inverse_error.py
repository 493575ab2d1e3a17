"""The inverse-error study runs end to end in its quick mode and its numbers follow docs/imperfect_inverses.md."""

import argparse
import csv
import json

import pytest

from experiments import inverse_error
from models.errors import ValidationError
from tests import tolerances as tol


def parser():
    p = argparse.ArgumentParser(prog="inverse_error")
    p.add_argument("--quick", action="store_true")
    inverse_error.add_arguments(p)
    return p


def test_quick_mode_writes_summary_csv_and_figures(tmp_path):
    inverse_error.run(parser().parse_args(["--quick", "--bench"]), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["experiment"] == "inverse_error" and summary["provenance"]["packages"]["numpy"]
    rows = summary["rows"]
    assert {"form", "depth", "gamma", "layer", "rel_error_update", "rel_error_bp", "cosine_bp", "cosine_exact",
            "exact_cosine_bp"} <= set(rows[0])
    assert {r["form"] for r in rows} == {"difference", "absolute"}
    assert {(tmp_path / name).exists() for name in ("inverse_error.png", "inverse_error_transpose.png")} == {True}
    with open(tmp_path / "inverse_error.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)  # quick mode: one seed, so one row per mean
    perturbed = [r for r in rows if "eps" in r and r["layer"] == 1]
    for r in perturbed:
        if r["form"] == "absolute" and r["gamma"] < 1:  # first order holds off the gamma = 1 edge
            assert r["predicted_rel_error"] == pytest.approx(r["rel_error_update"], rel=0.05)
        if r["form"] == "difference":  # error ~ eps, whatever gamma
            assert r["rel_error_update"] < 10 * r["eps"]
    transpose = [r for r in rows if "alpha" in r and r["form"] == "difference"]
    assert all(r["cosine_bp"] > 0.999 for r in transpose)  # Q = W^T in the difference form is BP
    assert summary["best_gamma"] and all(b["gamma"] > 0 for b in summary["best_gamma"])
    bench = summary["bench"]
    assert all(bench[k]["ms_per_batch"] > 0 for k in ("bp", "gait_exact", "gait_learned"))


BAD_ARGUMENTS = [(["--hidden", "0,2"], "--hidden: expected an integer >= 1"),
                 (["--alphas", "0.1,x"], "--alphas: expected numbers"),
                 (["--width", "0"], "--width: expected an integer >= 1"),
                 (["--circuit-noises", "0,-1"], "--circuit-noises: expected a finite number >= 0"),
                 (["--circuit-epsilons", "a"], "--circuit-epsilons: expected numbers"),
                 (["--circuit-gammas", "0.5,1"], "--circuit-gammas: expected values in (0, 1)")]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS)
def test_bad_arguments_are_usage_errors(argv, message, tmp_path, capsys):
    from experiments.__main__ import main

    assert main(["inverse_error", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_quick_circuit_part_follows_the_discrete_absolute_form_and_resumes(tmp_path):
    """--circuit: the noiseless circuit's update is the discrete absolute form's to first order in gamma (the
    exact inverse's: exact GAIT's); stable steady states; best gammas per noise and eps; the figure;
    a rerun takes the points from circuit_points.jsonl."""
    args = parser().parse_args(["--quick", "--circuit"])
    inverse_error.run(args, tmp_path)
    part = json.loads((tmp_path / "summary.json").read_text())["circuit"]
    rows = part["rows"]
    assert {r["eps"] for r in rows} == {0.0, 1e-3} and {r["noise"] for r in rows} == {0.0, 1e-4}
    L = max(r["depth"] for r in rows)
    for r in rows:
        assert r["stability"] < 0
        if r["noise"] == 0:
            bound = tol.UPDATE_ERROR_PER_GAMMA * max(L - r["layer"], 1) * r["gamma"]
            assert r["rel_error_absolute"] <= bound, r
            if r["eps"] == 0:
                assert r["rel_error_absolute"] == r["rel_error_update"]
    assert {(b["noise"], b["eps"]) for b in part["best_gamma"]} == {(0.0, 0.0), (0.0, 1e-3), (1e-4, 0.0), (1e-4, 1e-3)}
    assert (tmp_path / "inverse_error_circuit.png").exists()
    lines = (tmp_path / "circuit_points.jsonl").read_text().splitlines()
    assert len(lines) == 8
    inverse_error.run(args, tmp_path)
    assert (tmp_path / "circuit_points.jsonl").read_text().splitlines() == lines
    assert json.loads((tmp_path / "summary.json").read_text())["circuit"]["rows"] == rows


def test_bench_feedback_times_learned_feedback_against_exact_gait_and_bp(tmp_path, capsys):
    from experiments import bench

    p = argparse.ArgumentParser(prog="bench")
    p.add_argument("--quick", action="store_true")
    bench.add_arguments(p)
    bench.run(p.parse_args(["--quick", "--feedback", "--hidden", "1"]), tmp_path)
    timing = json.loads((tmp_path / "summary.json").read_text())["feedback"]
    assert all(timing[k]["ms_per_batch"] > 0 for k in ("bp", "gait_exact", "gait_learned"))
    assert timing["learned_over_exact"] > 0
    assert "learned / exact GAIT" in capsys.readouterr().out


def test_training_tables_read_the_runs_metrics(tmp_path, capsys):
    """--tabulate-training: test accuracy of every run per epoch (and the learned runs' mean), ||Q W - I|| and
    cosines per layer, from metrics.csv files in KIND_sSEED directories."""
    def write(name, rows):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "metrics.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", "step", "split", "metric", "value"])
            writer.writeheader()
            writer.writerows({"epoch": e, "step": 0, "split": s, "metric": m, "value": v} for e, s, m, v in rows)

    for seed, acc in ((0, 0.8), (1, 0.9)):
        write(f"learned_s{seed}", [(0, "test", "accuracy", 0.1), (1, "test", "accuracy", acc),
                                   (0, "feedback", "inverse_error_layer2", 1e-15),
                                   (1, "feedback", "inverse_error_layer2", 0.01 * (seed + 1)),
                                   (1, "feedback", "cosine_bp_layer1", 0.99)])
    write("exact_gait_s0", [(1, "test", "accuracy", 0.85)])
    inverse_error.run(parser().parse_args(["--tabulate-training", str(tmp_path)]), tmp_path)
    text = capsys.readouterr().out
    assert "| epoch | learned s0 | learned s1 | exact_gait s0 | learned mean |" in text
    assert "| 1 | 80.00 | 90.00 | 85.00 | 85.00 |" in text
    assert "| 1 | 1.0e-02 / 2.0e-02 |" in text and "| 1 | 0.9900 / 0.9900 |" in text
    with pytest.raises(ValidationError, match="expected directories KIND_sSEED"):
        inverse_error.validate(parser().parse_args(["--tabulate-training", str(tmp_path / "learned_s0")]))
