"""Learning by the circuit against the coupling strength and the neural noise.

Each point trains a small network whose every update comes from the circuit's steady
state and the local rule (``train --update circuit``; with noise, the time-averaged state
of the Euler-Maruyama dynamics) and records its test accuracy; discrete GAIT-prop at the
same gamma and BP are the references.  Data: the embedded Fashion-MNIST subset shrunk to
7x7 pixels (49 inputs), network 49 wide with 2 hidden layers (3 layers of couplings, as in
``coupling``), batch 60, the paper's GAIT settings (published Adam, regulariser 0.1,
orthogonal initialisation) except a learning rate of 1e-3 (--lr) so that a few epochs on
1200 images already learn.  Points run in a process pool (or
on a Dask cluster: --scheduler) and are written to points.jsonl as they finish; each trains
in its own run directory under OUT/runs, checkpointed every epoch, so a rerun resumes: finished
points are not trained again, and a stopped one continues after its last finished epoch.
With --eval-every N each run is also evaluated every N batches (the published protocol):
the table and the plot then show each run's peak over all its evaluations instead of its
final accuracy (the per-epoch curves in points.jsonl keep the ends of epochs).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from analysis.plots import RULE_COLORS, line_style, new_figure, save_figure, sequential_colors
from models.errors import ValidationError
from models.training import TrainConfig
from models.validation import check_count, check_gamma, check_positive

from .common import write_summary
from .datasets import Dataset, load_embedded
from .demo import shrink
from .options import given_or, number_list, quick_help
from .sweep import add_sweep_arguments, check_sweep_arguments, run_points
from .train import add_eval_every_argument, as_usage_error, check_eval_every, resume_run

DESCRIPTION = __doc__
#: Training images of the embedded subset, and the batch (the paper's).
EMBEDDED_TRAIN, BATCH = 3000, 60
#: option -> (default, default with --quick)
QUICK = {"gammas": ("1e-3,1e-2,0.05,0.2,0.5", "1e-2,0.2"), "noises": ("0,1e-8,1e-6,1e-4", "0,1e-4"),
         "epochs": (5, 3), "train_samples": (1200, 600)}


def add_arguments(parser):
    parser.add_argument("--gammas", metavar="GAMMA,...", help=quick_help(
        "output couplings (uniform schedule) in (0, 1); numbers or log grids LO:HI:N", *QUICK["gammas"]))
    parser.add_argument("--noises", metavar="NOISE,...", help=quick_help("noise strengths of the circuit, >= 0",
                                                                          *QUICK["noises"]))
    parser.add_argument("--hidden", type=int, default=2, metavar="N", help="hidden layers of 49 units")
    parser.add_argument("--epochs", type=int, help=quick_help("passes over the training images", *QUICK["epochs"]))
    parser.add_argument("--train-samples", type=int, help=quick_help(
        f"training images per epoch, {BATCH} to {EMBEDDED_TRAIN}", *QUICK["train_samples"]))
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order")
    add_eval_every_argument(parser)
    add_sweep_arguments(parser)


def validate(args) -> dict:
    """The sweep's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    gammas = number_list("--gammas", given_or(args, "gammas", *QUICK["gammas"]))
    check_gamma(gammas, len(gammas), name="--gammas")
    noises = number_list("--noises", given_or(args, "noises", *QUICK["noises"]))
    for v in noises:
        check_positive("--noises", v, allow_zero=True)
    common = {"hidden": check_count("--hidden", args.hidden, 0),
              "epochs": check_count("--epochs", given_or(args, "epochs", *QUICK["epochs"])),
              "lr": args.lr, "seed": args.seed,
              "train_samples": given_or(args, "train_samples", *QUICK["train_samples"])}
    eval_every = check_eval_every(args)
    if eval_every is not None:  # per-epoch points keep the keys that points.jsonl of earlier sweeps recorded
        common["eval_every"] = eval_every
    if not BATCH <= common["train_samples"] <= EMBEDDED_TRAIN:
        raise ValidationError(f"--train-samples: expected {BATCH} (one batch) to {EMBEDDED_TRAIN} (the embedded "
                              f"subset), got {common['train_samples']}")
    check_sweep_arguments(args)
    points = [{"rule": "bp", "engine": "discrete", "gamma": None, "noise": 0.0, **common}]
    points += [{"rule": "gait", "engine": "discrete", "gamma": g, "noise": 0.0, **common} for g in gammas]
    points += [{"rule": "gait", "engine": "circuit", "gamma": g, "noise": v, **common} for v in noises for g in gammas]
    with as_usage_error():
        for point in points:
            point_config(point, name="embedded-7x7")
    return {"gammas": gammas, "noises": noises, "common": common, "points": points}


def small_dataset(train_samples: int) -> Dataset:
    raw = load_embedded()
    return Dataset("embedded-7x7", shrink(raw.train_x[:train_samples]), raw.train_y[:train_samples],
                   shrink(raw.test_x), raw.test_y)


def point_config(point: dict, name: str) -> TrainConfig:
    """The training configuration of one point (ValidationError if a setting is bad)."""
    return TrainConfig(dataset=name, rule=point["rule"], widths=[49] * (point["hidden"] + 2), epochs=point["epochs"],
                       batch=BATCH, lr=point["lr"], gamma=point["gamma"] or 1e-3, seed=point["seed"],
                       engine=point["engine"], noise=point["noise"], eval_every=point.get("eval_every")).resolved()


