"""Fig. 3 of the paper: full-width against reduced-width networks with auxiliary units.

Full width: 784 units in each of 3 hidden layers (10 task outputs, 774 auxiliary
outputs); reduced width: 784, 784, 500, 200, 10 (auxiliary units in every layer).  BP,
TP and GAIT-prop across datasets; peak accuracy, mean and standard deviation over seeds.
"""

from __future__ import annotations

from analysis.plots import legend_handles, new_figure, save_figure

from .common import write_summary
from .grid import add_grid_arguments, bar_plot, grid_settings, print_table, run_grid, seeds_note, table

DESCRIPTION = __doc__
DATASETS_DEFAULT = "fashion_mnist,mnist,kmnist"


def add_arguments(parser):
    add_grid_arguments(parser, DATASETS_DEFAULT)


def validate(args) -> dict:
    """The figure's settings (given options, --quick's defaults for the others); ValidationError if malformed."""
    return grid_settings(args, DATASETS_DEFAULT)


def run(args, out):
    settings = validate(args)
    datasets, rules, seeds = settings["datasets"], settings["rules"], settings["seeds"]
    cells = [(arch, d, arch, r, s) for arch in ("sq3", "var") for d in datasets for r in rules for s in seeds]
    rows = run_grid(args, cells, "fig3", settings, out)
    summary = table(rows)
    print_table(summary)
    plot(summary, rules, out)
    write_summary(out, "fig3", {**vars(args), **settings}, rows=rows, table=summary)


def plot(summary, rules, out):
    """Peak test accuracy per dataset: full-width against reduced-width networks (mean, std over seeds)."""
    fig, axes = new_figure(1, 2, figsize=(10, 4.2), sharey=True)
    bar_plot(axes[0, 0], [s for s in summary if s["arch"] == "sq3"], "dataset", rules,
             "full width: 3 hidden layers of 784, 784 outputs (10 task)")
    bar_plot(axes[0, 1], [s for s in summary if s["arch"] == "var"], "dataset", rules,
             "reduced width: 784-784-500-200-10")
    axes[0, 1].set_ylabel("")
    fig.suptitle("Fig. 3: full-width networks (auxiliary outputs) against reduced width "
                 f"(peak test accuracy; {seeds_note(summary)})", fontsize=11)
    fig.legend(handles=legend_handles(rules=rules), loc="outside lower center", ncols=len(rules), fontsize=9)
    save_figure(fig, out / "fig3.png")
    return fig
