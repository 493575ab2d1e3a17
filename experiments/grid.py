"""Grids of training runs shared by fig2 and fig3: run (or reuse) each, then tabulate.

Every run lives in ``RUNS/<dataset>-<rule>-<arch>-s<seed>`` (``-eval<N>`` added with
``--eval-every N``, ``-float32`` with ``--dtype float32``) and is resumed from its
checkpoint, so a grid that was interrupted, or that overlaps an earlier one, only trains
what is missing: finished runs are not touched and a run stopped in its k-th epoch
continues from the checkpoint of epoch k - 1.
``arch`` is "sq<H>" (784 wide, H hidden layers, leaky ReLU), "lin<H>" (the same, linear)
or "var" (widths 784, 784, 500, 200, 10).  The runs are the points of a sweep
(:func:`experiments.sweep.run_points`): a local process pool (``--workers``) or a Dask
cluster (``--scheduler``), finished runs recorded in ``OUT/points.jsonl``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np

import models
from analysis.plots import accuracy_bars
from models.training import TrainConfig, with_defaults
from models.validation import check_count

from .datasets import DATASETS, Dataset, load_dataset
from .options import add_data_arguments, add_dtype_argument, comma_list, count_list, given_or, quick_help
from .sweep import add_sweep_arguments, check_sweep_arguments, pool_size, run_points
from .train import add_eval_every_argument, check_eval_every, describe_result, resume_run

VARIABLE_WIDTHS = [784, 784, 500, 200, 10]
#: Training and test images of a --quick grid: a few batches of the embedded subset.
QUICK_SAMPLES = (180, 200)
#: What a grid records of each run (its summary.json's entries; None where an older run lacks one).
RESULT_KEYS = ("peak_test_accuracy", "peak_test_epoch", "peak_test_step", "final_test_accuracy",
               "peak_train_accuracy", "final_train_accuracy", "evaluations", "seconds_per_epoch",
               "evaluation_overhead", "evaluation_share")


def arch_config(arch: str, rule: str, dataset: str, seed: int, epochs: int, eval_every: int | None = None,
                dtype: str = "float64") -> TrainConfig:
    if arch == "var":
        widths, activation, reg = VARIABLE_WIDTHS, "leaky_relu", None
    elif arch.startswith("sq"):
        widths, activation, reg = [784] * (int(arch[2:]) + 2), "leaky_relu", None
    elif arch.startswith("lin"):
        widths, activation, reg = [784] * (int(arch[3:]) + 2), "linear", 0.0  # Fig. 2C: no regulariser
    else:
        raise ValueError(f"arch: expected 'sq<H>', 'lin<H>' or 'var', got {arch!r}")
    return TrainConfig(dataset=dataset, rule=rule, widths=widths, activation=activation, regulariser=reg,
                       seed=seed, epochs=epochs, eval_every=eval_every, dtype=dtype).resolved()


def point_config(point: dict) -> TrainConfig:
    """The configuration of a grid's run (a point of :func:`grid_points`)."""
    return arch_config(point["arch"], point["rule"], point["dataset"], point["seed"], point["epochs"],
                       point["eval_every"], point.get("dtype", "float64"))


def run_name(dataset: str, rule: str, arch: str, seed: int, eval_every: int | None = None,
             dtype: str = "float64") -> str:
    """The directory name of one run of a grid, under --runs-dir."""
    return (f"{dataset}-{rule}-{arch}-s{seed}" + (f"-eval{eval_every}" if eval_every is not None else "")
            + ("" if dtype == "float64" else f"-{dtype}"))


#: option -> (default, default with --quick)
QUICK = {"seeds": ("0,1", "0"), "epochs": (5, 1)}


def add_grid_arguments(parser, datasets_default: str):
    parser.add_argument("--datasets", metavar="DATASET,...", help=quick_help(
        f"datasets, from {', '.join(DATASETS)}", datasets_default, "embedded"))
    parser.add_argument("--rules", metavar="RULE,...", default="bp,tp,gait",
                        help=f"learning rules, from {', '.join(models.RULES)}")
    parser.add_argument("--seeds", metavar="SEED,...", help=quick_help("seeds of the runs (the paper used 0,1,2,3,4)",
                                                                       *QUICK["seeds"]))
    parser.add_argument("--epochs", type=int, help=quick_help("epochs of every run", *QUICK["epochs"]))
    parser.add_argument("--runs-dir", metavar="DIR", help=quick_help(
        "directory of the individual runs, shared between grids", "results/runs",
        "OUT/runs, so that quick runs never mix with real ones"))
    add_data_arguments(parser)
    add_eval_every_argument(parser)
    add_dtype_argument(parser)
    add_sweep_arguments(parser)
    parser.add_argument("--tabulate-only", action="store_true",
                        help="train nothing: tabulate the runs already finished in --runs-dir and list the missing "
                             "ones")