def point_name(point: dict) -> str:
    """The directory name of one point's run, under OUT/runs: every setting that changes its results but the epochs."""
    parts = [point["engine"], point["rule"]] + ([f"gamma{point['gamma']:.10g}"] if point["gamma"] is not None else [])
    parts += [f"noise{point['noise']:.10g}"] if point["engine"] == "circuit" else []
    parts += [f"h{point['hidden']}", f"lr{point['lr']:.10g}", f"n{point['train_samples']}", f"s{point['seed']}"]
    parts += [f"eval{point['eval_every']}"] if point.get("eval_every") is not None else []
    return "-".join(parts)


def learn_point(point: dict, runs, on_batch=None) -> dict:
    """Train one configuration in ``runs/<point_name>`` (or continue it there); test accuracy after every epoch,
    final, and peak (over every evaluation: with ``point["eval_every"]``, also those within epochs).

    Runs in a worker process.  ``on_batch(epoch, i, n_batches, running_loss)`` is passed to the training.
    """
    data = small_dataset(point["train_samples"])
    # one LU thread: the workers already fill the cores
    result = resume_run(point_config(point, data.name), data, Path(runs) / point_name(point), lu_threads=1,
                        on_batch=on_batch)
    epochs, values = result.series("test", "accuracy")
    ends = np.flatnonzero(np.append(epochs[1:] != epochs[:-1], True))  # each epoch's last evaluation
    accuracy = values[ends].tolist()
    return {"test_accuracy": accuracy, "final_test_accuracy": accuracy[-1],
            "peak_test_accuracy": result.summary["peak_test_accuracy"],
            "unsettled_samples": result.summary.get("unsettled_samples"),
            "seconds": sum(t["train_seconds"] + t["eval_seconds"] for t in result.epoch_times)}


def run(args, out):
    settings = validate(args)
    gammas, noises, common, points = settings["gammas"], settings["noises"], settings["common"], settings["points"]
    records = run_points(points, partial(learn_point, runs=str((out / "runs").resolve())), out / "points.jsonl",
                         workers=args.workers, label="coupling_learning", scheduler=args.scheduler,
                         describe=describe_point)
    rows, failed = [], []
    for rec in records:
        if "error" in rec:
            failed.append(rec)
            continue
        rows.append({**{k: rec["point"][k] for k in ("rule", "engine", "gamma", "noise")}, **rec["result"]})
    measure = "final" if common.get("eval_every") is None else "peak"
    print_table(rows, gammas, noises, measure)
    plot(rows, gammas, noises, out, measure)
    write_summary(out, "coupling_learning", {**vars(args), "gammas": gammas, "noises": noises, **common},
                  rows=rows, failed_points=failed)


def describe_point(point: dict, result: dict) -> str:
    """One line for a finished point: what was trained and its final test accuracy."""
    what = point["rule"].upper() if point["engine"] == "discrete" else f"circuit, noise {point['noise']:g}"
    gamma = f", gamma {point['gamma']:g}" if point["gamma"] is not None else ""
    return f"{what}{gamma}: final test accuracy {result['final_test_accuracy']:.4f} ({result['seconds']:.0f} s)"


def _find(rows, **where):
    return next((r for r in rows if all(r[k] == v for k, v in where.items())), None)


def print_table(rows, gammas, noises, measure: str = "final"):
    """The ``measure`` ("final" or "peak") test accuracy of every point, a row per noise level, a column per gamma."""
    key = f"{measure}_test_accuracy"
    bp = _find(rows, rule="bp")
    print(f"\n{measure} test accuracy" + (f" (BP: {bp[key]:.4f})" if bp else ""))
    print(f"{'':>22}" + "".join(f"{g:>10.0e}" for g in gammas))
    lines = [("discrete GAIT", {"engine": "discrete", "rule": "gait"})]
    lines += [(f"circuit, noise {v:.0e}", {"engine": "circuit", "noise": v}) for v in noises]
    for name, where in lines:
        cells = [_find(rows, gamma=g, **where) for g in gammas]
        print(f"{name:>22}" + "".join(f"{c[key]:>10.4f}" if c else f"{'failed':>10}"
                                      for c in cells))


def plot(rows, gammas, noises, out, measure: str = "final"):
    """The ``measure`` ("final" or "peak") test accuracy against gamma: the circuit per noise level (solid),
    discrete GAIT (dotted), BP, chance."""
    key = f"{measure}_test_accuracy"
    fig, axes = new_figure(figsize=(7.5, 4.2))
    ax = axes[0, 0]
    bp = _find(rows, rule="bp")
    if bp:
        ax.axhline(100 * bp[key], color=RULE_COLORS["bp"], lw=1.2, label="BP")
    sel = [_find(rows, engine="discrete", rule="gait", gamma=g) for g in gammas]
    ax.semilogx([g for g, r in zip(gammas, sel) if r], [100 * r[key] for r in sel if r],
                label="discrete GAIT", **line_style(rule="gait", engine="discrete", color="0.35"))
    colors = sequential_colors(len(noises), "plasma", stop=0.8)
    for color, v in zip(colors, noises):
        sel = [_find(rows, engine="circuit", noise=v, gamma=g) for g in gammas]
        ax.semilogx([g for g, r in zip(gammas, sel) if r], [100 * r[key] for r in sel if r],
                    label="circuit, " + ("no noise" if v == 0 else rf"noise $\sigma$ = {v:.0e}"),
                    **line_style(engine="fast", color=color))
    ax.axhline(10, color="0.6", lw=0.8, ls=":", label="chance (10 classes)")
    ax.set_xlabel(r"coupling $\gamma$ (every layer)")
    ax.set_ylabel(f"{measure} test accuracy (%)")
    best = max([100 * r[key] for r in rows] + [10.0])
    ax.set_ylim(0, min(100.0, 10 * np.ceil(best / 10) + 5))
    ax.set_title("Learning by the circuit: accuracy against the coupling and the noise", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    save_figure(fig, out / "coupling_learning.png")
    return fig
