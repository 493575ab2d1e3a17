"""Training runs side by side: test accuracy per epoch, the peak, and the gap to a reference run.

Reads the run directories that ``train --out RUN`` writes, finished or still training (a run
in progress has its metrics.csv and checkpoint.npz; its configuration comes from the
checkpoint), and writes to ``--out``:

- ``runs.csv``: the test accuracy of every run at every evaluation (tidy rows);
- ``test_accuracy.png``: test accuracy against epoch, one line per run in its rule's colour,
  and beneath it each run's difference to the ``--reference`` run: of the means over the last
  ``--window`` epochs (solid) and of the peaks so far (dotted);
- ``summary.json``: per run its configuration, the epochs done, the peak and where it occurred,
  the final accuracy, the mean over the last ``--window`` epochs, and the gaps to the reference;
- with ``--record``, a copy of each run's metrics.csv and summary.json in ``--out/LABEL/`` (small
  files, fit for version control).  A run still training has no summary.json yet: its record is
  written from the checkpoint's configuration and the metrics so far, marked ``"finished": false``.

It prints a Markdown table of the same figures.  Nothing is trained or simulated.

Two measures compare a run with the reference, each over the epochs both have reached: the
difference of the peaks (the paper's measure; a maximum of noisy evaluations, it favours the
run that fluctuates more), and the mean difference over the last ``--window`` of those epochs
at the evaluations both runs made (a plateau's level, less sensitive to one lucky
evaluation).  A run that has done fewer epochs than ``--window`` is averaged over all of them.

Example (the long Fashion-MNIST runs of docs/results.md)::

    python -m experiments compare_runs runs/long_gait_s0 runs/long_bp_s0 --reference bp_s0 \\
        --label gait_s0=runs/long_gait_s0 --label bp_s0=runs/long_bp_s0 --record --out docs/results/long_runs
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

from analysis.metrics import shared_evaluations, trailing_mean
from analysis.plots import accuracy_over_epochs, new_figure, save_figure
from models.errors import ValidationError
from models.training import read_metrics
from models.validation import check_count

from .common import write_summary

DESCRIPTION = ("training runs side by side (finished or still training): test accuracy per epoch, peak, "
               "mean of the last epochs, gaps")

#: Epochs at which the printed table shows the test accuracy (those a run has reached).
TABLE_EPOCHS = (1, 5, 10, 20, 30, 50, 75, 100)


def add_arguments(parser):
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="training run directories (train's --out: metrics.csv, and summary.json or "
                             "checkpoint.npz)")
    parser.add_argument("--label", action="append", metavar="NAME=RUN",
                        help="name a run in tables, plots and records; repeatable (default: each run's directory "
                             "name)")
    parser.add_argument("--reference", metavar="NAME",
                        help="the run the others are compared with, by label (default: the first BP run, if any)")
    parser.add_argument("--window", type=int, default=10, metavar="EPOCHS",
                        help="average the test accuracy over the last EPOCHS epochs (default: 10)")
    parser.add_argument("--record", action="store_true",
                        help="copy each run's metrics.csv and summary.json into --out/NAME/")


def validate(args) -> dict:
    """``{label: run directory}`` in the order given; ValidationError naming the option if one is bad."""
    check_count("--window", args.window)
    names = {}
    for text in args.label or ():
        name, sep, run = text.partition("=")
        if not sep or not name or not run:
            raise ValidationError(f"--label: expected NAME=RUN, got {text!r}")
        names[str(Path(run).resolve())] = name
    runs = {}
    for run in args.runs:
        path = Path(run)
        if not (path / "metrics.csv").is_file():
            raise ValidationError(f"RUN: expected a training run directory with a metrics.csv, got {run!r}")
        label = names.pop(str(path.resolve()), path.name)
        if label in runs:
            raise ValidationError(f"RUN: two runs share the label {label!r}; name them with --label NAME=RUN")
        runs[label] = path
    if names:
        raise ValidationError(f"--label: expected a RUN among the runs given, got {', '.join(sorted(names))}")
    if args.reference is not None and args.reference not in runs:
        raise ValidationError(f"--reference: expected one of the labels {', '.join(runs)}, got {args.reference!r}")
    return runs


def read_run(path: Path) -> dict:
    """A run's configuration, whether it finished, its per-evaluation test accuracy and its rows.

    Returns ``{"config", "finished", "summary", "rows", "epochs", "accuracy", "steps_per_epoch"}``;
    ``epochs`` are fractional where a run evaluates within epochs (step / steps per epoch).
    """
    rows = read_metrics(path / "metrics.csv")
    summary_path, checkpoint = path / "summary.json", path / "checkpoint.npz"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    if summary is not None and summary.get("experiment") == "train":
        config = summary["config"]
    elif checkpoint.is_file():
        with np.load(checkpoint, allow_pickle=False) as z:
            config = json.loads(str(z["meta"]))["config"]
        summary = None
    else:
        raise ValidationError(f"RUN: expected train's summary.json or checkpoint.npz in {str(path)!r}, found neither")
    # train_running rows are written at the ends of epochs only: they give the steps per epoch
    ends = [(r["epoch"], r["step"]) for r in rows if r["split"] == "train_running" and r["epoch"] > 0]
    steps_per_epoch = ends[0][1] / ends[0][0] if ends else None
    test = sorted((r["step"], r["epoch"], r["value"]) for r in rows if r["split"] == "test"
                  and r["metric"] == "accuracy")
    epochs = np.array([s / steps_per_epoch if steps_per_epoch else e for s, e, _ in test], dtype=float)
    accuracy = np.array([v for _, _, v in test], dtype=float)
    return {"config": config, "finished": summary is not None, "summary": summary, "rows": rows,
            "epochs": epochs, "accuracy": accuracy, "steps_per_epoch": steps_per_epoch}


def accuracy_at(run: dict, epoch: float) -> float | None:
    """The test accuracy (fraction) evaluated at ``epoch``, None if the run has not evaluated there."""
    hit = np.flatnonzero(np.isclose(run["epochs"], epoch))
    return float(run["accuracy"][hit[-1]]) if hit.size else None


def window_mean(run: dict, window: int) -> float | None:
    """Mean test accuracy over the run's evaluations in its last ``window`` epochs (all of them for a shorter
    run; the untrained network's, epoch 0, never); None for a run that has not finished an epoch."""
    trained = run["epochs"] > 0
    if not trained.any():
        return None
    return float(trailing_mean(run["epochs"][trained], run["accuracy"][trained], window)[-1])


