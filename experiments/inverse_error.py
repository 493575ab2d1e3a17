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
"""

from __future__ import annotations

import csv
import time

import numpy as np

import models
from analysis.metrics import cosine, relative_error
from analysis.plots import use_agg
from models.feedback import (
    FORMS,
    LearnedFeedback,
    feedback_updates,
    inverse_errors,
    perturbed_inverses,
    reconstruction_errors,
    transposed_weights,
)
from models.training import apply_update, train_step
from models.validation import check_count, check_gamma, check_positive

from .common import DEFAULT_BLAS_THREADS, Progress, blas_threads, write_summary
from .options import add_size_arguments, count_list, given_or, number_list, quick_help, sizes

DESCRIPTION = __doc__


#: option -> (default, default with --quick)
QUICK = {"epsilons": ("1e-6:1e-1:11", "1e-6,1e-3,1e-1"), "gammas": ("1e-4:1:13", "1e-4,1e-2,1"),
         "hidden": ("2,4", "2"), "width": (30, 10), "batch": (256, 4), "seeds": ("0,1,2,3,4", "0"),
         "alphas": ("1e-6,1e-5,1e-4,1e-3,1e-2,0.03,0.1,0.3,1", "0.1,1"),
         "transpose_gammas": ("1e-3,1e-2,0.1", "1e-3"), "bench_steps": (15, 2)}


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
    return models.weight_updates(net, fwd, [a * s * r for a, s, r in zip(fwd.derivatives, scales, rho)])[0]


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
            exact, _ = models.target_updates(net, models.compute_targets(net, fwd, target, "gait", gamma))
            predicted = reconstruction_error_updates(net, fwd, feedback, gamma)
            for form in FORMS:
                dW, _ = feedback_updates(net, fwd, target, "gait", gamma, feedback, form)
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
            exact, _ = models.target_updates(net, models.compute_targets(net, fwd, target, "gait", gamma))
            for form in FORMS:
                dW, _ = feedback_updates(net, fwd, target, "gait", gamma, feedback, form)
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


def best_gammas(mean_rows) -> list:
    """Per (form, depth, eps): the gamma with the smallest seed-mean layer-1 error against BP."""
    groups = {}
    for r in mean_rows:
        if r["layer"] == 1:
            groups.setdefault((r["form"], r["depth"], r["eps"]), []).append(r)
    best = []
    for (form, depth, eps), sel in sorted(groups.items()):
        b = min(sel, key=lambda r: r["rel_error_bp"])
        gammas = [r["gamma"] for r in sel]
        best.append({"form": form, "depth": depth, "eps": eps, "gamma": b["gamma"], "rel_error_bp": b["rel_error_bp"],
                     "cosine_bp": b["cosine_bp"], "at_grid_edge": b["gamma"] in (min(gammas), max(gammas))})
    return best


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


def write_csv(path, rows) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def run(args, out):
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
        print(f"\nstep time, widths {widths}, batch {args.bench_batch}, {DEFAULT_BLAS_THREADS} BLAS thread: " +
              ", ".join(f"{k} {v['ms_per_batch']:.1f} ms" for k, v in bench.items() if isinstance(v, dict)) +
              f"; learned / exact GAIT {bench['learned_over_exact']:.2f}x, "
              f"learned / BP {bench['learned_over_bp']:.2f}x")
    write_summary(out, "inverse_error", {**vars(args), "eps_grid": eps_grid, "gammas": gammas, "depths": depths,
                                         "width": width, "batch": batch, "seeds": seeds, "alphas": alphas,
                                         "transpose_gammas": t_gammas},
                  rows=perturbed + transpose, best_gamma=best, best_gamma_slopes=slopes, bench=bench)


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
    plt = use_agg()
    L = max(depths)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.2))
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
    fig.tight_layout()
    fig.savefig(out / "inverse_error.png", dpi=110)
    plt.close(fig)


def plot_transpose(rows, depths, out):
    plt = use_agg()
    fig, axes = plt.subplots(1, len(depths), figsize=(5.5 * len(depths), 4.2), squeeze=False)
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
    fig.tight_layout()
    fig.savefig(out / "inverse_error_transpose.png", dpi=110)
    plt.close(fig)