def grid_settings(args, datasets_default: str) -> dict:
    """The grid's settings: the options given, --quick's defaults for the others (checked: ValidationError)."""
    check_sweep_arguments(args)
    runs = Path(given_or(args, "runs_dir", "results/runs", Path(args.out) / "runs"))
    return {"datasets": comma_list("--datasets", given_or(args, "datasets", datasets_default, "embedded"), DATASETS),
            "rules": comma_list("--rules", args.rules, models.RULES),
            "seeds": count_list("--seeds", given_or(args, "seeds", *QUICK["seeds"]), minimum=0),
            "epochs": check_count("--epochs", given_or(args, "epochs", *QUICK["epochs"])),
            "eval_every": check_eval_every(args), "dtype": args.dtype, "runs": runs}


#: (dataset, data_dir, allow_download, quick) -> Dataset: the last one a worker process loaded.
_DATA: dict = {}


def grid_data(dataset: str, data_dir=None, allow_download: bool = True, quick: bool = False) -> Dataset:
    """The images of a grid's runs (--quick: :data:`QUICK_SAMPLES` of them); a process keeps the last one loaded."""
    key = (dataset, data_dir, allow_download, quick)
    if key not in _DATA:
        _DATA.clear()  # one dataset in memory per worker (60000 Fashion-MNIST images: 376 MB)
        data = load_dataset(dataset, data_dir, allow_download=allow_download)
        if quick:
            (n_train, n_test) = QUICK_SAMPLES
            data = Dataset(data.name, data.train_x[:n_train], data.train_y[:n_train], data.test_x[:n_test],
                           data.test_y[:n_test])
        _DATA[key] = data
    return _DATA[key]


def train_cell(point: dict, data_dir=None, allow_download: bool = True, lu_threads: int | None = None,
               on_batch=None) -> dict:
    """Train one run of a grid in ``point["run"]``, or continue it there; its results (in a worker process).

    ``point``: "run" (its directory), "dataset", "arch", "rule", "seed", "epochs", "eval_every"
    and "quick" (a few batches: :data:`QUICK_SAMPLES`).  ``on_batch(epoch, i, n_batches,
    running_loss)`` is passed to the training (see :func:`models.training.train`).
    """
    data = grid_data(point["dataset"], data_dir, allow_download, point["quick"])
    summary = resume_run(point_config(point), data, point["run"], lu_threads=lu_threads, on_batch=on_batch).summary
    return {k: summary.get(k) for k in RESULT_KEYS}


def grid_points(cells: list, settings: dict, quick: bool) -> list:
    """The runs (sweep points) of a grid's (panel, dataset, arch, rule, seed) cells, each once, in their order."""
    points = {}
    dtype = settings.get("dtype", "float64")
    for _, dataset, arch, rule, seed in cells:
        run = Path(settings["runs"]) / run_name(dataset, rule, arch, seed, settings["eval_every"], dtype)
        point = {"run": str(run.resolve()), "dataset": dataset, "arch": arch, "rule": rule, "seed": seed,
                 "epochs": settings["epochs"], "eval_every": settings["eval_every"], "quick": bool(quick)}
        if dtype != "float64":  # float64 points keep the keys that points.jsonl of earlier grids recorded
            point["dtype"] = dtype
        points.setdefault(run, point)
    return list(points.values())


def train_grid(points: list, path, *, data_dir=None, allow_download: bool = True, workers: int | None = None,
               scheduler: str | None = None, label: str = "grid", on_batch=None) -> list:
    """Train (or continue) the runs ``points`` (:func:`grid_points`) as a sweep recorded in ``path``; their records.

    On the local pool the datasets of the unfinished runs are looked up first, here: a missing
    one stops the grid before anything is trained, and one to download is downloaded once.
    On a Dask cluster (``scheduler``) every worker finds its own and needs ``point["run"]`` on a
    shared file system.
    """
    def find(todo):
        for dataset in dict.fromkeys(p["dataset"] for p in todo):
            load_dataset(dataset, data_dir, allow_download=allow_download)

    parallel = scheduler is not None or pool_size(workers) > 1
    train_point = partial(train_cell, data_dir=data_dir, allow_download=allow_download,
                          lu_threads=1 if parallel else None, on_batch=on_batch)  # workers already fill the cores
    return run_points(points, train_point, path, workers=workers, label=label, scheduler=scheduler,
                      describe=describe_cell, prepare=None if scheduler else find)


