"""Plots.  Functions draw arrays on a given matplotlib ``Axes`` or build a ``matplotlib.figure.Figure``.

None simulates, and none touches pyplot or matplotlib's backend: :func:`new_figure` creates a
``matplotlib.figure.Figure`` directly and ``fig.savefig(path)`` writes it without a backend, so
the same functions work in scripts, in the command line and in Jupyter (where ``ax`` comes from
``plt.subplots`` and the figure shows inline).

One visual vocabulary for every figure of the project:

- a colour per learning rule (:data:`RULE_COLORS`; the circuit's coupling modes "gait" and
  "itp" are the rules they implement), colour-blind safe (Okabe-Ito);
- a line style and marker per engine (:data:`ENGINE_STYLES`: the discrete rule, the fast circuit
  engine, the Brian2 engine), and per layer-wise coupling schedule (:data:`SCHEDULE_STYLES`);
- shades of one sequential colour map for ordered quantities such as layers or noise levels
  (:func:`sequential_colors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import SymLogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .metrics import cosine, shared_evaluations, trailing_mean

__all__ = ["RULE_COLORS", "RULE_LABELS", "ENGINE_STYLES", "ENGINE_LABELS", "SCHEDULE_STYLES", "line_style",
           "rule_label", "sequential_colors", "legend_handles", "line_handle", "patch_handle", "new_figure",
           "save_figure", "integer_ticks", "power_of_ten", "scaled_label", "scatter_updates", "cosine_by_layer",
           "learning_curves", "accuracy_over_epochs", "accuracy_bars", "stability_norm", "stability_map",
           "stability_colorbar", "symlog_margin_axis", "cell_edges", "use_agg"]

#: One colour per learning rule.
RULE_COLORS = {"bp": "#000000", "tp": "#E69F00", "itp": "#CC79A7", "gait": "#0072B2"}
RULE_LABELS = {"bp": "BP", "tp": "TP", "itp": "ITP", "gait": "GAIT"}

#: One line style (and marker) per engine: hollow squares over filled circles show where Brian2
#: and the fast engine coincide.
ENGINE_STYLES = {
    "discrete": {"linestyle": ":", "marker": "^"},
    "fast": {"linestyle": "-", "marker": "o"},
    "brian2": {"linestyle": "--", "marker": "s", "markerfacecolor": "none", "markersize": 6},
}
ENGINE_LABELS = {"discrete": "discrete rule", "fast": "fast engine", "brian2": "Brian2 engine"}

#: One line style (and marker) per layer-wise coupling schedule of the circuit.
SCHEDULE_STYLES = {
    "uniform": {"linestyle": "-", "marker": "o"},
    "geometric": {"linestyle": "-.", "marker": "^"},
    "output": {"linestyle": ":", "marker": "s"},
}


def rule_label(rule: str) -> str:
    """Display name of a rule (``"gait"`` -> ``"GAIT"``)."""
    return RULE_LABELS.get(rule, str(rule).upper())


def line_style(rule: str | None = None, engine: str | None = None, schedule: str | None = None,
               color=None) -> dict:
    """Keyword arguments for ``ax.plot``: the rule's colour, the engine's or schedule's line style and marker."""
    style = {"markersize": 4}
    for table, key in ((ENGINE_STYLES, engine), (SCHEDULE_STYLES, schedule)):
        if key is not None:
            style.update(table[key])
    if color is not None:
        style["color"] = color
    elif rule is not None:
        style["color"] = RULE_COLORS.get(rule, "0.4")
    return style


def sequential_colors(n: int, cmap: str = "viridis", start: float = 0.0, stop: float = 0.85) -> list:
    """``n`` colours along a sequential colour map (for ordered quantities: layers, noise levels)."""
    from matplotlib import colormaps

    return [colormaps[cmap](v) for v in np.linspace(start, stop, max(n, 1))][:n]


def legend_handles(rules=(), engines=(), schedules=(), rule_suffix: str = "") -> list:
    """Proxy artists for a legend of rules (colours), engines and schedules (black line styles).

    ``rule_suffix`` follows each rule's name (e.g. ``" coupling"`` for the circuit's coupling modes).
    """
    handles = [Patch(color=RULE_COLORS.get(r, "0.4"), label=rule_label(r) + rule_suffix) for r in rules]
    handles += [Line2D([], [], color="k", label=ENGINE_LABELS.get(e, e), **{**ENGINE_STYLES[e], "markersize": 5})
                for e in engines]
    handles += [Line2D([], [], color="k", label=f"{s} schedule", markersize=5, **SCHEDULE_STYLES[s])
                for s in schedules]
    return handles


