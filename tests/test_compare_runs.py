"""``compare_runs``: tables, records and plots of training runs, finished or still training."""

from __future__ import annotations

import csv
import json
import warnings

import pytest

from experiments.__main__ import main
from tests.helpers import write_run


@pytest.fixture
def runs(tmp_path):
    bp = write_run(tmp_path / "bp", "bp", [0.1, 0.80, 0.85, 0.84, 0.86], finished=True)
    gait = write_run(tmp_path / "gait", "gait", [0.1, 0.78, 0.83, 0.845], finished=False, regulariser=0.1)
    return bp, gait


def test_table_peak_gap_and_records(runs, tmp_path, capsys):
    bp, gait = runs
    out = tmp_path / "out"
    assert main(["compare_runs", str(gait), str(bp), "--label", f"bp_s0={bp}", "--record", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    # the reference is the BP run; GAIT's peak 84.5 (epoch 3) against BP's peak over the same epochs, 85.0;
    # GAIT's mean over epochs 1-3, 81.83, against BP's over the same epochs, 83.00
    assert "| gait | gait | 0.1 | 0 | 3/4 (training) | 78.00 | 84.50 (3) | 81.83 | -0.50 | -1.17 |" in table
    assert "| bp_s0 | bp | 0 | 0 | 4/4 | 80.00 | 86.00 (4) | 83.75 |  |  |" in table
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["reference"] == "bp_s0"
    figures = summary["runs"]["gait"]
    assert figures["gap_epoch"] == 3 and figures["gap_to_reference"] == pytest.approx(0.845 - 0.84)
    assert figures["finished"] is False and figures["peak_epoch"] == 3
    # records: metrics copied byte for byte; the finished run's summary copied, the running one's written
    assert (out / "bp_s0" / "metrics.csv").read_bytes() == (bp / "metrics.csv").read_bytes()
    assert (out / "bp_s0" / "summary.json").read_bytes() == (bp / "summary.json").read_bytes()
    record = json.loads((out / "gait" / "summary.json").read_text())
    assert record["experiment"] == "train" and record["finished"] is False
    assert record["config"]["rule"] == "gait" and record["epochs_done"] == 3
    assert (out / "test_accuracy.png").stat().st_size > 0
    with open(out / "runs.csv", newline="") as fh:
        assert sum(1 for row in csv.DictReader(fh) if row["run"] == "gait") == 4


def test_evaluations_within_epochs_are_placed_at_fractional_epochs(tmp_path):
    from experiments.compare_runs import read_run

    run = write_run(tmp_path / "r", "bp", [0.1, 0.8, 0.9], finished=True, steps_per_epoch=100)
    with open(run / "metrics.csv", "a", newline="") as fh:
        csv.writer(fh).writerow([1, 150, "test", "accuracy", 0.85])  # an evaluation halfway through epoch 2
    got = read_run(run)
    assert got["epochs"].tolist() == [0.0, 1.0, 1.5, 2.0]
    assert got["accuracy"].tolist() == [0.1, 0.8, 0.85, 0.9]


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/nothing"], "RUN: expected a training run directory with a metrics.csv, got"),
    (["{bp}", "--label", "bp"], "--label: expected NAME=RUN, got 'bp'"),
    (["{bp}", "--label", "x={tmp}/other"], "--label: expected a RUN among the runs given"),
    (["{bp}", "{gait}", "--reference", "tp"], "--reference: expected one of the labels bp, gait, got 'tp'"),
    (["{bp}", "--window", "0"], "--window: expected an integer >= 1, got 0"),
])
def test_bad_arguments_are_usage_errors_before_anything_is_written(runs, tmp_path, capsys, argv, message):
    bp, gait = runs
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, bp=bp, gait=gait) for a in argv]
    assert main(["compare_runs", *argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_run_without_configuration_is_an_error(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,step,split,metric,value\n0,0,test,accuracy,0.1\n")
    assert main(["compare_runs", str(run), "--out", str(tmp_path / "out")]) == 2
    assert "expected train's summary.json or checkpoint.npz" in capsys.readouterr().err


def test_peaks_are_compared_over_the_epochs_both_runs_reached(runs, tmp_path, capsys):
    bp, gait = runs  # BP has 4 epochs (peak 86.0 in epoch 4), GAIT 3 (peak 84.5)
    assert main(["compare_runs", str(gait), str(bp), "--reference", "gait", "--out", str(tmp_path / "out")]) == 0
    figures = json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]["bp"]
    assert figures["peak_gap_epochs"] == 3 and figures["peak_gap_to_reference"] == pytest.approx(0.85 - 0.845)
    assert "| 86.00 (4) | 83.75 | +0.50 | +1.17 |" in capsys.readouterr().out


def test_window_means_average_the_last_epochs_both_runs_reached(runs, tmp_path):
    bp, gait = runs
    out = tmp_path / "out"
    assert main(["compare_runs", str(gait), str(bp), "--window", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["window"] == 2
    gait_figures, bp_figures = summary["runs"]["gait"], summary["runs"]["bp"]
    assert gait_figures["window_mean_test_accuracy"] == pytest.approx((0.83 + 0.845) / 2)  # epochs 2-3
    assert bp_figures["window_mean_test_accuracy"] == pytest.approx((0.84 + 0.86) / 2)  # epochs 3-4
    # over the epochs both reached (1-3), the last two: GAIT 83.75 against BP 84.50
    assert gait_figures["window_gap_to_reference"] == pytest.approx((0.83 + 0.845) / 2 - (0.85 + 0.84) / 2)



def test_the_window_gap_is_the_plots_mean_difference_at_the_shared_evaluations(tmp_path, capsys):
    """A run evaluated also within epochs (--eval-every) against one evaluated per epoch, with the same accuracy at
    the ends of epochs: no gap, in the table and in the plot, whatever the evaluations between."""
    per_epoch = write_run(tmp_path / "bp", "bp", [0.1, 0.8, 0.9], finished=True, steps_per_epoch=100)
    within = write_run(tmp_path / "gait", "gait", [0.1, 0.8, 0.9], finished=True, steps_per_epoch=100)
    with open(within / "metrics.csv", "a", newline="") as fh:
        csv.writer(fh).writerows([[1, 50, "test", "accuracy", 0.7], [2, 150, "test", "accuracy", 0.7]])
    out = tmp_path / "out"
    assert main(["compare_runs", str(within), str(per_epoch), "--window", "2", "--out", str(out)]) == 0
    figures = json.loads((out / "summary.json").read_text())["runs"]["gait"]
    assert figures["window_gap_to_reference"] == 0.0 and figures["gap_to_reference"] == 0.0
    assert figures["window_mean_test_accuracy"] == pytest.approx((0.7 + 0.8 + 0.7 + 0.9) / 4)  # its own evaluations


def test_a_run_without_a_trained_epoch_has_no_means_and_no_gaps(tmp_path, capsys):
    bp = write_run(tmp_path / "bp", "bp", [0.1, 0.8], finished=True)
    fresh = write_run(tmp_path / "fresh", "gait", [0.1], finished=False)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Mean of empty slice"
        assert main(["compare_runs", str(fresh), str(bp), "--out", str(out)]) == 0
    figures = json.loads((out / "summary.json").read_text())["runs"]["fresh"]
    assert figures["window_mean_test_accuracy"] is None and figures["window_gap_to_reference"] is None
    assert "| 10.00 (0) | - |" in capsys.readouterr().out
