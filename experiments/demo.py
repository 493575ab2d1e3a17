"""The main job: a small GAIT circuit settles, and its steady state gives GAIT-prop's learning signal.

A 4-layer circuit (49 rate neurons per layer, orthogonal weights, leaky ReLU) sees
Fashion-MNIST images from the embedded subset, shrunk to 7x7 pixels.  Free phase:
the input is clamped and the rates relax from rest to the forward pass.  Nudged
phase: the output is weakly nudged toward the one-hot label (coupling gamma) and
every layer settles to a small deviation that, divided by its coupling, is the
discrete GAIT-prop target.  The local rule (somatic minus basal potential, times the
presynaptic rate) then gives the weight update, compared with discrete GAIT-prop and
with backpropagation.  Runs both engines (fast and Brian2) in well under a minute.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

import circuit
import models
from analysis.metrics import cosine
from analysis.plots import (
    RULE_COLORS,
    line_handle,
    new_figure,
    power_of_ten,
    save_figure,
    scaled_label,
    scatter_updates,
)
from circuit.brian import equations
from models.validation import check_count, check_gamma

from .common import Progress, compare_with_reference, write_summary
from .datasets import load_embedded
from .options import comma_list, given_or, quick_help

DESCRIPTION = __doc__
#: Colours of the four units drawn per layer (arbitrary units: a palette apart from the rules' colours).
UNIT_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")


def add_arguments(parser):
    parser.add_argument("--gamma", type=float, default=1e-2,
                        help="feedback coupling, in (0, 1); at 1e-2 both engines settle, at 1e-3 Brian2's absolute "
                             "rates cannot resolve layer 1's deviation and it stops at its time limit")
    parser.add_argument("--mode", choices=circuit.MODES, default="gait", help="coupling mode")
    parser.add_argument("--engines", metavar="ENGINE,...", default=",".join(circuit.ENGINES),
                        help=f"circuit engines, from {', '.join(circuit.ENGINES)}; the first draws the trajectories")
    parser.add_argument("--batch", type=int, help=quick_help("test images", *QUICK["batch"]))
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights")


#: option -> (default, default with --quick)
QUICK = {"batch": (6, 3)}


def validate(args) -> dict:
    """The demo's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    check_gamma(args.gamma, 1, name="--gamma")
    return {"engines": comma_list("--engines", args.engines, circuit.ENGINES),
            "batch": check_count("--batch", given_or(args, "batch", *QUICK["batch"]))}


def shrink(images: np.ndarray) -> np.ndarray:
    """(n, 784) images in [0, 1] -> (n, 49) by 4x4 average pooling."""
    return images.reshape(-1, 7, 4, 7, 4).mean(axis=(2, 4)).reshape(-1, 49)


def run(args, out):
    settings = validate(args)
    data = load_embedded()
    batch = settings["batch"]
    x = shrink(data.test_x[:batch])
    labels = data.test_y[:batch]
    net = models.init_network([49] * 5, "orthogonal", seed=args.seed, n_out=10)
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], labels, 10)
    spec = circuit.build_circuit(net, args.gamma, args.mode, tau=0.01)
    engines = settings["engines"]
    progress = Progress("demo", 2 * len(engines))
    reference = models.compute_targets(net, fwd, target, args.mode, args.gamma)
    ref_dW, _ = models.updates_from_targets(net, reference)
    bp, _ = models.backprop(net, fwd, target)
    k = spec.couplings(fwd.derivatives)
    rows, trajectories, updates = [], {}, {}
    for name in engines:
        engine = circuit.make_engine(spec, name)
        free = engine.simulate(x, None, duration=8 * spec.tau, n_points=161, start="rest")
        nudged = engine.simulate(x, target, duration=25 * spec.tau, n_points=251, start="free")
        trajectories[name] = (free, nudged)
        progress.step(f"{name}: trajectories")
        # Brian2 works in absolute rates: at small gamma its deepest layers cannot settle below
        # rounding, so keep what it reaches and report the residual.
        state = engine.settle_nudged(x, target, on_failure="mask")
        dW, _ = engine.plasticity(state, x)
        updates[name] = dW
        for layer, row in enumerate(compare_with_reference(spec, state, dW, reference, ref_dW, bp)):
            rows.append({
                "engine": name, "layer": row["layer"], "rel_error_target": row["rel_error_target"],
                "rel_error_update_vs_gait": row["rel_error_update"], "cosine_circuit_bp": row["cosine_bp"],
                "cosine_gait_bp": cosine(ref_dW[layer], bp[layer]),
                "settle_time_tau": state.time_in_tau, "max_residual": float(np.max(state.residual)),
                "converged_samples": int(np.sum(state.converged)), "samples": int(state.converged.size),
            })
        progress.step(f"{name}: settled, residual {np.max(state.residual):.1e}")
    print("\nBrian2 equations of every layer (generated from the specification; tau = "
          f"{spec.tau * 1e3:g} ms):\n" + "\n".join("    " + line for line in equations(spec).splitlines()))
    print_table(rows, args.mode, args.gamma)
    plot_trajectories(trajectories[engines[0]], reference, k, spec, out, engines[0])
    plot_updates(updates, ref_dW, bp, out, args.mode)
    write_summary(out, "demo", {**vars(args), "batch": batch, "widths": list(net.widths)}, rows=rows)