def line_handle(label: str, **style) -> Line2D:
    """A proxy artist for a legend entry: a line (or marker) with ``style`` (``ax.plot`` keywords)."""
    return Line2D([], [], label=label, **style)


def patch_handle(label: str, **style) -> Patch:
    """A proxy artist for a legend entry: a filled patch (e.g. a colour of a map)."""
    return Patch(label=label, **style)


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **subplot_kw) -> tuple[Figure, np.ndarray]:
    """A ``Figure`` (constrained layout: labels, titles and outside legends are never clipped) and its axes.

    Needs no pyplot and no backend; ``subplot_kw`` go to ``Figure.subplots`` (e.g. ``sharex=True``).

    Returns
    -------
    fig : matplotlib.figure.Figure
    axes : (nrows, ncols) ndarray of Axes
    """
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, ``dpi`` dots per inch) without any backend."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    return path


def integer_ticks(ax: Axes, axis: str = "x") -> None:
    """Ticks on whole numbers only (epochs, layers, depths)."""
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def power_of_ten(values) -> int:
    """Exponent ``e`` so that ``values / 10**e`` are of order 1..10; 0 where the largest is in [0.1, 1000)."""
    top = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if not np.isfinite(top) or top == 0:
        return 0
    e = int(np.floor(np.log10(top)))
    return 0 if -1 <= e <= 2 else e


def scaled_label(label: str, exponent: int) -> str:
    """``label`` with the factor ``10**exponent`` that its axis's values were divided by."""
    return label if exponent == 0 else f"{label} ($\\times 10^{{{exponent}}}$)"


def scatter_updates(ax: Axes, reference, estimate, max_points: int = 4000, seed: int = 0, xlabel: str = "BP",
                    ylabel: str = "rule", title: str | None = None, color=None) -> float:
    """Scatter of matching entries of two updates with the identity line (dashed); returns their cosine.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    reference, estimate : array_like, same shape
        Two updates of one layer (e.g. BP's and a rule's), entry by entry on x and y.
    max_points : int
        At most this many entries are drawn, chosen at random with ``seed``; the cosine uses all.
    xlabel, ylabel : str
        Axis labels; the power of ten that each axis's values were divided by is appended (no
        offset text above the axes to collide with the title).
    title : str, optional
        The title reads ``"<title>: cos = ..."`` (default ``"cos = ..."``).
    color : matplotlib colour, optional
        Of the points (e.g. ``RULE_COLORS[rule]``).

    Returns
    -------
    float
        The cosine of ``reference`` and ``estimate``.
    """
    ref, est = np.ravel(reference), np.ravel(estimate)
    if ref.size > max_points:
        idx = np.random.default_rng(seed).choice(ref.size, max_points, replace=False)
        ref, est = ref[idx], est[idx]
    ex, ey = power_of_ten(ref), power_of_ten(est)
    ref, est = ref / 10.0**ex, est / 10.0**ey
    few = ref.size <= 500  # a few points: larger and more opaque, so that each one shows
    ax.scatter(ref, est, s=10 if few else 2, alpha=0.8 if few else 0.4, rasterized=True, color=color, linewidths=0,
               zorder=2)
    lim = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-300)
    ax.plot([-lim, lim], [-lim * 10.0 ** (ex - ey), lim * 10.0 ** (ex - ey)], color="k", lw=0.6, ls="--")
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(scaled_label(xlabel, ex))
    ax.set_ylabel(scaled_label(ylabel, ey))
    c = cosine(reference, estimate)
    ax.set_title(f"{title}: cos = {c:.4f}" if title else f"cos = {c:.4f}", fontsize=9)
    return c