def window_gap(run: dict, reference: dict, window: int) -> float | None:
    """Mean over the last ``window`` of the epochs both runs reached of the difference ``run - reference`` at
    the evaluations both made (what the plot's solid line ends at); None if they share no trained evaluation."""
    shared, mine, theirs = shared_evaluations(run["epochs"], reference["epochs"])
    trained = shared > 0
    if not trained.any():
        return None
    difference = run["accuracy"][mine[trained]] - reference["accuracy"][theirs[trained]]
    return float(trailing_mean(shared[trained], difference, window)[-1])


def run_figures(run: dict, reference: dict | None, window: int = 10) -> dict:
    """Epochs done, peak (and its epoch), final accuracy, mean over the last ``window`` epochs, and the
    gaps to ``reference``: at the last shared epoch, of the peaks and of the window means over the shared epochs.

    ``window_epochs`` is the span averaged: ``window``, or the epochs done if fewer."""
    epochs, acc = run["epochs"], run["accuracy"]
    peak = int(np.argmax(acc))
    config = run["config"]
    figures = {"rule": config["rule"], "seed": config["seed"], "regulariser": config["regulariser"],
               "epochs_done": float(epochs[-1]), "epochs_planned": config["epochs"], "finished": run["finished"],
               "peak_test_accuracy": float(acc[peak]), "peak_epoch": float(epochs[peak]),
               "final_test_accuracy": float(acc[-1]), "window_epochs": min(window, float(epochs[-1])),
               "window_mean_test_accuracy": window_mean(run, window)}
    if reference is not None:
        shared, mine, theirs = shared_evaluations(epochs, reference["epochs"])
        figures["gap_epoch"] = float(shared[-1]) if shared.size else None
        figures["gap_to_reference"] = (float(acc[mine[-1]] - reference["accuracy"][theirs[-1]]) if shared.size
                                       else None)
        # the peaks over the epochs both runs have reached
        limit = min(float(epochs[-1]), float(reference["epochs"][-1])) + 1e-9
        figures["peak_gap_epochs"] = round(limit, 6)
        figures["peak_gap_to_reference"] = (float(np.max(acc[epochs <= limit]))
                                            - float(np.max(reference["accuracy"][reference["epochs"] <= limit])))
        # the mean difference over the last `window` of those epochs
        figures["window_gap_to_reference"] = window_gap(run, reference, window)
    return figures


