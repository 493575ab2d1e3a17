"""The circuit's steady state against the discrete reference, over the coupling strength.

For a grid of gamma (1e-1 .. 1e-4), both coupling modes ("gait": k = gamma f'^2,
"itp": k = gamma) and both engines ("fast": scaled deviation coordinates; "brian2":
absolute rates), per layer: the relative error of the circuit's targets
(``(r_l - y_l) / k_l`` against the discrete ``t_l - y_l``) and of its local-rule updates
against the discrete rule of the same mode, the updates' cosine with BP, and the
fitted log-log slope of the update error against gamma (theory: 1 in hidden layers,
2 at the output).  Network: 4 layers, orthogonal weights, width 50, Gaussian inputs,
random class labels with the quadratic loss.
"""

from __future__ import annotations

import numpy as np

import circuit
import models
from analysis.metrics import loglog_slope
from analysis.plots import legend_handles, line_handle, line_style, new_figure, save_figure, sequential_colors
from models.validation import check_count

from .common import Progress, compare_with_reference, write_summary
from .options import add_size_arguments, comma_list, sizes

DESCRIPTION = __doc__


#: option -> (default, default with --quick)
QUICK = {"width": (50, 30), "batch": (8, 4)}


def add_arguments(parser):
    add_size_arguments(parser, QUICK)
    parser.add_argument("--hidden", type=int, default=3, metavar="N", help="hidden layers")
    parser.add_argument("--engines", metavar="ENGINE,...", default=",".join(circuit.ENGINES),
                        help=f"circuit engines, from {', '.join(circuit.ENGINES)}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, inputs and targets")