def cosine_by_layer(ax: Axes, rows: list, group_keys=("init", "rule"), legend: bool = True) -> None:
    """Cosine with BP against layer, one line per group of ``rows``.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    rows : list of dict
        Each with ``"layer"`` (1 = first hidden layer), ``"cosine"`` and the ``group_keys``.
    group_keys : tuple of str
        Keys whose values make a line; the colour follows ``"rule"`` (:data:`RULE_COLORS`), the
        line style any other key (e.g. the initialisation).
    legend : bool
        Draw the legend to the right of the axes, clear of the lines.
    """
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append((r["layer"], r["cosine"]))
    others = [k for k in group_keys if k != "rule"]
    kinds = {key: sorted({str(r[key]) for r in rows}) for key in others}
    dashes = ("-", "--", ":", "-.")
    for key, pts in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        values = dict(zip(group_keys, key))
        pts.sort()
        style = {"marker": "o", "markersize": 4, "color": RULE_COLORS.get(values.get("rule"), None)}
        for k in others:
            style["linestyle"] = dashes[kinds[k].index(str(values[k])) % len(dashes)]
        label = " / ".join(rule_label(v) if k == "rule" else str(v) for k, v in values.items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
    ax.set_xlabel("layer (1 = first hidden)")
    ax.set_ylabel("cosine with BP")
    ax.axhline(1.0, color="0.6", lw=0.5)
    ax.axhline(0.0, color="0.6", lw=0.5)
    integer_ticks(ax)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def learning_curves(axes, history: list, rule: str | None = None, loss: str | None = None,
                    full_training_set: bool = False) -> None:
    """Loss and accuracy against epoch, ticks on whole epochs.

    Parameters
    ----------
    axes : sequence of two matplotlib.axes.Axes
        Loss on the first, accuracy (in %) on the second.
    history : list of dict
        Tidy rows with ``"epoch"``, ``"step"`` (batches trained), ``"split"`` ("test"; "train":
        the evaluation of the training samples, dashed; "train_running": the running mean over
        an epoch's batches, dotted, drawn at the middle of its epoch), ``"metric"`` ("loss",
        "accuracy" as a fraction) and ``"value"``.  Evaluations are drawn at their step in
        epochs (batches per epoch: the steps of the "train_running" rows over their epochs),
        so that evaluations within an epoch fall between its ends.
    rule : str, optional
        Colours the curves with :data:`RULE_COLORS`.
    loss : str, optional
        Names the loss in its axis label (e.g. "quadratic").
    full_training_set : bool
        The "train" rows evaluate the whole training set (labelled so), not a subset.
    """
    color = RULE_COLORS.get(rule, "k") if rule else "k"
    per_epoch = {r["epoch"]: r["step"] / r["epoch"] for r in history if r["split"] == "train_running" and r["epoch"]}
    batches = next(iter(per_epoch.values()), None)
    splits = {"test": ("test set", {"linestyle": "-", "marker": "o"}),
              "train": ("training set" if full_training_set else "training subset",
                        {"linestyle": "--", "marker": "s", "markerfacecolor": "none"}),
              "train_running": ("training batches, running mean", {"linestyle": ":", "marker": "."})}
    for ax, metric in zip(axes, ("loss", "accuracy")):
        scale = 100.0 if metric == "accuracy" else 1.0
        for split, (label, style) in splits.items():
            pts = [(r["epoch"] - 0.5 if split == "train_running" else r["step"] / batches if batches else r["epoch"],
                    scale * r["value"]) for r in history if r["split"] == split and r["metric"] == metric]
            if len(pts) > 60:  # evaluations every few batches: a line without markers
                style = {**style, "marker": None}
            if pts:
                ax.plot(*zip(*sorted(pts)), color=color, markersize=4, label=label, **style)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)" if metric == "accuracy" else f"{loss} loss" if loss else "loss")
        integer_ticks(ax)
    axes[-1].legend(fontsize=7)


