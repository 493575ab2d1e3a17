"""How exact must the inverse be?  GAIT-prop with feedback Q_l in place of W_l^-1 (discrete reference).

Perturbed inverses ``Q_l = W_l^-1 (I + eps E_l)`` (``E_l`` Gaussian of spectral norm 1) over a
log grid of eps (1e-6 .. 1e-1), the increment gamma (1e-4 .. 1) and the depth, in both readings
of the feedback (``models.feedback``): "absolute" (Alg. 1 as written, ``t_l = Q (f^-1(t~) - b)``:
what the circuit's steady state computes) and "difference" (``t_l = y_l + Q (f^-1(t~) - f^-1(y))``).
Per point and layer: relative error of the update against discrete GAIT with exact inverses at
the same gamma, the first-order prediction of that error (absolute form: the reconstruction
error ``rho_l`` amplified by ``S_l = prod_{j>l} 1/gamma_j``; docs/imperfect_inverses.md), the
relative error against BP and the cosine with BP.  Per eps, depth and form: the gamma with the
smallest layer-1 error against BP (the paper's conjecture: a larger increment protects against
an imperfect inverse).  Then transposed feedback ``Q_l = W_l^T`` on weights interpolated between
orthogonal (alpha = 0) and Xavier random (alpha = 1): cosines with BP and with exact GAIT
against ``||W^T W - I||_2``.  Orthogonal weights (alpha = 0 for the transpose part), width 30,
Gaussian inputs, quadratic loss on random one-hot targets, several seeds.  ``--bench`` also
times training steps (BP, exact-inverse GAIT, GAIT with learned feedback) on the 784-wide
network.  Writes inverse_error.csv, summary.json and figures.

``--circuit`` adds the circuit's axes (docs/imperfect_inverses.md, sections 3 and 6): the fast
engine with feedback ``Q_l = W_l^-1 (I + eps E_l)`` over eps (0 = exact inverse, 1e-6 .. 1e-1),
the coupling gamma (1e-4 .. 0.5), the depth and additive white noise in the rate dynamics
(Euler-Maruyama, time-averaged readout over 150 tau after the transient; ``settle_noisy``), GAIT
mode, orthogonal weights, width 30, batch 8.  Per point and layer: the local rule's update
against discrete GAIT with exact inverses at the same gamma, against the discrete absolute form
with the same ``Q`` (what the noiseless circuit computes to first order in gamma) and against
BP, the cosine with BP, and the stability margin (largest real eigenvalue of the linearised
circuit at the steady state).  Per depth, noise and eps: the gamma with the smallest layer-1
error against BP.  Points run in a process pool and are written to circuit_points.jsonl as they
finish (a rerun resumes); figure inverse_error_circuit.png.
"""

from __future__ import annotations

import csv
import time

import numpy as np

import circuit
import models
from analysis.metrics import cosine, relative_error
from analysis.plots import new_figure, save_figure
from models.errors import ValidationError
from models.feedback import (
    FORMS,
    LearnedFeedback,
    inverse_errors,
    perturbed_inverses,
    reconstruction_errors,
    transposed_weights,
    updates_with_feedback,
)
from models.training import apply_update, read_metrics, train_step
from models.validation import check_count, check_gamma, check_positive

from .common import DEFAULT_BLAS_THREADS, Progress, blas_threads, write_summary
from .options import add_size_arguments, count_list, given_or, number_list, quick_help, sizes
from .sweep import add_sweep_arguments, check_sweep_arguments, run_points

DESCRIPTION = __doc__


#: option -> (default, default with --quick)
QUICK = {"epsilons": ("1e-6:1e-1:11", "1e-6,1e-3,1e-1"), "gammas": ("1e-4:1:13", "1e-4,1e-2,1"),
         "hidden": ("2,4", "2"), "width": (30, 10), "batch": (256, 4), "seeds": ("0,1,2,3,4", "0"),
         "alphas": ("1e-6,1e-5,1e-4,1e-3,1e-2,0.03,0.1,0.3,1", "0.1,1"),
         "transpose_gammas": ("1e-3,1e-2,0.1", "1e-3"), "bench_steps": (15, 2),
         "circuit_epsilons": ("0,1e-6:1e-1:6", "0,1e-3"), "circuit_gammas": ("1e-4:0.5:13", "1e-3,0.1"),
         "circuit_noises": ("0,1e-6,1e-4", "0,1e-4"), "circuit_batch": (8, 4), "circuit_seeds": ("0,1", "0")}


