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
from models.errors import ValidationError
from models.training import TrainConfig, train, with_defaults
from models.validation import check_count

from .common import Progress
from .datasets import DATASETS, Dataset, load_dataset
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


def add_grid_arguments(parser, datasets_default: str):
    parser.add_argument("--datasets", help=f"comma-separated (default {datasets_default}; --quick: embedded)")
    parser.add_argument("--rules", default="bp,tp,gait")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 2, --quick 1; the paper used 5)")
    parser.add_argument("--epochs", type=int, help="default 5 (--quick: 1)")
    parser.add_argument("--runs", help="directory of the individual runs, shared between grids (default "
                                       "results/runs; --quick: OUT/runs, so that quick runs never mix with real ones)")
    parser.add_argument("--data-dir")
    parser.add_argument("--no-download", action="store_true")
    parser.add_argument("--tabulate-only", action="store_true",
                        help="train nothing: tabulate the runs already finished in --runs and list the missing ones")


def comma_list(option: str, text: str, choices=None, convert=str) -> list:
    """``"a,b"`` -> ["a", "b"] (each converted, and one of ``choices``); :class:`ValidationError` naming ``option``."""
    try:
        items = [convert(t.strip()) for t in text.split(",")]
    except ValueError:
        items = []
    if not items or (choices is not None and any(i not in choices for i in items)):
        allowed = f" from {', '.join(map(str, choices))}" if choices is not None else ""
        raise ValidationError(f"{option}: expected a comma-separated list{allowed}, got {text!r}")
    return items


def grid_settings(args, datasets_default: str) -> dict:
    """The grid's settings: the options given, --quick's defaults for the others (checked: ValidationError)."""
    quick = args.quick
    epochs = (1 if quick else 5) if args.epochs is None else check_count("--epochs", args.epochs)
    return {"datasets": comma_list("--datasets", args.datasets or ("embedded" if quick else datasets_default),
                                   DATASETS),
            "rules": comma_list("--rules", args.rules, models.RULES),
            "seeds": (1 if quick else 2) if args.seeds is None else check_count("--seeds", args.seeds),
            "epochs": epochs,
            "runs": Path(args.runs) if args.runs else Path(args.out) / "runs" if quick else Path("results/runs")}


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
    groups = sorted({s[group_key] for s in summary}, key=str)
    width = 0.8 / max(len(rules), 1)
    for k, rule in enumerate(rules):
        vals = [next((s for s in summary if s[group_key] == g and s["rule"] == rule), None) for g in groups]
        xs = np.arange(len(groups)) + k * width
        ax.bar(xs, [100 * v["test_mean"] if v else 0 for v in vals], width,
               yerr=[test_std_percent(v) if v else np.nan for v in vals], label=rule.upper(), capsize=3)
    ax.set_xticks(np.arange(len(groups)) + width * (len(rules) - 1) / 2)
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_ylabel("peak test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
