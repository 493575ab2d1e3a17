"""Fig. 2 of the paper: BP, TP and GAIT-prop in fixed-width (784) networks.

A: accuracy against depth (non-linear, first dataset); B: 4 hidden layers across
datasets; C: a linear network with 4 hidden layers and no regulariser.  Peak test
(and train) accuracy, mean and standard deviation over seeds.  Runs are shared with
fig3 and reused when already trained (see experiments/grid.py).
"""

from __future__ import annotations

from analysis.plots import integer_ticks, legend_handles, line_style, new_figure, save_figure

from .common import write_summary
from .grid import (
    add_grid_arguments,
    bar_plot,
    grid_settings,
    print_table,
    run_grid,
    seeds_note,
    table,
    test_std_percent,
)
from .options import count_list, given_or, quick_help

DESCRIPTION = __doc__
DATASETS_DEFAULT = "fashion_mnist,mnist,kmnist"


def add_arguments(parser):
    add_grid_arguments(parser, DATASETS_DEFAULT)
    parser.add_argument("--hidden", metavar="N,...", help=quick_help("hidden layers of panel A", "1,2,3,4", "1,2"))


def validate(args) -> dict:
    """The figure's settings (given options, --quick's defaults for the others); ValidationError if malformed."""
    settings = grid_settings(args, DATASETS_DEFAULT)
    return {**settings, "hidden": count_list("--hidden", given_or(args, "hidden", "1,2,3,4", "1,2"))}


def run(args, out):
    settings = validate(args)
    datasets, rules, hidden, seeds = settings["datasets"], settings["rules"], settings["hidden"], settings["seeds"]
    cells = [("A", datasets[0], f"sq{h}", r, s) for h in hidden for r in rules for s in seeds]
    cells += [("B", d, "sq4", r, s) for d in datasets for r in rules for s in seeds]
    cells += [("C", datasets[0], "lin4", r, s) for r in rules for s in seeds]
    unique = list(dict.fromkeys(cells))
    rows = run_grid(args, unique, "fig2", settings, out)
    summary = table(rows)
    print_table(summary)
    plot(summary, rules, datasets, out)
    write_summary(out, "fig2", {**vars(args), **settings}, rows=rows, table=summary)


def plot(summary, rules, datasets, out):
    """A: peak test accuracy against depth; B: across datasets; C: the linear network (mean, std over seeds)."""
    fig, axes = new_figure(1, 3, figsize=(13, 4.2), width_ratios=(1.2, 1, 1))
    ax = axes[0, 0]
    for rule in rules:
        pts = sorted((int(s["arch"][2:]), 100 * s["test_mean"], test_std_percent(s)) for s in summary
                     if s["panel"] == "A" and s["rule"] == rule)
        if pts:
            h, m, e = zip(*pts)
            ax.errorbar(h, m, yerr=e, capsize=3, marker="o", **line_style(rule=rule))
    ax.set_xlabel("hidden layers (784 units each)")
    ax.set_ylabel("peak test accuracy (%)")
    ax.set_title(f"A: accuracy against depth ({datasets[0]})", fontsize=10)
    integer_ticks(ax)
    bar_plot(axes[0, 1], [s for s in summary if s["panel"] == "B"], "dataset", rules, "B: 4 hidden layers, by dataset")
    bar_plot(axes[0, 2], [s for s in summary if s["panel"] == "C"], "dataset", rules,
             "C: linear network, 4 hidden layers, no regulariser")
    fig.suptitle(f"Fig. 2: BP, TP and GAIT-prop in 784-wide networks (peak test accuracy; {seeds_note(summary)})",
                 fontsize=11)
    fig.legend(handles=legend_handles(rules=rules), loc="outside lower center", ncols=len(rules), fontsize=9)
    save_figure(fig, out / "fig2.png")
    return fig