def accuracy_over_epochs(axes, curves: dict, reference: str | None = None, window: int | None = None) -> None:
    """Test accuracy of several runs against epoch and, beneath, each run minus a reference run.

    Parameters
    ----------
    axes : sequence of one or two matplotlib.axes.Axes
        Accuracy (in %) on the first; with a ``reference``, the difference to it (percentage
        points, at the epochs both runs evaluated) on the second, and dotted the difference of
        the peaks so far (the paper's measure: the peak over all evaluations up to that epoch).
    curves : dict
        ``{label: (epochs, accuracy, config)}``: epochs (n,) (fractional where a run evaluates
        within epochs), test accuracy (n,) as fractions, and the run's configuration (a dict with
        ``"rule"`` and ``"regulariser"``): the rule's colour (:data:`RULE_COLORS`), a dashed line
        for a run with the orthogonality regulariser, other runs of the same rule in lighter
        shades.
    reference : str, optional
        The label of the run the others are compared with.
    window : int, optional
        With a ``reference``: draw, instead of the difference at each epoch, the difference of
        the means over the last ``window`` epochs (:func:`analysis.metrics.trailing_mean` of the
        differences at the shared evaluations), which shows the levels of long, noisy curves.

    Notes
    -----
    The untrained network's evaluation (epoch 0) is left out, so that the axis resolves the
    trained range.
    """
    seen = {}
    for label, (epochs, accuracy, config) in curves.items():
        trained = np.asarray(epochs) > 0
        epochs, accuracy = np.asarray(epochs)[trained], np.asarray(accuracy)[trained]
        rule = config["rule"]
        shade = seen.get(rule, 0)
        seen[rule] = shade + 1
        style = {"color": RULE_COLORS.get(rule, "0.4"), "alpha": 1.0 / (1 + 0.6 * shade),
                 "linestyle": "--" if config.get("regulariser", 0) else "-", "linewidth": 1.2}
        axes[0].plot(epochs, 100 * np.asarray(accuracy), label=label, **style)
        if reference is not None and len(axes) > 1 and label != reference:
            ref_epochs, ref_accuracy, _ = curves[reference]
            ref_epochs, ref_accuracy = np.asarray(ref_epochs), np.asarray(ref_accuracy)
            shared, mine, theirs = shared_evaluations(epochs, ref_epochs)
            difference = accuracy[mine] - ref_accuracy[theirs]
            if window is not None:  # the mean of a difference is the difference of the means
                difference = trailing_mean(shared, difference, window)
            axes[1].plot(shared, 100 * difference, **style,
                         label=f"{label} - {reference}" + ("" if window is None else f", means of {window} epochs"))
            # each run's peak over all its evaluations so far (also those the other run did not make)
            peak_gap = np.maximum.accumulate(accuracy)[mine] - np.maximum.accumulate(ref_accuracy)[theirs]
            axes[1].plot(shared, 100 * peak_gap, label=f"peaks so far, {label} - {reference}",
                         **{**style, "linestyle": ":", "linewidth": 2.0})
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    axes[0].grid(alpha=0.3)
    if reference is not None and len(axes) > 1:
        axes[1].axhline(0.0, color=RULE_COLORS.get(curves[reference][2]["rule"], "0.4"), lw=0.8)
        axes[1].set_ylabel(f"minus {reference} (points)")
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=7, loc="best")
    axes[-1].set_xlabel("epoch")


def accuracy_bars(ax: Axes, groups: list, rules, means: dict, stds: dict | None = None,
                  ylabel: str = "peak test accuracy (%)", label_values: bool = True) -> None:
    """Grouped bars on a 0..100 % axis: a group per entry of ``groups``, a bar per rule in its colour.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    groups : list
        Group labels along x (e.g. datasets); one group is fine.
    rules : sequence of str
        The bars of each group, coloured by :data:`RULE_COLORS`.
    means, stds : dict
        ``{(group, rule): value}`` in percent; a missing mean draws no bar, a missing or NaN std no
        error bar.
    label_values : bool
        Write each bar's value on it.

    Notes
    -----
    The rules' legend belongs to the caller (e.g. one figure legend from :func:`legend_handles`),
    so that it never covers a bar.
    """
    stds = stds or {}
    width = 0.8 / max(len(rules), 1)
    for k, rule in enumerate(rules):
        xs = np.arange(len(groups)) + (k - (len(rules) - 1) / 2) * width
        vals = [means.get((g, rule), np.nan) for g in groups]
        errs = [stds.get((g, rule), np.nan) for g in groups]
        bars = ax.bar(xs, np.nan_to_num(vals), width * 0.95, color=RULE_COLORS.get(rule, "0.4"),
                      label=rule_label(rule))
        if np.any(np.isfinite(errs)):
            ax.errorbar(xs, vals, yerr=errs, fmt="none", ecolor="0.3", capsize=3, lw=1)
        if label_values:  # at the foot of the bar, clear of the error bar; above a bar too short to hold it
            for bar, v in zip(bars, vals):
                if np.isfinite(v):
                    inside = v > 12
                    ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, 0 if inside else v), xytext=(0, 3),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7,
                                color="w" if inside else "k")
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels([str(g) for g in groups])
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)


