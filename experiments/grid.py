"""Grids of training runs shared by fig2 and fig3: run (or reuse) each, then tabulate.

Every run lives in ``RUNS/<dataset>-<rule>-<arch>-s<seed>`` and is resumed from its
checkpoint, so a grid that was interrupted, or that overlaps an earlier one, only trains
what is missing.  ``arch`` is "sq<H>" (784 wide, H hidden layers, leaky ReLU), "lin<H>"
(the same, linear) or "var" (widths 784, 784, 500, 200, 10).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

import models
from analysis.plots import accuracy_bars
from models.training import TrainConfig, train, with_defaults
from models.validation import check_count

from .common import Progress
from .datasets import DATASETS, Dataset, load_dataset
from .options import add_data_arguments, comma_list, count_list, given_or, quick_help
from .train import record_run

VARIABLE_WIDTHS = [784, 784, 500, 200, 10]


def arch_config(arch: str, rule: str, dataset: str, seed: int, epochs: int) -> TrainConfig:
    if arch == "var":
        widths, activation, reg = VARIABLE_WIDTHS, "leaky_relu", None
    elif arch.startswith("sq"):
        widths, activation, reg = [784] * (int(arch[2:]) + 2), "leaky_relu", None
    elif arch.startswith("lin"):
        widths, activation, reg = [784] * (int(arch[3:]) + 2), "linear", 0.0  # Fig. 2C: no regulariser
    else:
        raise ValueError(f"arch: expected 'sq<H>', 'lin<H>' or 'var', got {arch!r}")
    return TrainConfig(dataset=dataset, rule=rule, widths=widths, activation=activation, regulariser=reg,
                       seed=seed, epochs=epochs).resolved()


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
    parser.add_argument("--tabulate-only", action="store_true",
                        help="train nothing: tabulate the runs already finished in --runs-dir and list the missing "
                             "ones")


def grid_settings(args, datasets_default: str) -> dict:
    """The grid's settings: the options given, --quick's defaults for the others (checked: ValidationError)."""
    runs = Path(given_or(args, "runs_dir", "results/runs", Path(args.out) / "runs"))
    return {"datasets": comma_list("--datasets", given_or(args, "datasets", datasets_default, "embedded"), DATASETS),
            "rules": comma_list("--rules", args.rules, models.RULES),
            "seeds": count_list("--seeds", given_or(args, "seeds", *QUICK["seeds"]), minimum=0),
            "epochs": check_count("--epochs", given_or(args, "epochs", *QUICK["epochs"])),
            "runs": runs}


def run_grid(args, cells: list, name: str, settings: dict) -> list:
    """Train every (panel, dataset, arch, rule, seed) cell; return one row per run."""
    quick = args.quick
    runs = settings["runs"]
    cache = {}
    rows, missing = [], []
    progress = Progress(name, len(cells))
    for panel, dataset, arch, rule, seed in cells:
        cfg = arch_config(arch, rule, dataset, seed, settings["epochs"])
        run_dir = runs / f"{dataset}-{rule}-{arch}-s{seed}"
        if getattr(args, "tabulate_only", False):
            result = finished_run(run_dir, cfg)
            if result is None:
                missing.append(run_dir.name)
                continue
        else:
            if dataset not in cache:
                data = load_dataset(dataset, args.data_dir, allow_download=not args.no_download)
                if quick:  # a few batches of the embedded subset
                    data = Dataset(data.name, data.train_x[:180], data.train_y[:180], data.test_x[:200],
                                   data.test_y[:200])
                cache[dataset] = data
            trained = train(cfg, cache[dataset], run_dir, resume=True, label=f"{dataset} {rule} {arch} s{seed} ")
            record_run(trained, run_dir)
            result = trained.summary
            progress.step(f"{dataset} {rule} {arch} seed {seed}")
        rows.append({"panel": panel, "dataset": dataset, "arch": arch, "rule": rule, "seed": seed,
                     "epochs": cfg.epochs, "run": str(run_dir), **result})
    if missing:
        print(f"[{name}] --tabulate-only: {len(missing)} of {len(cells)} runs not finished in {runs}, left out: "
              + ", ".join(missing), file=sys.stderr)
    return rows


def finished_run(run_dir: Path, cfg: TrainConfig) -> dict | None:
    """The results of a run in ``run_dir`` that finished with exactly ``cfg``; None otherwise."""
    path = run_dir / "summary.json"
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if with_defaults(summary["config"]) != asdict(cfg):
        return None
    return {k: summary[k] for k in ("peak_test_accuracy", "final_test_accuracy", "peak_train_accuracy",
                                    "final_train_accuracy", "seconds_per_epoch", "evaluation_overhead")}


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
    """What a figure's error bars show: "std over N seeds", or that one seed has none."""
    seeds = sorted({s["seeds"] for s in summary})
    if seeds == [1]:
        return "one seed: no error bars"
    return f"error bars: std over {seeds[0] if len(seeds) == 1 else f'{seeds[0]}-{seeds[-1]}'} seeds"