def add_arguments(parser):
    parser.add_argument("--epsilons", metavar="EPS,...", help=quick_help(
        "sizes eps > 0 of the inverses' perturbation: numbers or log grids LO:HI:N", *QUICK["epsilons"]))
    parser.add_argument("--gammas", metavar="GAMMA,...", help=quick_help(
        "increments gamma in (0, 1]: numbers or log grids LO:HI:N", *QUICK["gammas"]))
    parser.add_argument("--hidden", metavar="N,...", help=quick_help(
        "hidden layers, >= 1; the results call N + 1, the layers of weights, the depth L", *QUICK["hidden"]))
    add_size_arguments(parser, QUICK)
    parser.add_argument("--alphas", metavar="ALPHA,...", help=quick_help(
        "interpolation orthogonal (0) -> Xavier (1) of the weights for the transposed feedback, besides 0",
        *QUICK["alphas"]))
    parser.add_argument("--transpose-gammas", metavar="GAMMA,...", help=quick_help(
        "increments of the transposed-feedback part", *QUICK["transpose_gammas"]))
    parser.add_argument("--seeds", metavar="SEED,...", help=quick_help("seeds, averaged over", *QUICK["seeds"]))
    parser.add_argument("--bench", action="store_true",
                        help="also time training steps: BP, exact-inverse GAIT, GAIT with learned feedback")
    parser.add_argument("--bench-width", type=int, help=quick_help("--bench: layer width", 784,
                                                                   "a 40-30-30-20 network"))
    parser.add_argument("--bench-hidden", type=int, metavar="N", help=quick_help("--bench: hidden layers", 4,
                                                                                 "a 40-30-30-20 network"))
    parser.add_argument("--bench-batch", type=int, default=60, help="--bench: samples per step")
    parser.add_argument("--bench-steps", type=int, help=quick_help("--bench: timed steps", *QUICK["bench_steps"]))
    parser.add_argument("--circuit", action="store_true",
                        help="also run the circuit (fast engine) over eps, gamma, depth and noise")
    parser.add_argument("--circuit-epsilons", metavar="EPS,...", help=quick_help(
        "--circuit: inverse errors, 0 = the exact inverse; numbers or log grids LO:HI:N", *QUICK["circuit_epsilons"]))
    parser.add_argument("--circuit-gammas", metavar="GAMMA,...", help=quick_help(
        "--circuit: couplings gamma in (0, 1); numbers or log grids LO:HI:N", *QUICK["circuit_gammas"]))
    parser.add_argument("--circuit-noises", metavar="NOISE,...", help=quick_help(
        "--circuit: noise strengths >= 0 of the rate dynamics", *QUICK["circuit_noises"]))
    parser.add_argument("--circuit-batch", type=int, help=quick_help("--circuit: samples per point",
                                                                     *QUICK["circuit_batch"]))
    parser.add_argument("--circuit-seeds", metavar="SEED,...", help=quick_help("--circuit: seeds, averaged over",
                                                                               *QUICK["circuit_seeds"]))
    add_sweep_arguments(parser)
    parser.add_argument("--tabulate-training", metavar="DIR",
                        help="only print the tables of training runs with learned feedback: DIR holds one "
                             "directory per run with its metrics.csv, named KIND_sSEED (e.g. learned_s0, "
                             "exact_gait_s0, bp_s0) (default: run the study)")


