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

import circuit
import models
from analysis.metrics import cosine
from analysis.plots import scatter_updates, use_agg
from circuit.brian import equations
from models.validation import check_count, check_gamma

from .common import Progress, compare_with_reference, write_summary
from .datasets import load_embedded
from .options import comma_list, given_or, quick_help

DESCRIPTION = __doc__


def add_arguments(parser):
    parser.add_argument("--gamma", type=float, default=1e-3, help="feedback coupling, in (0, 1)")
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
    ref_dW, _ = models.target_updates(net, reference)
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
            })
        progress.step(f"{name}: settled, residual {np.max(state.residual):.1e}")
    print("\nBrian2 equations of every layer (generated from the specification; tau = "
          f"{spec.tau * 1e3:g} ms):\n" + "\n".join("    " + line for line in equations(spec).splitlines()))
    print(f"\ncircuit ({args.mode} coupling, gamma = {args.gamma:g}) against discrete {args.mode.upper()} and BP")
    print(f"{'engine':<8}{'layer':>6}{'target err':>12}{'update err':>12}{'cos(circ,BP)':>14}{'cos(GAIT,BP)':>14}"
          f"{'residual':>10}")
    for r in rows:
        print(f"{r['engine']:<8}{r['layer']:>6}{r['rel_error_target']:>12.2e}{r['rel_error_update_vs_gait']:>12.2e}"
              f"{r['cosine_circuit_bp']:>14.5f}{r['cosine_gait_bp']:>14.5f}{r['max_residual']:>10.1e}")
    plot_trajectories(trajectories[engines[0]], reference, k, spec, out, engines[0])
    plot_updates(updates, ref_dW, bp, out)
    write_summary(out, "demo", {**vars(args), "batch": batch, "widths": list(net.widths)}, rows=rows)


def plot_trajectories(trajectories, reference, k, spec, out, engine_name):
    plt = use_agg()
    free, nudged = trajectories
    L = spec.depth
    fig, axes = plt.subplots(2, L, figsize=(3.2 * L, 6), squeeze=False)
    units = [0, 1, 2, 3]
    for i in range(L):
        ax = axes[0, i]
        for j, u in enumerate(units):
            ax.plot(free.times * 1e3, free.rates[i][:, 0, u], color=f"C{j}")
            ax.axhline(free.rates[i][-1, 0, u], color=f"C{j}", lw=0.5, ls=":")
        ax.set_title(f"layer {i + 1}: free phase from rest", fontsize=9)
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("rate r")
        ax = axes[1, i]
        for j, u in enumerate(units):
            scaled = nudged.deviations[i][:, 0, u] / k[i][0, u] if k[i][0, u] > 0 else nudged.deviations[i][:, 0, u]
            ax.plot(nudged.times * 1e3, scaled, color=f"C{j}")
            if k[i][0, u] > 0:
                ax.axhline(reference.deviations[i][0, u], color=f"C{j}", lw=0.8, ls="--")
        ax.set_title(f"layer {i + 1}: nudged, (r - y) / k", fontsize=9)
        ax.set_xlabel("time (ms)")
    axes[1, 0].set_ylabel("deviation / coupling\n(dashed: discrete GAIT t - y)")
    fig.suptitle(f"Circuit dynamics ({engine_name} engine, tau = {spec.tau * 1e3:g} ms, sample 0, "
                 "four units per layer)")
    fig.tight_layout()
    fig.savefig(out / "demo_trajectories.png", dpi=110)
    plt.close(fig)


def plot_updates(updates, ref_dW, bp, out):
    plt = use_agg()
    name = next(iter(updates))
    L = len(ref_dW)
    fig, axes = plt.subplots(2, L, figsize=(3 * L, 5.6), squeeze=False)
    for i in range(L):
        scatter_updates(axes[0, i], ref_dW[i], updates[name][i], xlabel=f"discrete GAIT, layer {i + 1}",
                        ylabel=f"circuit ({name})")
        scatter_updates(axes[1, i], bp[i], updates[name][i], xlabel=f"BP, layer {i + 1}", ylabel=f"circuit ({name})")
    fig.tight_layout()
    fig.savefig(out / "demo_updates.png", dpi=110)
    plt.close(fig)