def print_table(rows, mode, gamma):
    """Per engine and layer: errors against the discrete rule, cosines with BP and whether the settle converged."""
    print(f"\ncircuit ({mode} coupling, gamma = {gamma:g}) against discrete {mode.upper()} and BP")
    print(f"{'engine':<8}{'layer':>6}{'target err':>12}{'update err':>12}{'cos(circ,BP)':>14}"
          f"{f'cos({mode.upper()},BP)':>14}{'converged':>11}{'residual':>10}{'settle (tau)':>14}")
    for r in rows:
        settle = "direct" if not np.isfinite(r["settle_time_tau"]) else f"{r['settle_time_tau']:.0f}"
        settle += " (limit)" if r["converged_samples"] < r["samples"] else ""
        print(f"{r['engine']:<8}{r['layer']:>6}{r['rel_error_target']:>12.2e}{r['rel_error_update_vs_gait']:>12.2e}"
              f"{r['cosine_circuit_bp']:>14.5f}{r['cosine_gait_bp']:>14.5f}"
              f"{str(r['converged_samples']) + '/' + str(r['samples']):>11}{r['max_residual']:>10.1e}{settle:>14}")
    unsettled = sorted({r["engine"] for r in rows if r["converged_samples"] < r["samples"]})
    print("converged: samples whose relative residual reached the engine's tolerance; residual: the largest one;\n"
          "settle: simulated time to convergence (direct: solved for the steady state)")
    for name in unsettled:
        print(f"note: {name} did NOT converge: its rows are the state at its time limit, not the steady state\n"
              "      (absolute rates cannot resolve deviations near 1e-16 of the rates: use a larger --gamma or the "
              "fast engine)")


def plot_trajectories(trajectories, reference, k, spec, out, engine_name):
    """Free phase from rest (top) and nudged phase (bottom) of four units per layer, sample 0."""
    free, nudged = trajectories
    L = spec.depth
    fig = Figure(figsize=(3.1 * L + 0.6, 6.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1)
    top_axes, bottom_axes = top.subplots(1, L), bottom.subplots(1, L)
    for i in range(L):
        ax = top_axes[i]
        for c, u in zip(UNIT_COLORS, range(len(UNIT_COLORS))):
            ax.plot(free.times * 1e3, free.rates[i][:, 0, u], color=c)
            ax.axhline(free.rates[i][-1, 0, u], color=c, lw=0.6, ls=":")
        ax.set_title(f"layer {i + 1}" + (" (output)" if i == L - 1 else ""), fontsize=10)
        ax.set_xlabel("time (ms)")
        ax = bottom_axes[i]
        lines = []
        for c, u in zip(UNIT_COLORS, range(len(UNIT_COLORS))):
            coupled = k[i][0, u] > 0
            scaled = nudged.deviations[i][:, 0, u] / k[i][0, u] if coupled else nudged.deviations[i][:, 0, u]
            lines.append((c, scaled, reference.deviations[i][0, u] if coupled else None))
        scale = power_of_ten(np.concatenate([s for _, s, _ in lines]))
        for c, scaled, ref in lines:
            ax.plot(nudged.times * 1e3, scaled / 10.0**scale, color=c)
            if ref is not None:
                ax.axhline(ref / 10.0**scale, color=c, lw=0.9, ls="--")
        ax.set_title(f"layer {i + 1}" + (" (output)" if i == L - 1 else ""), fontsize=10)
        ax.set_xlabel("time (ms)")
        ax.set_ylabel(scaled_label(r"$(r - y)/k$", scale))
    top_axes[0].set_ylabel("rate $r$ (dimensionless)")
    top.suptitle(f"Free phase: input clamped, rates relax from rest to the forward pass $y$ ({engine_name} engine, "
                 f"tau = {spec.tau * 1e3:g} ms, one image, four units per layer)", fontsize=11)
    bottom.suptitle(f"Nudged phase: output nudged toward the label ({spec.mode.upper()} coupling, "
                    rf"$\gamma$ = {spec.gamma.max():g}); each layer's deviation / coupling $k$", fontsize=11)
    bottom.legend(handles=[line_handle("circuit", color="0.3"),
                           line_handle("forward pass (free steady state)", color="0.3", ls=":", lw=0.6),
                           line_handle(rf"discrete {spec.mode.upper()} target deviation $t - y$ (the gap: the "
                                       r"circuit's O($\gamma$) bias)", color="0.3", ls="--", lw=0.9)],
                  loc="outside lower center", ncols=3, fontsize=8)
    save_figure(fig, out / "demo_trajectories.png")
    return fig


def plot_updates(updates, ref_dW, bp, out, mode="gait"):
    """The circuit's update (first engine) against discrete GAIT (top) and BP (bottom), entry by entry per layer."""
    name = next(iter(updates))
    L = len(ref_dW)
    fig, axes = new_figure(2, L, figsize=(3 * L, 6))
    for i in range(L):
        scatter_updates(axes[0, i], ref_dW[i], updates[name][i], xlabel=f"discrete {mode.upper()}",
                        ylabel=f"circuit ({name})", title=f"layer {i + 1}", color=RULE_COLORS[mode])
        scatter_updates(axes[1, i], bp[i], updates[name][i], xlabel="BP", ylabel=f"circuit ({name})",
                        title=f"layer {i + 1}", color=RULE_COLORS[mode])
    fig.suptitle(f"Weight updates, entry by entry: the circuit's local rule ({name} engine) against discrete "
                 f"{mode.upper()} (top) and BP (bottom); dashed: equal")
    save_figure(fig, out / "demo_updates.png")
    return fig