def validate(args) -> dict:
    """The study's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    epsilons = number_list("--epsilons", given_or(args, "epsilons", *QUICK["epsilons"]))
    for eps in epsilons:
        check_positive("--epsilons", eps)
    settings = {"eps_grid": epsilons}
    for name in ("gammas", "alphas", "transpose_gammas"):
        option = "--" + name.replace("_", "-")
        values = number_list(option, given_or(args, name, *QUICK[name]))
        settings[name] = [float(v) for v in check_gamma(values, len(values), allow_one=True, name=option)]
    settings.update({"depths": [h + 1 for h in count_list("--hidden", given_or(args, "hidden", *QUICK["hidden"]))],
                     **sizes(args, QUICK),
                     "seeds": count_list("--seeds", given_or(args, "seeds", *QUICK["seeds"]), minimum=0),
                     "bench_steps": check_count("--bench-steps", given_or(args, "bench_steps", *QUICK["bench_steps"])),
                     "bench_batch": check_count("--bench-batch", args.bench_batch)})
    if args.quick and args.bench_width is None and args.bench_hidden is None:
        settings["bench_widths"] = [40, 30, 30, 20]
    else:
        width = check_count("--bench-width", 784 if args.bench_width is None else args.bench_width)
        hidden = check_count("--bench-hidden", 4 if args.bench_hidden is None else args.bench_hidden, 0)
        settings["bench_widths"] = [width] * (hidden + 2)
    circuit_eps = number_list("--circuit-epsilons", given_or(args, "circuit_epsilons", *QUICK["circuit_epsilons"]))
    for eps in circuit_eps:
        check_positive("--circuit-epsilons", eps, allow_zero=True)
    circuit_gammas = number_list("--circuit-gammas", given_or(args, "circuit_gammas", *QUICK["circuit_gammas"]))
    check_gamma(circuit_gammas, len(circuit_gammas), name="--circuit-gammas")
    noises = number_list("--circuit-noises", given_or(args, "circuit_noises", *QUICK["circuit_noises"]))
    for noise in noises:
        check_positive("--circuit-noises", noise, allow_zero=True)
    settings["circuit"] = {
        "eps": circuit_eps, "gamma": circuit_gammas, "noise": noises,
        "seed": count_list("--circuit-seeds", given_or(args, "circuit_seeds", *QUICK["circuit_seeds"]), minimum=0),
        "batch": check_count("--circuit-batch", given_or(args, "circuit_batch", *QUICK["circuit_batch"]))}
    check_sweep_arguments(args)
    if args.tabulate_training:
        read_training_runs(args.tabulate_training)
    return settings


def problem(depth: int, width: int, batch: int, seed: int, alpha: float = 0.0):
    """A seeded network (orthogonal weights blended with Xavier ones by ``alpha``), batch and one-hot target."""
    net = models.init_network([width] * (depth + 1), "orthogonal", seed=seed, n_out=min(10, width))
    if alpha > 0:
        rng = np.random.default_rng([seed, 1])
        for w in net.weights:
            w *= 1.0 - alpha
            w += alpha * models.xavier_normal(width, rng)
    rng = np.random.default_rng([seed, 2])
    x = rng.standard_normal((batch, width))
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], rng.integers(0, net.n_out, batch), net.n_out)
    return net, fwd, target


def reconstruction_error_updates(net, fwd, feedback, gamma) -> list:
    """First-order prediction of the absolute form's extra update: ``A_l S_l rho_l y_{l-1}^T`` (batch mean).

    ``rho_l = (Q_{l+1} W_{l+1} - I) y_l`` is the feedback's reconstruction error of the forward pass
    and ``S_l = prod_{j=l+1..L} 1/gamma_j``; the output layer gets none (its target is given).
    """
    scales = np.append(models.layer_scales(models.layer_gammas(gamma, net.depth))[1:], 1.0)
    rho = reconstruction_errors(net, fwd, feedback)
    return models.updates_from_signals(net, fwd, [a * s * r for a, s, r in zip(fwd.derivatives, scales, rho)])[0]


def layer_rows(base: dict, dW, exact, bp) -> list:
    """Per layer: ``dW`` against exact GAIT (``exact``) and BP (``bp``), and exact GAIT against BP."""
    return [{**base, "layer": i + 1, "rel_error_update": relative_error(d, e), "rel_error_bp": relative_error(d, b),
             "cosine_bp": cosine(d, b), "cosine_exact": cosine(d, e), "exact_rel_error_bp": relative_error(e, b),
             "exact_cosine_bp": cosine(e, b)} for i, (d, e, b) in enumerate(zip(dW, exact, bp))]


def measure_perturbed(depth, width, batch, seed, gammas, eps_grid) -> list:
    """Rows of the eps x gamma x form grid for one network."""
    net, fwd, target = problem(depth, width, batch, seed)
    bp, _ = models.backprop(net, fwd, target)
    rows = []
    for eps in eps_grid:
        feedback = perturbed_inverses(net, eps, seed=seed)
        inverse_error = inverse_errors(net, feedback)
        for gamma in gammas:
            exact, _ = models.updates_from_targets(net, models.compute_targets(net, fwd, target, "gait", gamma))
            predicted = reconstruction_error_updates(net, fwd, feedback, gamma)
            for form in FORMS:
                dW, _ = updates_with_feedback(net, fwd, target, "gait", gamma, feedback, form)
                base = {"kind": "perturbed", "form": form, "depth": depth, "seed": seed, "eps": eps, "gamma": gamma}
                for row in layer_rows(base, dW, exact, bp):
                    i = row["layer"] - 1
                    row["inverse_error"] = inverse_error[i + 1] if i + 1 < depth else None
                    row["predicted_rel_error"] = (float(np.linalg.norm(predicted[i]) / np.linalg.norm(exact[i]))
                                                  if form == "absolute" else None)
                    rows.append(row)
    return rows


def measure_transpose(depth, width, batch, seed, gammas, alphas) -> list:
    """Rows of transposed feedback on weights between orthogonal (alpha 0) and Xavier (alpha 1)."""
    rows = []
    for alpha in alphas:
        net, fwd, target = problem(depth, width, batch, seed, alpha)
        bp, _ = models.backprop(net, fwd, target)
        feedback = transposed_weights(net)
        orth = inverse_errors(net, feedback)
        for gamma in gammas:
            exact, _ = models.updates_from_targets(net, models.compute_targets(net, fwd, target, "gait", gamma))
            for form in FORMS:
                dW, _ = updates_with_feedback(net, fwd, target, "gait", gamma, feedback, form)
                base = {"kind": "transpose", "form": form, "depth": depth, "seed": seed, "alpha": alpha,
                        "gamma": gamma, "orthogonality_error": float(np.mean(orth[1:]))}
                rows += layer_rows(base, dW, exact, bp)
    return rows


def mean_over_seeds(rows, keys, values) -> list:
    """One row per combination of ``keys``: the mean of each of ``values`` over the seeds."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, sel in sorted(groups.items(), key=lambda kv: [(v is None, v) for v in kv[0]]):
        row = dict(zip(keys, key))
        for v in values:
            got = [r[v] for r in sel if r[v] is not None and np.isfinite(r[v])]
            row[v] = float(np.mean(got)) if got else None
        row["seeds"] = len(sel)
        out.append(row)
    return out


def best_gammas(mean_rows, keys=("form", "depth", "eps"), extra=()) -> list:
    """Per combination of ``keys``: the gamma with the smallest seed-mean layer-1 error against BP.

    Each entry holds the keys, that gamma, its error against BP, its cosine with BP, the fields
    ``extra`` of its row, and whether the gamma is at an edge of the grid.
    """
    groups = {}
    for r in mean_rows:
        if r["layer"] == 1 and r["rel_error_bp"] is not None:
            groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    best = []
    for key, sel in sorted(groups.items()):
        b = min(sel, key=lambda r: r["rel_error_bp"])
        gammas = [r["gamma"] for r in sel]
        best.append({**dict(zip(keys, key)), "gamma": b["gamma"], "rel_error_bp": b["rel_error_bp"],
                     "cosine_bp": b["cosine_bp"], **{k: b[k] for k in extra},
                     "at_grid_edge": b["gamma"] in (min(gammas), max(gammas))})
    return best


