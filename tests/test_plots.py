"""Figures: drawn without pyplot or a backend switch, readable (centred colour scales, whole-number ticks, no
offset text), and in one visual vocabulary (a colour per rule, a line style per engine)."""

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from analysis import plots
from analysis.metrics import trailing_mean

ROOT = Path(__file__).resolve().parents[1]


def _draw(fig: Figure) -> None:
    fig.savefig(io.BytesIO(), format="png")


def test_every_plot_function_draws_without_pyplot_or_a_backend():
    """With a backend that does not exist, every study's plot function still writes its figure (none selects a
    backend or imports pyplot), so the same functions work in Jupyter and in scripts."""
    script = textwrap.dedent("""
        import sys, tempfile
        from pathlib import Path
        import numpy as np
        import circuit
        from experiments import alignment, coupling, coupling_learning, equilibrium, fig2, fig3, train

        out = Path(tempfile.mkdtemp())
        gammas = [1e-4, 1e-2, 0.5]
        rows = []
        for schedule in circuit.SCHEDULES:
            for mode in circuit.MODES:
                for depth in (3, 5):
                    for g in gammas:
                        for noise, precision in ((0.0, "exact"), (1e-6, "exact"), (0.0, "float32")):
                            diverged = schedule == "output" and g == 0.5
                            rows.append({"schedule": schedule, "mode": mode, "depth": depth, "gamma": g,
                                         "noise": noise, "precision": precision, "layer": None if diverged else 1,
                                         "rel_error_update": None if diverged else g + noise / g ** depth,
                                         "cosine_bp": None if diverged else 1 - g, "diverged": diverged,
                                         "converged": not diverged, "stability": None if diverged else g - 0.6,
                                         "settle_time_tau": None if diverged else 10 / g ** 0.1})
        clean = [r for r in rows if r["noise"] == 0 and r["precision"] == "exact"]
        maps = [{"depth": d, "gamma": g, "strong": k, "diverged": k > 0.9 and g > 1e-2, "converged": k < 0.9,
                 "stability": 0.02 if k == 0.9 else -0.5 * (1 - k)}
                for d in (3, 5) for g in gammas for k in (0.5, 0.9, 0.99)]
        figures = [coupling.plot(clean, [3, 5], out),
                   coupling.plot_noise(rows, coupling.best_gammas(rows), [3, 5], [0.0, 1e-6], out),
                   coupling.plot_precision(rows, [3, 5], out), coupling.plot_stability(clean, maps, [3, 5], out)]
        eq = [{"engine": e, "mode": m, "gamma": g, "layer": l, "rel_error_update": g, "cosine_bp": 1.0,
               "converged_fraction": 0.5 if e == "brian2" and g < 1e-2 else 1.0}
              for e in ("fast", "brian2") for m in circuit.MODES for g in gammas for l in (1, 2, 3)]
        figures.append(equilibrium.plot(eq, ["fast", "brian2"], 3, out))
        learn = [{"rule": "bp", "engine": "discrete", "gamma": None, "noise": 0.0, "final_test_accuracy": 0.7}]
        learn += [{"rule": "gait", "engine": e, "gamma": g, "noise": v, "final_test_accuracy": 0.6}
                  for e, v in (("discrete", 0.0), ("circuit", 0.0), ("circuit", 1e-6)) for g in gammas]
        figures.append(coupling_learning.plot(learn, gammas, [0.0, 1e-6], out))
        cell = {"dataset": "embedded", "seeds": 1, "test_mean": 0.8, "test_std": None}
        figures.append(fig2.plot([{**cell, "panel": p, "arch": a, "rule": r} for r in ("bp", "tp", "gait")
                                  for p, a in (("A", "sq1"), ("A", "sq2"), ("B", "sq4"), ("C", "lin4"))],
                                 ["bp", "tp", "gait"], ["embedded"], out))
        figures.append(fig3.plot([{**cell, "panel": a, "arch": a, "rule": r} for r in ("bp", "tp", "gait")
                                  for a in ("sq3", "var")], ["bp", "tp", "gait"], out))
        history = [{"epoch": e, "step": e, "split": s, "metric": m, "value": 0.5}
                   for e in range(3) for s in ("train", "test") for m in ("loss", "accuracy")]
        figures.append(train.plot_curves(history, train.TrainConfig(), out / "learning_curves.png"))
        rng = np.random.default_rng(0)
        updates = {(i, r): [rng.standard_normal((4, 4))] * 2 for i in ("random", "orthogonal")
                   for r in ("bp", "tp", "gait")}
        cos_rows = [{"init": i, "rule": r, "layer": l, "cosine": 0.5} for i in ("random", "orthogonal")
                    for r in ("tp", "gait") for l in (1, 2)]
        figures += alignment.plot(updates, cos_rows, ("random", "orthogonal"), ("tp", "gait"), 2, 1e-3, out)
        assert "matplotlib.pyplot" not in sys.modules, "a plot function imported pyplot"
        print(len(figures), len(list(out.glob("*.png"))))
    """)
    env = {**os.environ, "MPLBACKEND": "module://no_such_backend"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    n_figures, n_files = map(int, result.stdout.split())
    assert n_figures == n_files == 12


def test_new_figure_leaves_the_backend_alone():
    import matplotlib

    before = matplotlib.rcParams._get_backend_or_none()
    fig, axes = plots.new_figure(1, 2)
    assert isinstance(fig, Figure) and axes.shape == (1, 2)
    _draw(fig)
    assert matplotlib.rcParams._get_backend_or_none() == before


def test_stability_norm_is_centred_on_zero():
    """Margin 0 (marginal stability) maps to the middle of the diverging colour map, white; any positive margin
    (unstable) to its red half and any negative one to its blue half, whatever the range of the values, and a
    marginal one (|margin| a few 1e-3/tau) visibly so next to margins of order 1/tau."""
    norm = plots.stability_norm([-0.56, -0.1, np.nan, 0.04])
    assert norm(0.0) == 0.5 and norm(-0.56) == 0.0 and norm(0.56) == 1.0
    assert norm(0.005) - 0.5 == pytest.approx(0.5 - norm(-0.005))  # the same scale on both sides
    only_stable = plots.stability_norm([-0.5, -0.1])
    assert only_stable(0.0) == 0.5 and only_stable(-0.5) == 0.0 and only_stable(1e-6) > 0.5
    fig, axes = plots.new_figure()
    margin = np.array([[-0.5, -0.01], [0.003, np.nan]])  # the margins of a real map span three decades
    mesh = plots.stability_map(axes[0, 0], [1e-3, 1e-2], [0.5, 0.9], margin, diverged=np.isnan(margin))
    r, g, b, _ = mesh.cmap(mesh.norm(0.0))
    assert min(r, g, b) > 0.9, "zero margin is not drawn white"
    r, g, b, _ = mesh.cmap(mesh.norm(0.003))
    assert r > g > b and r - b > 0.2, "a small positive (unstable) margin is not drawn red"
    r, g, b, _ = mesh.cmap(mesh.norm(-0.003))
    assert b > g > r and b - r > 0.2, "a small negative (stable) margin is not drawn blue"


def test_learning_curves_tick_whole_epochs():
    history = [{"epoch": e, "step": e, "split": s, "metric": m, "value": 0.5 + 0.1 * e}
               for e in range(3) for s in ("train", "test") for m in ("loss", "accuracy")]
    fig, axes = plots.new_figure(1, 2)
    plots.learning_curves(axes[0], history, rule="gait")
    _draw(fig)
    for ax in axes[0]:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_scatter_scales_into_the_labels_instead_of_offset_text():
    """Offset text ("1e-3" above an axis) collides with titles: the power of ten goes into the axis label."""
    rng = np.random.default_rng(0)
    reference = 1e-3 * rng.standard_normal((20, 20))
    fig, axes = plots.new_figure()
    ax = axes[0, 0]
    c = plots.scatter_updates(ax, reference, 10 * reference, xlabel="BP", ylabel="TP", title="layer 1")
    _draw(fig)
    assert c == pytest.approx(1.0)
    assert ax.xaxis.get_offset_text().get_text() == "" and ax.yaxis.get_offset_text().get_text() == ""
    assert "10^{-3}" in ax.get_xlabel() and "10^{-2}" in ax.get_ylabel()
    assert ax.get_title() == "layer 1: cos = 1.0000"


def test_bars_use_the_rule_colours_and_leave_the_legend_to_the_figure():
    fig, axes = plots.new_figure()
    ax = axes[0, 0]
    plots.accuracy_bars(ax, ["mnist"], ["bp", "gait"], {("mnist", "bp"): 89.4, ("mnist", "gait"): 86.6})
    assert ax.get_legend() is None
    colours = [tuple(p.get_facecolor()[:3]) for p in ax.patches]
    from matplotlib.colors import to_rgb

    assert colours == [to_rgb(plots.RULE_COLORS["bp"]), to_rgb(plots.RULE_COLORS["gait"])]
    assert ax.get_ylim() == (0, 105)


def test_one_style_per_engine_and_one_colour_per_rule():
    assert len({s["linestyle"] for s in plots.ENGINE_STYLES.values()}) == len(plots.ENGINE_STYLES)
    assert len(set(plots.RULE_COLORS.values())) == len(plots.RULE_COLORS)
    style = plots.line_style(rule="gait", engine="brian2")
    assert style["color"] == plots.RULE_COLORS["gait"] and style["linestyle"] == "--"


def test_demo_table_says_when_an_engine_did_not_converge(capsys):
    from experiments.demo import print_table

    row = {"layer": 1, "rel_error_target": 1e-3, "rel_error_update_vs_gait": 1e-3, "cosine_circuit_bp": 1.0,
           "cosine_gait_bp": 1.0, "samples": 6}
    rows = [{**row, "engine": "fast", "converged_samples": 6, "max_residual": 5e-11, "settle_time_tau": float("nan")},
            {**row, "engine": "brian2", "converged_samples": 0, "max_residual": 9.4e-3, "settle_time_tau": 400.0}]
    print_table(rows, "gait", 1e-3)
    text = capsys.readouterr().out
    assert "converged" in text and "6/6" in text and "0/6" in text and "400 (limit)" in text
    assert "brian2 did NOT converge" in text and "fast did NOT" not in text


def test_trailing_means_and_their_differences_beneath_the_curves():
    epochs, values = np.array([0.0, 1, 2, 3, 4]), np.array([0.1, 0.5, 0.7, 0.6, 0.9])
    # each epoch with the one before it; a longer window than the curve averages from its start
    assert trailing_mean(epochs[1:], values[1:], 2).tolist() == pytest.approx([0.5, 0.6, 0.65, 0.75])
    assert trailing_mean(epochs[1:], values[1:], 10).tolist() == pytest.approx([0.5, 0.6, 0.6, 0.675])
    within = np.array([0.5, 1.0, 1.5, 2.0])  # evaluations every half epoch: a window of 1 epoch holds two
    assert trailing_mean(within, [1.0, 2.0, 3.0, 4.0], 1).tolist() == pytest.approx([1.0, 1.5, 2.5, 3.5])
    fig = Figure()
    axes = [fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)]
    curves = {"bp": (epochs, values, {"rule": "bp", "regulariser": 0.0}),
              "gait": (epochs, values - np.array([0, 0.1, 0.3, 0.2, 0.0]), {"rule": "gait", "regulariser": 0.1})}
    plots.accuracy_over_epochs(axes, curves, reference="bp", window=2)
    solid, dotted = axes[1].get_lines()[:2]
    assert solid.get_label() == "gait - bp, means of 2 epochs"
    assert solid.get_ydata().tolist() == pytest.approx([-10.0, -20.0, -25.0, -10.0])   # epochs 1..4
    assert dotted.get_ydata().tolist() == pytest.approx([-10.0, -30.0, -30.0, 0.0])    # the peaks so far