def markdown_table(runs: dict, figures: dict, reference: str | None, window: int = 10) -> str:
    """Test accuracy (%) at :data:`TABLE_EPOCHS`, peak (epoch), the mean over the last ``window`` epochs and the
    gaps to the reference, one row per run."""
    reached = max(f["epochs_done"] for f in figures.values())
    columns = [e for e in TABLE_EPOCHS if e <= reached]
    header = ["run", "rule", "regulariser", "seed", "epochs", *(f"epoch {e}" for e in columns), "peak (epoch)",
              f"mean, last {window} epochs"]
    if reference:
        header += [f"peak - {reference} peak (same epochs)", f"mean - {reference} mean (same epochs)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, run in runs.items():
        f = figures[label]
        cells = [label, f["rule"], f"{f['regulariser']:g}", str(f["seed"]),
                 f"{f['epochs_done']:g}/{f['epochs_planned']}" + ("" if f["finished"] else " (training)")]
        for e in columns:
            cells.append(percent(accuracy_at(run, e)))
        cells.append(f"{percent(f['peak_test_accuracy'])} ({f['peak_epoch']:g})")
        cells.append(percent(f["window_mean_test_accuracy"]))
        if reference:
            cells += (["", ""] if label == reference else [percent(f["peak_gap_to_reference"], "+"),
                                                           percent(f["window_gap_to_reference"], "+")])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def percent(fraction: float | None, sign: str = "") -> str:
    """A fraction as a table's percentage with two decimals ("-" for None)."""
    return "-" if fraction is None else f"{100 * fraction:{sign}.2f}"


def record(label: str, path: Path, run: dict, figures: dict, out: Path) -> None:
    """Copy metrics.csv and summary.json of a run into ``out/label``; a run in progress gets a record of its state."""
    target = out / label
    target.mkdir(exist_ok=True)
    shutil.copyfile(path / "metrics.csv", target / "metrics.csv")
    if run["finished"]:
        shutil.copyfile(path / "summary.json", target / "summary.json")
    else:
        write_summary(target, "train", run["config"], finished=False, source=str(path), **{
            k: figures[k] for k in ("epochs_done", "peak_test_accuracy", "peak_epoch", "final_test_accuracy")})


def run(args, out):
    paths = validate(args)
    runs = {label: read_run(path) for label, path in paths.items()}
    reference = args.reference or next((k for k, r in runs.items() if r["config"]["rule"] == "bp"), None)
    if reference is not None and len(runs) == 1:
        reference = None
    figures = {label: run_figures(r, runs[reference] if reference and label != reference else None, args.window)
               for label, r in runs.items()}
    with open(out / "runs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "rule", "seed", "regulariser", "epoch", "test_accuracy"])
        for label, r in runs.items():
            c = r["config"]
            writer.writerows([label, c["rule"], c["seed"], c["regulariser"], f"{e:g}", a]
                             for e, a in zip(r["epochs"], r["accuracy"]))
    curves = {label: (r["epochs"], r["accuracy"], r["config"]) for label, r in runs.items()}
    fig, axes = new_figure(2, 1, figsize=(7.5, 6.0), sharex=True, height_ratios=(2, 1))
    accuracy_over_epochs(axes[:, 0], curves, reference=reference, window=args.window)
    save_figure(fig, out / "test_accuracy.png")
    if args.record:
        for label, path in paths.items():
            record(label, path, runs[label], figures[label], out)
    write_summary(out, "compare_runs", {"runs": {k: str(v) for k, v in paths.items()}, "reference": reference,
                                        "window": args.window}, runs=figures)
    print(markdown_table(runs, figures, reference, args.window))
