"""Fig. 2 of the paper: BP, TP and GAIT-prop in fixed-width (784) networks.

A: accuracy against depth (non-linear, first dataset); B: 4 hidden layers across
datasets; C: a linear network with 4 hidden layers and no regulariser.  Peak test
(and train) accuracy, mean and standard deviation over seeds.  Runs are shared with
fig3 and reused when already trained (see experiments/grid.py).
"""

from __future__ import annotations

from analysis.plots import use_agg
from models.errors import ValidationError

from .common import write_summary
from .grid import (
    add_grid_arguments,
    bar_plot,
    comma_list,
    grid_settings,
    print_table,
    run_grid,
    table,
    test_std_percent,
)

DESCRIPTION = __doc__
DATASETS_DEFAULT = "fashion_mnist,mnist,kmnist"


def add_arguments(parser):
    add_grid_arguments(parser, DATASETS_DEFAULT)
    parser.add_argument("--depths", help="hidden layers for panel A (default 1,2,3,4; --quick: 1,2)")


def validate(args) -> dict:
    """The figure's settings (given options, --quick's defaults for the others); ValidationError if malformed."""
    settings = grid_settings(args, DATASETS_DEFAULT)
    depths = comma_list("--depths", args.depths or ("1,2" if args.quick else "1,2,3,4"), convert=int)
    if any(d < 1 for d in depths):
        raise ValidationError(f"--depths: expected hidden-layer counts >= 1, got {args.depths!r}")
    return {**settings, "depths": depths}


def run(args, out):
    settings = validate(args)
    datasets, rules, depths = settings["datasets"], settings["rules"], settings["depths"]
    seeds = range(settings["seeds"])
    cells = [("A", datasets[0], f"sq{h}", r, s) for h in depths for r in rules for s in seeds]
    cells += [("B", d, "sq4", r, s) for d in datasets for r in rules for s in seeds]
    cells += [("C", datasets[0], "lin4", r, s) for r in rules for s in seeds]
    unique = list(dict.fromkeys(cells))
    rows = run_grid(args, unique, "fig2", settings)
    summary = table(rows)
    print_table(summary)
    plt = use_agg()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for rule in rules:
        pts = sorted((int(s["arch"][2:]), 100 * s["test_mean"], test_std_percent(s)) for s in summary
                     if s["panel"] == "A" and s["rule"] == rule)
        if pts:
            h, m, e = zip(*pts)
            axes[0].errorbar(h, m, yerr=e, marker="o", capsize=3, label=rule.upper())
    axes[0].set_xlabel("hidden layers")
    axes[0].set_ylabel("peak test accuracy (%)")
    axes[0].set_title(f"A: depth ({datasets[0]})", fontsize=9)
    axes[0].legend(fontsize=7)
    bar_plot(axes[1], [s for s in summary if s["panel"] == "B"], "dataset", rules, "B: 4 hidden layers")
    bar_plot(axes[2], [s for s in summary if s["panel"] == "C"], "dataset", rules,
             "C: linear, 4 hidden layers, no regulariser")
    fig.tight_layout()
    fig.savefig(out / "fig2.png", dpi=110)
    plt.close(fig)
    write_summary(out, "fig2", {**vars(args), **settings}, rows=rows, table=summary)