def describe_cell(point: dict, result: dict) -> str:
    """One line for a finished run of a grid: what was trained and how it did."""
    return f"{point['dataset']} {point['rule']} {point['arch']} seed {point['seed']}: {describe_result(result)}"


def run_grid(args, cells: list, name: str, settings: dict, out: Path) -> list:
    """Train every (panel, dataset, arch, rule, seed) cell (--tabulate-only: none); return one row per run."""
    runs = settings["runs"]
    points = grid_points(cells, settings, args.quick)
    if getattr(args, "tabulate_only", False):
        results = {point["run"]: finished_run(Path(point["run"]), point_config(point)) for point in points}
    else:
        data_dir = str(Path(args.data_dir).resolve()) if args.data_dir else None
        records = train_grid(points, out / "points.jsonl", data_dir=data_dir, allow_download=not args.no_download,
                             workers=args.workers, scheduler=args.scheduler, label=name)
        results = {r["point"]["run"]: r.get("result") for r in records}
    by_cell = {(p["dataset"], p["arch"], p["rule"], p["seed"]): p for p in points}
    rows, missing = [], []
    for panel, dataset, arch, rule, seed in cells:
        point = by_cell[dataset, arch, rule, seed]
        result = results[point["run"]]
        if result is None:
            missing.append(Path(point["run"]).name)
            continue
        rows.append({"panel": panel, "dataset": dataset, "arch": arch, "rule": rule, "seed": seed,
                     "epochs": point["epochs"], "run": point["run"], **result})
    if missing:
        why = "not finished" if getattr(args, "tabulate_only", False) else "failed"
        print(f"[{name}] {len(set(missing))} of {len(points)} runs {why} in {runs}, left out: "
              + ", ".join(dict.fromkeys(missing)), file=sys.stderr)
    return rows


def finished_run(run_dir: Path, cfg: TrainConfig) -> dict | None:
    """The results of a run in ``run_dir`` that finished with exactly ``cfg``; None otherwise."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if with_defaults(summary["config"]) != asdict(cfg):
        return None
    return {k: summary.get(k) for k in RESULT_KEYS}


def table(rows: list, keys=("panel", "dataset", "arch", "rule")) -> list:
    """Mean and standard deviation over seeds of peak test and train accuracy."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, runs in groups.items():
        test = np.array([r["peak_test_accuracy"] for r in runs])
        train_acc = np.array([r["peak_train_accuracy"] for r in runs])
        out.append({**dict(zip(keys, key)), "seeds": len(runs), "test_mean": float(test.mean()),
                    "test_std": float(test.std(ddof=1)) if len(runs) > 1 else None,  # one seed: no spread
                    "train_mean": float(train_acc.mean()),
                    "train_std": float(train_acc.std(ddof=1)) if len(runs) > 1 else None})
    return out


def print_table(summary: list) -> None:
    print(f"\n{'panel':<6}{'dataset':<15}{'arch':<6}{'rule':<6}{'seeds':>6}{'peak test %':>16}{'peak train %':>16}")
    for s in summary:
        print(f"{s['panel']:<6}{s['dataset']:<15}{s['arch']:<6}{s['rule']:<6}{s['seeds']:>6}"
              f"{_mean_std(s['test_mean'], s['test_std'])}{_mean_std(s['train_mean'], s['train_std'])}")


def test_std_percent(cell: dict) -> float:
    """A table cell's test-accuracy spread in percent; NaN (no error bar) for a single seed."""
    return 100 * cell["test_std"] if cell["test_std"] is not None else float("nan")


def _mean_std(mean: float, std: float | None) -> str:
    return f"{100 * mean:>10.2f}" + (f" +- {100 * std:<4.2f}" if std is not None else " " * 8)


def bar_plot(ax, summary, group_key: str, rules, title: str):
    """Peak test accuracy (%) per ``group_key`` value, a bar per rule (rule colours), std over seeds as error bars."""
    groups = sorted({s[group_key] for s in summary}, key=str)
    cells = {(s[group_key], s["rule"]): s for s in summary}
    accuracy_bars(ax, groups, rules, {key: 100 * s["test_mean"] for key, s in cells.items()},
                  {key: test_std_percent(s) for key, s in cells.items()})
    ax.set_title(title, fontsize=10)


def seeds_note(summary) -> str:
    """What a figure's error bars show: "std over N seeds", that one seed has none, or that no run finished."""
    seeds = sorted({s["seeds"] for s in summary})
    if not seeds:
        return "no finished runs"
    if seeds == [1]:
        return "one seed: no error bars"
    return f"error bars: std over {seeds[0] if len(seeds) == 1 else f'{seeds[0]}-{seeds[-1]}'} seeds"
