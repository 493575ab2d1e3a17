"""The inverse-error study runs end to end in its quick mode and its numbers follow docs/imperfect_inverses.md."""

import argparse
import csv
import json

import pytest

from experiments import inverse_error


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


@pytest.mark.parametrize("argv, message", [(["--hidden", "0,2"], "--hidden: expected an integer >= 1"),
                                           (["--alphas", "0.1,x"], "--alphas: expected numbers"),
                                           (["--width", "0"], "--width: expected an integer >= 1")])
def test_bad_arguments_are_usage_errors(argv, message, tmp_path, capsys):
    from experiments.__main__ import main

    assert main(["inverse_error", "--out", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