def validate(args) -> dict:
    """The study's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    return {**sizes(args, QUICK), "layers": check_count("--hidden", args.hidden) + 1,
            "engines": comma_list("--engines", args.engines, circuit.ENGINES)}


def measure(net, x, target, gamma, mode, engine_name, max_time_tau: float | None = None):
    """Per-layer metrics of one (engine, mode, gamma) point; ``max_time_tau``: the settle budget in tau."""
    spec = circuit.build_circuit(net, gamma, mode)
    engine = circuit.make_engine(spec, engine_name)
    budget = None if max_time_tau is None else max_time_tau * spec.tau
    state = engine.settle_nudged(x, target, on_failure="mask", max_time=budget)
    dW, _ = engine.plasticity(state, x)
    fwd = net.forward(x)
    ref_targets = models.compute_targets(net, fwd, target, mode, gamma)
    ref, _ = models.updates_from_targets(net, ref_targets)
    bp, _ = models.backprop(net, fwd, target)
    rows = compare_with_reference(spec, state, dW, ref_targets, ref, bp)
    for row in rows:
        row.update({"converged_fraction": float(np.mean(state.converged)), "settle_time_tau": state.time_in_tau})
    return rows


def run(args, out):
    gammas = [1e-1, 1e-2, 1e-3, 1e-4] if args.quick else [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4]
    settings = validate(args)
    width, batch, layers, engines = (settings[k] for k in ("width", "batch", "layers", "engines"))
    net = models.init_network([width] * (layers + 1), "orthogonal", seed=args.seed, n_out=10)
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((batch, width))
    target = models.constructed_target("quadratic", net.forward(x).rates[-1], rng.integers(0, 10, batch), 10)
    points = [(e, m, g) for e in engines for m in circuit.MODES for g in gammas]
    progress = Progress("equilibrium", len(points))
    rows = []
    # Brian2 settles in absolute rates: at small gamma it cannot reach its tolerance and runs
    # to max_time; the quick mode caps that (results differ only where it did not converge).
    budget_tau = {"brian2": 40.0 if args.quick else 400.0}
    for engine_name, mode, gamma in points:
        for r in measure(net, x, target, gamma, mode, engine_name, budget_tau.get(engine_name)):
            rows.append({"engine": engine_name, "mode": mode, "gamma": gamma, **r})
        progress.step(f"{engine_name} {mode} gamma={gamma:g}")
    slopes = []
    for engine_name in engines:
        for mode in circuit.MODES:
            for layer in range(1, layers + 1):
                sel = [r for r in rows if r["engine"] == engine_name and r["mode"] == mode and r["layer"] == layer]
                for lo, hi in ((1e-4, 1e-2), (1e-4, 1e-1)):
                    pts = [(r["gamma"], r["rel_error_update"]) for r in sel if lo <= r["gamma"] <= hi]
                    slopes.append({"engine": engine_name, "mode": mode, "layer": layer, "gamma_range": [lo, hi],
                                   "slope": loglog_slope(*zip(*pts))})
    plot(rows, engines, layers, out)
    print_table(rows, slopes, engines, layers)
    write_summary(out, "equilibrium", {**vars(args), **settings, "gammas": gammas},
                  rows=rows, slopes=slopes)


def print_table(rows, slopes, engines, layers):
    for engine_name in engines:
        for mode in circuit.MODES:
            print(f"\n{engine_name} engine, {mode} mode: relative update error (cosine with BP)")
            print(f"{'gamma':>8}" + "".join(f"{'layer ' + str(i):>22}" for i in range(1, layers + 1)))
            sel = [r for r in rows if r["engine"] == engine_name and r["mode"] == mode]
            for gamma in sorted({r["gamma"] for r in sel}, reverse=True):
                cells = [f"{r['rel_error_update']:.2e} ({r['cosine_bp']:+.4f})"
                         + ("*" if r["converged_fraction"] < 1 else "") for r in sel if r["gamma"] == gamma]
                print(f"{gamma:>8.0e}" + "".join(f"{c:>22}" for c in cells))
            fits = [s for s in slopes
                    if s["engine"] == engine_name and s["mode"] == mode and s["gamma_range"][1] == 1e-2]
            print(f"{'slope':>8}" + "".join(f"{s['slope']:>22.3f}" for s in fits)
                  + "   (fit over 1e-4 <= gamma <= 1e-2)")
            if any(r["converged_fraction"] < 1 for r in sel):
                print("   * some samples did not settle to the engine's tolerance within its time limit: the state "
                      "reached then")


def plot(rows, engines, layers, out):
    """Update error against gamma (top) and cosine with BP (bottom), per mode: colour = layer, style = engine."""
    fig, axes = new_figure(2, len(circuit.MODES), figsize=(11, 7.5), sharex=True)
    colors = sequential_colors(layers)
    for c, mode in enumerate(circuit.MODES):
        for engine_name in engines:
            for layer in range(1, layers + 1):
                sel = sorted((r["gamma"], r["rel_error_update"], r["cosine_bp"], r["converged_fraction"]) for r in rows
                             if r["engine"] == engine_name and r["mode"] == mode and r["layer"] == layer)
                g, err, cos, conv = map(np.array, zip(*sel))
                style = line_style(engine=engine_name, color=colors[layer - 1])
                axes[0, c].loglog(g, err, **style)
                axes[1, c].semilogx(g, cos, **style)
                if np.any(conv < 1):  # not settled to the engine's tolerance within its time limit
                    axes[0, c].loglog(g[conv < 1], err[conv < 1], "x", color="#D55E00", ms=7, mew=1.2)
        gg = np.array([1e-4, 1e-1])
        axes[0, c].loglog(gg, gg, color="0.6", lw=0.8)
        axes[0, c].set_title(f"{mode.upper()} coupling: circuit update vs discrete {mode.upper()}", fontsize=10)
        axes[0, c].set_ylabel("relative error of the update")
        axes[1, c].set_ylabel("cosine of the update with BP")
        axes[1, c].set_xlabel(r"coupling $\gamma$")
    handles = [line_handle(f"layer {i + 1}" + (" (output)" if i == layers - 1 else ""), color=colors[i], lw=2)
               for i in range(layers)]
    handles += legend_handles(engines=engines) + [line_handle(r"slope 1 (error $\propto \gamma$)", color="0.6", lw=0.8)]
    if any(r["converged_fraction"] < 1 for r in rows):
        handles.append(line_handle("did not settle within the time limit", ls="none", marker="x", color="#D55E00",
                                   ms=7, mew=1.2))
    fig.legend(handles=handles, loc="outside right upper", fontsize=8)
    save_figure(fig, out / "equilibrium_errors.png")
    return fig