def stability_norm(values, linear_width: float = 1e-3) -> SymLogNorm:
    """A colour norm centred on 0 for stability margins (largest real eigenvalue, 1/tau; > 0: unstable).

    Symmetric about 0 and logarithmic beyond ``linear_width`` on both sides, so that with a diverging
    colour map marginal cells (|margin| ~ 1e-3..1e-2, time constants of hundreds of tau) are visibly
    pale red when unstable and pale blue when stable, not lost next to the strongly stable ones.

    Parameters
    ----------
    values : array_like
        The margins to be shown (NaN ignored); they set the range, the same on both sides of 0.
    linear_width : float
        Half-width (1/tau) of the linear region around 0.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    span = max(float(np.max(np.abs(v))) if v.size else 0.0, 10 * linear_width)
    return SymLogNorm(linthresh=linear_width, linscale=0.5, vmin=-span, vmax=span, base=10)


def stability_colorbar(fig, mesh, ax, label: str = r"largest real eigenvalue ($1/\tau$); red: unstable"):
    """A colour bar for :func:`stability_map`, ticked at 0 and at plain powers of ten (0.001, 0.01, ...)."""
    from matplotlib.ticker import FuncFormatter

    cbar = fig.colorbar(mesh, ax=ax, label=label)
    top = mesh.norm.vmax
    decades = [10.0**e for e in range(-3, 2) if 10.0**e <= top]
    cbar.set_ticks(sorted([-d for d in decades] + [0.0] + decades))
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    return cbar


def symlog_margin_axis(ax: Axes, linear_width: float = 1e-3) -> None:
    """A y axis for stability margins, linear within ``linear_width`` of 0 and logarithmic beyond (as the map)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("symlog", linthresh=linear_width, linscale=0.5)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def cell_edges(centres, log: bool = False) -> np.ndarray:
    """Cell edges around sorted grid centres (geometric midpoints when ``log``)."""
    c = np.log10(centres) if log else np.asarray(centres, dtype=float)
    if len(c) == 1:
        e = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mid = (c[1:] + c[:-1]) / 2
        e = np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
    return 10**e if log else e


def stability_map(ax: Axes, x, y, margin, diverged=None, unsettled=None, log_x: bool = True, norm=None):
    """Stability margin on an (x, y) grid: blue stable, red unstable (centred on 0), dark grey diverged.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        Where to draw.
    x : (nx,) array_like
        Sorted grid centres along x (e.g. the output coupling gamma).
    y : (ny,) array_like
        Sorted grid centres along y.
    margin : (ny, nx) array_like
        Largest real eigenvalue at the steady state (1/tau); NaN where there is none.
    diverged, unsettled : (ny, nx) bool array_like, optional
        Cells whose dynamics diverged (drawn dark grey), or did not settle within the time limit (dot).
    log_x : bool
        A logarithmic x axis.
    norm : matplotlib.colors.Normalize, optional
        A norm shared between maps (default :func:`stability_norm` of ``margin``).

    Returns
    -------
    QuadMesh, for ``fig.colorbar``.
    """
    from matplotlib import colormaps

    margin = np.asarray(margin, dtype=float)
    diverged = np.zeros(margin.shape, bool) if diverged is None else np.asarray(diverged, bool)
    shown = np.where(diverged, np.nan, margin)
    cmap = colormaps["RdBu_r"].with_extremes(bad="0.3")
    mesh = ax.pcolormesh(cell_edges(x, log=log_x), cell_edges(y), np.ma.masked_invalid(shown), cmap=cmap,
                         norm=norm or stability_norm(shown), edgecolors="w", linewidth=0.3)
    if unsettled is not None:
        iy, ix = np.nonzero(np.asarray(unsettled, bool) & ~diverged)
        ax.plot(np.asarray(x)[ix], np.asarray(y)[iy], "k.", ms=4)
    if log_x:
        ax.set_xscale("log")
    return mesh


def use_agg():
    """For command-line scripts only: select the non-interactive backend and return pyplot.

    Library functions never call it (they draw on a given ``ax`` or a ``Figure`` of :func:`new_figure`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