def measure_circuit_point(point: dict) -> dict:
    """One point of the circuit part (runs in a worker process): per-layer rows and the stability margin."""
    depth, gamma, eps, noise, seed = point["depth"], point["gamma"], point["eps"], point["noise"], point["seed"]
    net, fwd, target = problem(depth, point["width"], point["batch"], seed)
    x = fwd.rates[0]
    feedback = perturbed_inverses(net, eps, seed=seed) if eps > 0 else None
    spec = circuit.build_circuit(net, gamma, "gait", feedback=feedback)
    engine = circuit.FastEngine(spec)
    try:
        state = engine.settle_nudged(x, target, on_failure="mask", forward=fwd)
        lam = float(np.max(engine.stability(x, state)))
        if noise > 0:  # average after the transient: ~10 time constants of the slowest mode
            start = min(max(50.0, 10.0 / max(-lam, 1e-3)), 2000.0)
            state = engine.settle_noisy(x, target, noise, duration=(start + 150.0) * spec.tau,
                                        average_from=start * spec.tau, seed=seed, on_failure="mask", forward=fwd)
    except circuit.DivergenceError:
        return {"diverged": True, "converged": False, "stability": None, "layers": []}
    dW, _ = engine.plasticity(state, x)
    exact, _ = models.updates_from_targets(net, models.compute_targets(net, fwd, target, "gait", gamma))
    bp, _ = models.backprop(net, fwd, target)
    absolute = exact if feedback is None else updates_with_feedback(net, fwd, target, "gait", gamma, feedback,
                                                                    "absolute")[0]
    layers = [{"layer": i + 1, "rel_error_update": relative_error(d, e), "rel_error_absolute": relative_error(d, a),
               "rel_error_bp": relative_error(d, b), "cosine_bp": cosine(d, b), "exact_rel_error_bp":
               relative_error(e, b), "exact_cosine_bp": cosine(e, b)}
              for i, (d, e, a, b) in enumerate(zip(dW, exact, absolute, bp))]
    return {"diverged": False, "converged": bool(np.all(state.converged)), "stability": lam, "layers": layers}


def circuit_points(settings: dict) -> list:
    """The circuit part's points: the grid of ``settings["circuit"]`` at the study's depths and width."""
    grid = {**settings["circuit"], "depth": settings["depths"]}
    width, batch = settings["width"], grid["batch"]
    return [{"depth": d, "eps": e, "gamma": g, "noise": v, "seed": s, "width": width, "batch": batch}
            for d in grid["depth"] for e in grid["eps"] for g in grid["gamma"] for v in grid["noise"]
            for s in grid["seed"]]


def run_circuit(args, settings: dict, out) -> dict:
    """The circuit part: sweep, seed means, best gammas, figure and printed tables."""
    points = circuit_points(settings)
    records = run_points(points, measure_circuit_point, out / "circuit_points.jsonl",
                         workers=1 if args.quick else args.workers, label="inverse_error circuit",
                         scheduler=args.scheduler)
    rows, failed = [], []
    for rec in records:
        if "error" in rec:
            failed.append(rec)
            continue
        p, r = rec["point"], rec["result"]
        base = {k: p[k] for k in ("depth", "eps", "gamma", "noise", "seed")}
        # the sweeps can settle on a fixed point the dynamics never reach: a positive eigenvalue marks it unstable
        unstable = r["stability"] is not None and r["stability"] >= 0
        base.update(diverged=r["diverged"], unstable=unstable, converged=r["converged"], stability=r["stability"])
        rows += [{**base, **layer} for layer in r["layers"]] or [{**base, "layer": None}]
    values = ("rel_error_update", "rel_error_absolute", "rel_error_bp", "cosine_bp", "exact_rel_error_bp",
              "exact_cosine_bp", "stability")
    # a grid point counts only if every seed has a stable steady state there
    lost = sorted({(r["depth"], r["eps"], r["gamma"], r["noise"]) for r in rows if r["diverged"] or r["unstable"]})
    ok = [r for r in rows if (r["depth"], r["eps"], r["gamma"], r["noise"]) not in set(lost)]
    means = mean_over_seeds(ok, ("depth", "noise", "eps", "gamma", "layer"), values)
    best = best_gammas(means, ("depth", "noise", "eps"), ("rel_error_update", "stability"))
    plot_circuit(means, best, out)
    print_circuit_tables(means, best)
    if lost:
        print(f"\ncircuit: no stable steady state for some seed (diverged or unstable) at {len(lost)} points "
              "(depth, eps, gamma, noise): " + ", ".join(f"({d}, {e:g}, {g:.2g}, {v:g})" for d, e, g, v in lost))
    return {"rows": means, "best_gamma": best, "unstable_or_diverged": lost, "failed_points": failed}


def print_circuit_tables(means, best):
    depths = sorted({r["depth"] for r in means})
    for depth in depths:
        print(f"\ncircuit, L = {depth}, noise 0, layer 1: update error vs exact GAIT / vs the discrete absolute form / "
              "cosine with BP / stability margin")
        for eps in sorted({r["eps"] for r in means}):
            sel = sorted((r for r in means if r["depth"] == depth and r["noise"] == 0 and r["layer"] == 1
                          and r["eps"] == eps), key=lambda r: r["gamma"])
            print(f"  eps {eps:.0e}  " + "  ".join(
                f"{r['gamma']:.0e}: {r['rel_error_update']:.1e}/{r['rel_error_absolute']:.1e}/{r['cosine_bp']:+.3f}/"
                f"{r['stability']:+.2f}" for r in sel[:: max(1, len(sel) // 5)]))
    print("\ncircuit: best gamma (smallest layer-1 error against BP, seed mean) per depth, noise and eps")
    for b in best:
        print(f"  L={b['depth']} noise {b['noise']:.0e} eps {b['eps']:.0e}: gamma {b['gamma']:.1e} (error vs BP "
              f"{b['rel_error_bp']:.1e}, cosine {b['cosine_bp']:+.4f}, vs exact GAIT {b['rel_error_update']:.1e}, "
              f"stability {b['stability']:+.2f}){' at grid edge' if b['at_grid_edge'] else ''}")


def plot_circuit(means, best, out):
    """Layer-1 error against gamma per eps; cosine with BP; best gamma against eps per depth and noise; stability."""
    depths, noises = sorted({r["depth"] for r in means}), sorted({r["noise"] for r in means})
    L = max(depths)
    fig, axes = new_figure(1, 4, figsize=(21, 4.6))
    axes = axes[0]
    for c, eps in enumerate(sorted({r["eps"] for r in means})):
        sel = sorted((r for r in means if r["depth"] == L and r["noise"] == 0 and r["layer"] == 1 and r["eps"] == eps),
                     key=lambda r: r["gamma"])
        g = [r["gamma"] for r in sel]
        label = "exact inverse" if eps == 0 else f"eps {eps:.0e}"
        axes[0].loglog(g, [r["rel_error_update"] for r in sel], marker="o", ms=3, color=f"C{c}", label=label)
        axes[1].semilogx(g, [r["cosine_bp"] for r in sel], marker="o", ms=3, color=f"C{c}", label=label)
        axes[3].semilogx(g, [r["stability"] for r in sel], marker="o", ms=3, color=f"C{c}", label=label)
    sel = sorted((r for r in means if r["depth"] == L and r["noise"] == 0 and r["layer"] == 1 and r["eps"] == 0),
                 key=lambda r: r["gamma"])
    axes[1].semilogx([r["gamma"] for r in sel], [r["exact_cosine_bp"] for r in sel], "k--", lw=0.8,
                     label="discrete exact GAIT")
    axes[0].set_ylabel(f"layer-1 update error vs discrete exact GAIT (L = {L})")
    axes[1].set_ylabel(f"layer-1 cosine with BP (L = {L})")
    axes[3].set_ylabel("largest real eigenvalue at steady state (1/tau)")
    axes[3].set_title("stability margin, L = %d (the curves of every eps overlap)" % L, fontsize=9)
    for ax in (axes[0], axes[1], axes[3]):
        ax.set_xlabel("coupling gamma")
    axes[0].set_title("noiseless circuit", fontsize=9)
    axes[0].legend(fontsize=6, loc="upper right")
    axes[1].legend(fontsize=6, loc="center left")
    for d, (depth, marker) in enumerate(zip(depths, "os^v")):
        for noise, style in zip(noises, ("-", "--", ":", "-.")):
            sel = sorted((b for b in best if b["depth"] == depth and b["noise"] == noise and b["eps"] > 0),
                         key=lambda b: b["eps"])
            if sel:
                axes[2].loglog([b["eps"] for b in sel], [b["gamma"] for b in sel], style, marker=marker, ms=4,
                               color=f"C{d}", label=f"L={depth}, noise {noise:g}")
    axes[2].set_xlabel("inverse error eps (||W Q - I||_2)")
    axes[2].set_ylabel("best gamma (smallest layer-1 error vs BP)")
    axes[2].legend(fontsize=6, loc="lower right")
    fig.suptitle("the circuit with an imperfect inverse: error ~ eps / gamma^(L-1) at small gamma, GAIT's own bias at "
                 "large gamma; the best gamma grows with eps and with the noise")
    save_figure(fig, out / "inverse_error_circuit.png", dpi=110)


def time_learned_feedback(widths, batch: int = 60, steps: int = 15, gamma: float = 1e-3, data=None,
                          lu_threads: int = 1) -> dict:
    """Median milliseconds per training step: BP, exact-inverse GAIT and GAIT with learned feedback.

    Each step is a forward pass, the rule's directions and an Adam step on one batch (the learned
    feedback's also includes one step of its rule, :class:`models.feedback.LearnedFeedback`), on
    an orthogonally initialised network of ``widths``, with one BLAS thread
    (``experiments.common.DEFAULT_BLAS_THREADS``) and ``lu_threads`` for the exact inverses'
    factorisations.  The three kinds of step take turns, batch by batch, so that a change in the
    machine's load affects them alike; two warm-up rounds are not counted.  ``data`` has
    ``train_x``/``train_y`` (default: the embedded Fashion-MNIST subset; uniform random inputs
    where the input width differs).
    """
    if data is None:
        from .datasets import load_embedded

        data = load_embedded()
    rng = np.random.default_rng(0)
    xs = data.train_x if data.train_x.shape[1] == widths[0] else rng.random((max(batch, 600), widths[0]))

    def exact(rule):
        inverse = models.DirectInverse(lu_threads)
        return lambda net, opt, x, target: train_step(net, opt, x, target, rule, gamma, inverse=inverse)

    def learned(net):
        hook = LearnedFeedback(net, gamma=gamma)

        def step(net, opt, x, target):
            dW, db = hook(net, x, target, net.forward(x))
            apply_update(net, opt, dW, db)
        return step

    kinds = {"bp": lambda net: exact("bp"), "gait_exact": lambda net: exact("gait"), "gait_learned": learned}
    runs = {}
    for name, make in kinds.items():
        net = models.init_network(widths, "orthogonal", seed=0, n_out=min(10, widths[-1]))
        runs[name] = (net, models.Adam.published(lr=1e-4), make(net), [])
    with blas_threads(DEFAULT_BLAS_THREADS):
        for k in range(steps + 2):
            idx = np.arange(k * batch, (k + 1) * batch) % len(xs)
            x, labels = xs[idx], data.train_y[idx % len(data.train_y)] % min(10, widths[-1])
            for net, opt, step, times in runs.values():
                target = models.constructed_target("quadratic", net.forward(x).rates[-1], labels, net.n_out)
                t0 = time.perf_counter()
                step(net, opt, x, target)
                times.append(time.perf_counter() - t0)
    out = {}
    for name, (_, _, _, times) in runs.items():
        t = np.array(times[2:])
        out[name] = {"ms_per_batch": float(np.median(t) * 1e3), "ms_min": float(t.min() * 1e3)}
    out["learned_over_exact"] = out["gait_learned"]["ms_per_batch"] / out["gait_exact"]["ms_per_batch"]
    out["learned_over_bp"] = out["gait_learned"]["ms_per_batch"] / out["bp"]["ms_per_batch"]
    return out


def timing_line(bench: dict, widths, batch: int) -> str:
    """One line of :func:`time_learned_feedback`'s figures: each kind's median step and the ratios."""
    return (f"step time, widths {list(widths)}, batch {batch}, {DEFAULT_BLAS_THREADS} BLAS thread: "
            + ", ".join(f"{k} {v['ms_per_batch']:.1f} ms" for k, v in bench.items() if isinstance(v, dict))
            + f"; learned / exact GAIT {bench['learned_over_exact']:.2f}x, "
              f"learned / BP {bench['learned_over_bp']:.2f}x")


def write_csv(path, rows) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def read_training_runs(directory) -> dict:
    """``{(kind, seed): rows}`` of the metrics.csv files in ``directory``'s subdirectories named KIND_sSEED."""
    from pathlib import Path

    runs = {}
    for path in sorted(Path(directory).glob("*_s*/metrics.csv")):
        kind, _, seed = path.parent.name.rpartition("_s")
        runs[kind, int(seed)] = read_metrics(path)
    if not runs:
        raise ValidationError(f"--tabulate-training: expected directories KIND_sSEED with a metrics.csv in "
                              f"{directory}, found none")
    return runs


def training_tables(runs: dict) -> str:
    """Markdown tables: test accuracy per epoch of every run; ||Q W - I|| and cosines with BP per layer over epochs."""
    def value(rows, epoch, split, metric):
        return next((r["value"] for r in rows if r["epoch"] == epoch and r["split"] == split
                     and r["metric"] == metric), None)

    learned = sorted(k for k in runs if k[0] == "learned")
    epochs = sorted({r["epoch"] for k in learned for r in runs[k]})
    last = max(epochs)
    names = sorted(runs, key=lambda k: (k[0] != "learned", k))
    kinds = sorted({kind for kind, _ in names}, key=lambda kind: (kind != "learned", kind))
    averaged = [kind for kind in kinds if sum(k[0] == kind for k in names) > 1]  # a mean column for these
    header = [f"{kind} s{seed}" for kind, seed in names] + [f"{kind} mean" for kind in averaged]
    lines = ["| epoch | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for epoch in range(1, last + 1):
        cells = [value(runs[k], epoch, "test", "accuracy") for k in names]
        for kind in averaged:
            got = [value(runs[k], epoch, "test", "accuracy") for k in names if k[0] == kind]
            cells.append(None if None in got else float(np.mean(got)))
        lines.append(f"| {epoch} | " + " | ".join("-" if c is None else f"{100 * c:.2f}" for c in cells) + " |")
    tables = ["test accuracy (%)", *lines]
    metrics = sorted({r["metric"] for k in learned for r in runs[k] if r["split"] == "feedback"},
                     key=lambda m: (m.rstrip("0123456789"), int(m.rpartition("layer")[2])))
    for title, prefix in (("||Q_l W_l - I||_2", "inverse_error_layer"), ("cosine with BP", "cosine_bp_layer"),
                          ("exact GAIT's cosine with BP (same probe)", "exact_cosine_bp_layer")):
        chosen = [m for m in metrics if m.startswith(prefix)]
        seeds = ", ".join(str(s) for _, s in learned)
        tables += ["", f"learned feedback, {title}, per layer (seed{'s' * (len(learned) > 1)} {seeds})",
                   "| epoch | " + " | ".join(f"layer {m.rpartition('layer')[2]}" for m in chosen) + " |",
                   "|---|" + "---|" * len(chosen)]
        fmt = "{:.1e}" if prefix.startswith("inverse") else "{:.4f}"
        for epoch in epochs:
            cells = [" / ".join(fmt.format(v) for v in (value(runs[k], epoch, "feedback", m) for k in learned)
                                if v is not None) for m in chosen]
            tables.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return "\n".join(tables)


def run(args, out):
    if args.tabulate_training:
        print(training_tables(read_training_runs(args.tabulate_training)))
        return
    settings = validate(args)
    eps_grid, gammas, depths, width, batch, seeds, t_gammas = (settings[k] for k in (
        "eps_grid", "gammas", "depths", "width", "batch", "seeds", "transpose_gammas"))
    alphas = [0.0] + settings["alphas"]
    progress = Progress("inverse_error", 2 * len(depths) * len(seeds))
    rows = []
    for depth in depths:
        for seed in seeds:
            rows += measure_perturbed(depth, width, batch, seed, gammas, eps_grid)
            progress.step(f"perturbed L={depth} seed={seed}")
            rows += measure_transpose(depth, width, batch, seed, t_gammas, alphas)
            progress.step(f"transpose L={depth} seed={seed}")
    values = ("rel_error_update", "predicted_rel_error", "rel_error_bp", "cosine_bp", "cosine_exact",
              "exact_rel_error_bp", "exact_cosine_bp", "inverse_error")
    perturbed = mean_over_seeds([r for r in rows if r["kind"] == "perturbed"],
                                ("form", "depth", "eps", "gamma", "layer"), values)
    transpose = mean_over_seeds([r for r in rows if r["kind"] == "transpose"],
                                ("form", "depth", "alpha", "gamma", "layer"),
                                ("orthogonality_error", "rel_error_update", "rel_error_bp", "cosine_bp",
                                 "cosine_exact", "exact_rel_error_bp", "exact_cosine_bp"))
    best = best_gammas(perturbed)
    slopes = best_gamma_slopes(best, perturbed)
    write_csv(out / "inverse_error.csv", rows)
    plot_perturbed(perturbed, best, depths, out)
    plot_transpose(transpose, depths, out)
    print_tables(perturbed, best, slopes, transpose, depths)
    bench = None
    if args.bench:
        widths = settings["bench_widths"]
        bench = time_learned_feedback(widths, args.bench_batch, settings["bench_steps"])
        print("\n" + timing_line(bench, widths, args.bench_batch))
    circuit_results = run_circuit(args, settings, out) if args.circuit else None
    write_summary(out, "inverse_error", {**vars(args), "eps_grid": eps_grid, "gammas": gammas, "depths": depths,
                                         "width": width, "batch": batch, "seeds": seeds, "alphas": alphas,
                                         "transpose_gammas": t_gammas},
                  rows=perturbed + transpose, best_gamma=best, best_gamma_slopes=slopes, bench=bench,
                  circuit=circuit_results)


def best_gamma_slopes(best, mean_rows) -> list:
    """Per (form, depth): least-squares slope of log(best gamma) against log(eps), off the grid's edges.

    First order (docs/imperfect_inverses.md, section 4): layer 1's error against BP is the exact rule's
    bias ``~ gamma^p`` plus the absolute form's amplified reconstruction error ``~ eps / gamma^(L-1)``,
    so the best gamma goes like ``eps^(1 / (L - 1 + p))``; ``p`` is the log-log slope of exact GAIT's
    error against BP over the range of the best gammas (1 if that bias is linear in gamma).
    """
    from analysis.metrics import loglog_slope

    out = []
    for form in FORMS:
        for depth in sorted({b["depth"] for b in best}):
            sel = [b for b in best if b["form"] == form and b["depth"] == depth and not b["at_grid_edge"]]
            if len(sel) < 3 or len({b["gamma"] for b in sel}) < 2:
                out.append({"form": form, "depth": depth, "slope": None, "points": len(sel), "bias_slope": None,
                            "predicted": None})
                continue
            lo, hi = min(b["gamma"] for b in sel), max(b["gamma"] for b in sel)
            bias = sorted({(r["gamma"], r["exact_rel_error_bp"]) for r in mean_rows if r["form"] == form
                           and r["depth"] == depth and r["layer"] == 1 and lo <= r["gamma"] <= hi})
            p = loglog_slope(*zip(*bias))
            out.append({"form": form, "depth": depth, "slope": loglog_slope([b["eps"] for b in sel],
                                                                            [b["gamma"] for b in sel]),
                        "points": len(sel), "bias_slope": p, "predicted": 1.0 / (depth - 1 + p)})
    return out


def print_tables(perturbed, best, slopes, transpose, depths):
    L = max(depths)
    for form in FORMS:
        print(f"\n{form} form, L = {L}, layer 1: update error vs exact GAIT (first-order prediction) / cosine with BP")
        eps_values = sorted({r["eps"] for r in perturbed})
        for eps in eps_values[:: max(1, len(eps_values) // 4)]:
            sel = sorted((r for r in perturbed if r["form"] == form and r["depth"] == L and r["layer"] == 1
                          and r["eps"] == eps), key=lambda r: r["gamma"])
            cells = [f"{r['gamma']:.0e}: {r['rel_error_update']:.1e}"
                     + (f" ({r['predicted_rel_error']:.1e})" if r["predicted_rel_error"] is not None else "")
                     + f"/{r['cosine_bp']:+.3f}" for r in sel]
            print(f"  eps {eps:.0e}  " + "  ".join(cells))
    print("\nbest gamma (smallest layer-1 error against BP, seed mean) per eps:")
    for b in best:
        print(f"  {b['form']:>10} L={b['depth']} eps {b['eps']:.0e}: gamma {b['gamma']:.1e} (error vs BP "
              f"{b['rel_error_bp']:.1e}, cosine {b['cosine_bp']:+.4f}){' at grid edge' if b['at_grid_edge'] else ''}")
    for s in slopes:
        if s["slope"] is not None:
            print(f"  {s['form']:>10} L={s['depth']}: d log(best gamma) / d log(eps) = {s['slope']:.2f} "
                  f"over {s['points']} points (first order: 1 / (L - 1 + p) = {s['predicted']:.2f} with exact GAIT's "
                  f"bias against BP ~ gamma^p, p = {s['bias_slope']:.2f})")
    print("\ntransposed feedback Q = W^T, layer 1: ||W^T W - I||_2 -> cosine with BP / with exact GAIT "
          "(exact GAIT's cosine with BP)")
    for form in FORMS:
        for gamma in sorted({r["gamma"] for r in transpose}):
            sel = sorted((r for r in transpose if r["form"] == form and r["depth"] == L and r["layer"] == 1
                          and r["gamma"] == gamma), key=lambda r: r["alpha"])
            print(f"  {form:>10} gamma {gamma:.0e}: " + "  ".join(
                f"{r['orthogonality_error']:.1e}->{r['cosine_bp']:+.3f}/{r['cosine_exact']:+.3f}"
                f"({r['exact_cosine_bp']:+.3f})" for r in sel))


def plot_perturbed(rows, best, depths, out):
    L = max(depths)
    fig, axes = new_figure(1, 4, figsize=(20, 4.2))
    axes = axes[0]
    gammas = sorted({r["gamma"] for r in rows})
    shown = gammas[:: max(1, len(gammas) // 4)]
    for c, gamma in enumerate(shown):
        for form, style in zip(FORMS, ("-", "--")):
            sel = sorted((r for r in rows if r["form"] == form and r["depth"] == L and r["layer"] == 1
                          and r["gamma"] == gamma), key=lambda r: r["eps"])
            axes[0].loglog([r["eps"] for r in sel], [r["rel_error_update"] for r in sel], style, marker="o", ms=3,
                           color=f"C{c}", label=f"{form}, gamma {gamma:.0e}")
    axes[0].set_xlabel("inverse error eps (||W Q - I||_2)")
    axes[0].set_ylabel(f"layer-1 update error vs exact GAIT (L = {L})")
    axes[0].legend(fontsize=6)
    eps_values = sorted({r["eps"] for r in rows})
    for c, eps in enumerate(eps_values[:: max(1, len(eps_values) // 4)]):
        sel = sorted((r for r in rows if r["form"] == "absolute" and r["depth"] == L and r["layer"] == 1
                      and r["eps"] == eps), key=lambda r: r["gamma"])
        g = [r["gamma"] for r in sel]
        axes[1].loglog(g, [r["rel_error_bp"] for r in sel], marker="o", ms=3, color=f"C{c}", label=f"eps {eps:.0e}")
        axes[1].loglog(g, [r["predicted_rel_error"] for r in sel], ":", color=f"C{c}")
        axes[2].semilogx(g, [r["cosine_bp"] for r in sel], marker="o", ms=3, color=f"C{c}")
    sel = sorted((r for r in rows if r["form"] == "absolute" and r["depth"] == L and r["layer"] == 1
                  and r["eps"] == eps_values[0]), key=lambda r: r["gamma"])
    axes[1].loglog([r["gamma"] for r in sel], [r["exact_rel_error_bp"] for r in sel],
                   "k--", lw=0.8, label="exact GAIT vs BP")
    axes[1].set_xlabel("gamma")
    axes[1].set_ylabel(f"absolute form: layer-1 error vs BP (L = {L})")
    axes[1].set_title("dotted: first-order prediction", fontsize=9)
    axes[1].legend(fontsize=6)
    axes[2].set_xlabel("gamma")
    axes[2].set_ylabel("absolute form: layer-1 cosine with BP")
    for depth, marker in zip(depths, "os^v"):
        for form, style in zip(FORMS, ("-", "--")):
            sel = sorted((b for b in best if b["form"] == form and b["depth"] == depth), key=lambda b: b["eps"])
            axes[3].loglog([b["eps"] for b in sel], [b["gamma"] for b in sel], style, marker=marker, ms=4,
                           label=f"{form} L={depth}")
        e = np.array([min(eps_values), max(eps_values)])
        axes[3].loglog(e, 0.5 * (e / e[-1]) ** (1 / depth), ":", color="k", lw=0.8)
    axes[3].set_xlabel("inverse error eps")
    axes[3].set_ylabel("best gamma (smallest layer-1 error vs BP)")
    axes[3].set_title("dotted: slope 1/L", fontsize=9)
    axes[3].legend(fontsize=6)
    fig.suptitle("imperfect inverses: the absolute form's error grows like eps / gamma^(L-l); a larger gamma protects")
    save_figure(fig, out / "inverse_error.png", dpi=110)


def plot_transpose(rows, depths, out):
    fig, axes = new_figure(1, len(depths), figsize=(5.5 * len(depths), 4.2))
    for ax, depth in zip(axes[0], depths):
        for c, gamma in enumerate(sorted({r["gamma"] for r in rows})):
            for form, style in zip(FORMS, ("-", "--")):
                sel = sorted((r for r in rows if r["form"] == form and r["depth"] == depth and r["layer"] == 1
                              and r["gamma"] == gamma and r["alpha"] > 0), key=lambda r: r["alpha"])
                x = [r["orthogonality_error"] for r in sel]
                ax.semilogx(x, [r["cosine_bp"] for r in sel], style, marker="o", ms=3, color=f"C{c}",
                            label=f"{form} gamma {gamma:.0e}: vs BP")
            sel = sorted((r for r in rows if r["form"] == "difference" and r["depth"] == depth and r["layer"] == 1
                          and r["gamma"] == gamma and r["alpha"] > 0), key=lambda r: r["alpha"])
            ax.semilogx([r["orthogonality_error"] for r in sel], [r["exact_cosine_bp"] for r in sel], ":",
                        color=f"C{c}", label=f"exact GAIT gamma {gamma:.0e}: vs BP")
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("||W^T W - I||_2 (mean over layers 2..L)")
        ax.set_ylabel("layer-1 cosine with BP")
        ax.set_title(f"feedback Q = W^T, L = {depth}")
        ax.legend(fontsize=6)
    save_figure(fig, out / "inverse_error_transpose.png", dpi=110)
