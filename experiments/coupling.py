"""How strong must the feedback be?  The circuit's learning signal over the coupling strength.

A sweep over gamma (log grid 1e-4 .. 0.5), the layer-wise schedule ("uniform"; "output":
gamma at the output with strong inversion, 0.9, below; "geometric": growing 4x per layer
downwards), the coupling mode (ITP, GAIT), the depth, additive white noise in the rate
dynamics (Euler-Maruyama, time-averaged readout over 150 tau after the transient) and the
floating-point precision of the rates ("exact": the fast engine's scaled deviation
coordinates; "float64", "float32": a circuit that stores absolute rates in that precision,
noiseless points only).  Per point and layer: relative error of the circuit's targets
and updates against the exact discrete rule with the same per-layer couplings, cosine of
the update with BP and whether it converged or diverged; per noiseless, exact point also
the settle time (tau, to 1e-3 of each layer's steady deviation) and the stability margin
(largest real eigenvalue of the linearised circuit at the steady state): noise and
rounding change the readout, not the dynamics.  A stability map (margin, or divergence,
over the output gamma and the strength of the inversion below it) shows where the
output-only schedule becomes unstable.  Orthogonal weights, width 30, Gaussian inputs,
random one-hot targets.  Points run in a process pool (or a Dask cluster: --scheduler)
and are written to points.jsonl as they finish (a rerun resumes).  Accuracy of circuit
training against gamma and noise: ``python -m experiments coupling_learning``.
"""

from __future__ import annotations

import numpy as np

import circuit
import models
from analysis.plots import (
    legend_handles,
    line_handle,
    line_style,
    new_figure,
    patch_handle,
    save_figure,
    sequential_colors,
    stability_colorbar,
    stability_map,
    stability_norm,
    symlog_margin_axis,
)
from models.validation import check_gamma, check_positive

from .common import compare_with_reference, write_summary
from .options import add_size_arguments, comma_list, count_list, given_or, number_list, quick_help, sizes
from .sweep import add_sweep_arguments, check_sweep_arguments, run_points

DESCRIPTION = __doc__
PRECISIONS = ("exact", "float64", "float32")
PRECISION_COLORS = {"exact": "k", "float64": "#009E73", "float32": "#D55E00"}
PRECISION_LABELS = {"exact": "exact (deviation coordinates)", "float64": "float64 rates", "float32": "float32 rates"}
DIVERGED_COLOR = "#D55E00"


#: option -> (default, default with --quick)
QUICK = {"gammas": ("1e-4:0.5:13", "1e-4,1e-2,0.5"), "hidden": ("2,4", "2"), "width": (30, 12), "batch": (8, 4),
         "noises": ("0,1e-8,1e-6,1e-4", "0,1e-4"), "precisions": (",".join(PRECISIONS), "exact,float32"),
         "strengths": ("0.1,0.3,0.5,0.7,0.8,0.9,0.95,0.99", "0.5,0.9")}


def add_arguments(parser):
    parser.add_argument("--gammas", metavar="GAMMA,...", help=quick_help(
        "output couplings in (0, 1): numbers or log grids LO:HI:N", *QUICK["gammas"]))
    parser.add_argument("--hidden", metavar="N,...", help=quick_help(
        "hidden layers; the results call N + 1, the layers of couplings, the depth L", *QUICK["hidden"]))
    add_size_arguments(parser, QUICK)
    parser.add_argument("--noises", metavar="NOISE,...", help=quick_help("noise strengths, >= 0", *QUICK["noises"]))
    parser.add_argument("--schedules", metavar="SCHEDULE,...", default=",".join(circuit.SCHEDULES),
                        help=f"layer-wise coupling schedules, from {', '.join(circuit.SCHEDULES)}")
    parser.add_argument("--modes", metavar="MODE,...", default=",".join(circuit.MODES),
                        help=f"coupling modes, from {', '.join(circuit.MODES)}")
    parser.add_argument("--noisy-schedules", metavar="SCHEDULE,...", default="uniform,geometric",
                        help="schedules also swept over noise and precision (the output-only schedule settles "
                             "~100x slower)")
    parser.add_argument("--precisions", metavar="PRECISION,...", help=quick_help(
        "exact (deviation coordinates), float64, float32 (absolute rates)", *QUICK["precisions"]))
    parser.add_argument("--strengths", metavar="K,...", help=quick_help(
        "inversion strengths in (0, 1) below the output, for the stability map (output-only schedule)",
        *QUICK["strengths"]))
    add_sweep_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights, inputs and targets")


def validate(args) -> dict:
    """The sweep's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    gammas = number_list("--gammas", given_or(args, "gammas", *QUICK["gammas"]))
    check_gamma(gammas, len(gammas), name="--gammas")
    hidden = count_list("--hidden", given_or(args, "hidden", *QUICK["hidden"]))
    noises = number_list("--noises", given_or(args, "noises", *QUICK["noises"]))
    for v in noises:
        check_positive("--noises", v, allow_zero=True)
    strengths = number_list("--strengths", given_or(args, "strengths", *QUICK["strengths"]))
    check_gamma(strengths, len(strengths), name="--strengths")
    check_sweep_arguments(args)
    return {"gammas": gammas, "depths": [h + 1 for h in hidden], "noises": noises, "strengths": strengths,
            **sizes(args, QUICK),
            "schedules": comma_list("--schedules", args.schedules, circuit.SCHEDULES),
            "noisy_schedules": comma_list("--noisy-schedules", args.noisy_schedules, circuit.SCHEDULES),
            "modes": comma_list("--modes", args.modes, circuit.MODES),
            "precisions": comma_list("--precisions", given_or(args, "precisions", *QUICK["precisions"]), PRECISIONS)}


def measure_point(point: dict) -> dict:
    """Metrics of one sweep point (runs in a worker process)."""
    L, width, batch, seed = point["depth"], point["width"], point["batch"], point["seed"]
    net = models.init_network([width] * (L + 1), "orthogonal", seed=seed, n_out=min(10, width))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width))
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], rng.integers(0, net.n_out, batch), net.n_out)
    gammas = circuit.coupling_schedule(point["schedule"], point["gamma"], L, strong=point.get("strong", 0.9))
    spec = circuit.build_circuit(net, gammas, point["mode"])
    engine = circuit.FastEngine(spec)
    try:
        state = engine.settle_nudged(x, target, on_failure="mask")
    except circuit.DivergenceError:
        return {"diverged": True, "converged": False, "layers": []}
    # stability and settle time belong to the deterministic dynamics: measured at the exact steady state,
    # and reported on the noiseless, exact point only (noise and rounding change the readout, not the dynamics)
    lam = float(np.max(engine.stability(x, state)))
    if point.get("kind") == "map":  # stability map: only whether and how stably it settles
        return {"diverged": False, "converged": bool(np.all(state.converged)), "stability": lam, "layers": []}
    clean = point.get("precision", "exact") == "exact" and point.get("noise", 0.0) == 0
    settle = settle_time(engine, x, target, state, lam) if clean else None
    if point.get("precision", "exact") != "exact":
        try:
            state = engine.settle_rounded(x, target, point["precision"], on_failure="mask")
        except circuit.DivergenceError:
            return {"diverged": True, "converged": False, "layers": []}
    elif point.get("noise", 0.0) > 0:
        # average after the transient: ~10 time constants of the slowest mode at the steady state
        start = min(max(50.0, 10.0 / max(-lam, 1e-3)), 2000.0)
        tau = spec.tau
        state = engine.settle_noisy(x, target, point["noise"], duration=(start + 150.0) * tau, average_from=start * tau,
                                    seed=seed, on_failure="mask")
    dW, _ = engine.plasticity(state, x)
    reference = models.compute_targets(net, fwd, target, point["mode"], gammas)
    ref, _ = models.updates_from_targets(net, reference)
    bp, _ = models.backprop(net, fwd, target)
    layers = compare_with_reference(spec, state, dW, reference, ref, bp)
    return {"diverged": False, "converged": bool(np.all(state.converged)), "stability": lam if clean else None,
            "settle_time_tau": settle, "layers": layers}


def settle_time(engine, x, target, state, lam: float, tol: float = 1e-3) -> float:
    """First time (tau) after which every layer stays within ``tol`` of its steady deviation."""
    horizon = min(max(30.0, 25.0 / max(-lam, 1e-3)), 3000.0)
    traj = engine.simulate(x, target, duration=horizon * engine.spec.tau, n_points=600, start="free")
    ok = np.ones(len(traj.times), dtype=bool)
    for dev, ss in zip(traj.deviations, state.deviations):
        scale = np.linalg.norm(ss)
        err = np.linalg.norm((dev - ss[None]).reshape(len(traj.times), -1), axis=1)
        ok &= err <= tol * scale if scale > 0 else True
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return 0.0
    if bad[-1] == len(ok) - 1:
        return float("inf")
    return float(traj.times_in_tau[bad[-1] + 1])


def run(args, out):
    settings = validate(args)
    gammas, depths, noises, precisions = (settings[k] for k in ("gammas", "depths", "noises", "precisions"))
    width, batch, schedules, modes = (settings[k] for k in ("width", "batch", "schedules", "modes"))
    points = [{"schedule": s, "mode": m, "depth": L, "gamma": g, "noise": v, "precision": pr, "width": width,
               "batch": batch, "seed": args.seed}
              for s in schedules for m in modes for L in depths for g in gammas for v in noises for pr in precisions
              if (v == 0 or pr == "exact")  # rounding is studied without noise
              and ((v == 0 and pr == "exact") or s in settings["noisy_schedules"])
              and not (args.quick and (v > 0 or pr != "exact") and (s != "uniform" or m != "gait"))]
    points += [{"kind": "map", "schedule": "output", "strong": k, "mode": "gait", "depth": L, "gamma": g,
                "width": width, "batch": batch, "seed": args.seed}
               for L in depths for k in settings["strengths"] for g in gammas]
    records = run_points(points, measure_point, out / "points.jsonl", workers=args.workers, label="coupling",
                         scheduler=args.scheduler)
    rows, stability_map, failed = [], [], []
    for rec in records:
        if "error" in rec:
            failed.append(rec)
            continue
        p, r = rec["point"], rec["result"]
        if p.get("kind") == "map":
            stability_map.append({k: p[k] for k in ("depth", "gamma", "strong")} | {
                k: r.get(k) for k in ("diverged", "converged", "stability")})
            continue
        missing = {"layer": None, "rel_error_target": None, "rel_error_update": None, "cosine_bp": None}
        for layer in r["layers"] or [missing]:
            rows.append({**{k: p[k] for k in ("schedule", "mode", "depth", "gamma", "noise", "precision")}, **layer,
                         "diverged": r["diverged"], "converged": r["converged"],
                         "stability": r.get("stability"), "settle_time_tau": r.get("settle_time_tau")})
    clean = [r for r in rows if r["noise"] == 0 and r["precision"] == "exact"]
    plot(clean, depths, out)
    best = best_gammas(rows)
    plot_noise(rows, best, depths, noises, out)
    plot_precision(rows, depths, out)
    plot_stability(clean, stability_map, depths, out)
    print_table(clean, depths)
    print("\ndeepest layer: the gamma with the smallest update error, by noise (exact) or precision (noiseless)")
    for b in best:
        print(f"  {b['schedule']:>9} {b['mode']:>4} L={b['depth']} noise {b['noise']:.0e} {b['precision']:>7}: "
              f"best gamma {b['gamma']:.1e} (error {b['rel_error_update']:.1e}, cosine with BP {b['cosine_bp']:+.4f})")
    write_summary(out, "coupling", {**vars(args), **settings}, rows=rows, best_gamma=best,
                  stability_map=stability_map, failed_points=failed)


def print_table(rows, depths):
    L = max(depths)
    print(f"\ndepth {L}, deepest layer: update error vs discrete rule / cosine with BP / settle time (tau) "
          "/ stability margin; D = diverged")
    for schedule in circuit.SCHEDULES:
        for mode in circuit.MODES:
            sel = [r for r in rows if r["schedule"] == schedule and r["mode"] == mode and r["depth"] == L
                   and r["layer"] in (1, None)]
            if not sel:
                continue
            cells = []
            for r in sorted(sel, key=lambda r: r["gamma"]):
                cells.append(f"{r['gamma']:.0e}: D" if r["diverged"] else
                             f"{r['gamma']:.0e}: {r['rel_error_update']:.1e}/{r['cosine_bp']:+.3f}/"
                             f"{r['settle_time_tau']:.0f}/{r['stability']:+.2f}")
            print(f"{schedule:>9} {mode:>4}  " + "  ".join(cells))


def plot(rows, depths, out):
    """Deepest layer against the output gamma per schedule (line style) and mode (colour): error, cosine with BP,
    settle time and stability margin (noiseless, exact)."""
    L = max(depths)
    fig, axes = new_figure(2, 2, figsize=(11, 7.5), sharex=True)
    panels = [("rel_error_update", "loglog", "relative error of the update", "error against the discrete rule"),
              ("cosine_bp", "semilogx", "cosine of the update with BP", "alignment with BP"),
              ("settle_time_tau", "loglog", r"settle time ($\tau$)", r"settle time (to $10^{-3}$ of the steady state)"),
              ("stability", "semilogx", r"largest real eigenvalue ($1/\tau$)",
               "stability margin (< 0: stable; log beyond 0.001)")]
    for schedule in circuit.SCHEDULES:
        for mode in circuit.MODES:
            sel = _curve(rows, schedule=schedule, mode=mode, depth=L)
            for ax, (key, kind, _, _) in zip(axes.flat, panels):
                pts = [(r["gamma"], r[key]) for r in sel if r[key] is not None and np.isfinite(r[key])]
                if pts:
                    getattr(ax, kind)(*zip(*pts), **_mode_style(mode, schedule))
    for ax, (_, _, ylabel, title) in zip(axes.flat, panels):
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
    axes[1, 1].axhline(0, color="k", lw=0.6)
    symlog_margin_axis(axes[1, 1])
    for ax in axes[1]:
        ax.set_xlabel(r"output coupling $\gamma$")
    fig.suptitle(f"Coupling schedules, L = {L}: the deepest layer's update (fast engine, no noise)")
    fig.legend(handles=legend_handles(rules=circuit.MODES, schedules=circuit.SCHEDULES, rule_suffix=" coupling"),
               loc="outside lower center", ncols=5, fontsize=8)
    save_figure(fig, out / "coupling.png")
    return fig


def best_gammas(rows) -> list:
    """Per (schedule, mode, depth, noise, precision): the gamma with the smallest deepest-layer update error."""
    groups = {}
    for r in rows:
        if r["layer"] == 1 and not r["diverged"] and r["rel_error_update"] is not None:
            groups.setdefault(tuple(r[k] for k in ("schedule", "mode", "depth", "noise", "precision")), []).append(r)
    best = []
    for key, sel in sorted(groups.items()):
        b = min(sel, key=lambda r: r["rel_error_update"])
        best.append({**dict(zip(("schedule", "mode", "depth", "noise", "precision"), key)), "gamma": b["gamma"],
                     "rel_error_update": b["rel_error_update"], "cosine_bp": b["cosine_bp"],
                     "at_grid_edge": b["gamma"] in (min(r["gamma"] for r in sel), max(r["gamma"] for r in sel))})
    return best


def _curve(rows, **where):
    """Layer-1 (deepest) rows of the points that did not diverge, matching ``where``, by gamma."""
    sel = [r for r in rows if r["layer"] == 1 and not r["diverged"] and all(r[k] == v for k, v in where.items())]
    return sorted(sel, key=lambda r: r["gamma"])


def plot_noise(rows, best, depths, noises, out):
    """Deepest-layer error and cosine against gamma per noise level (uniform GAIT, deepest circuit); the best gamma
    against the noise per depth, schedule and mode."""
    L = max(depths)
    fig, axes = new_figure(2, max(2, len(depths)), figsize=(11, 8))
    colors = sequential_colors(len(noises), "plasma", stop=0.8)
    for color, noise in zip(colors, noises):
        sel = _curve(rows, schedule="uniform", mode="gait", depth=L, noise=noise, precision="exact")
        if sel:
            g = [r["gamma"] for r in sel]
            style = line_style(schedule="uniform", color=color)
            axes[0, 0].loglog(g, [r["rel_error_update"] for r in sel], **style)
            axes[0, 1].semilogx(g, [r["cosine_bp"] for r in sel], **style)
    axes[0, 0].set_ylabel("relative error of the update")
    axes[0, 0].set_title(f"uniform GAIT, L = {L}: error against discrete GAIT", fontsize=10)
    axes[0, 1].set_ylabel("cosine of the update with BP")
    axes[0, 1].set_title(f"uniform GAIT, L = {L}: alignment with BP", fontsize=10)
    for ax in axes[0, :2]:
        ax.set_xlabel(r"coupling $\gamma$ (every layer)")
    axes[0, 0].legend(handles=[line_handle(_noise_label(v), color=c, lw=2) for c, v in zip(colors, noises)],
                      fontsize=8, loc="upper right")
    for ax in list(axes[0, 2:]) + list(axes[1, len(depths):]):
        ax.set_visible(False)
    for ax, depth in zip(axes[1], depths):
        anchor = None
        for schedule in circuit.SCHEDULES:
            for mode in circuit.MODES:
                sel = sorted((b for b in best if b["schedule"] == schedule and b["mode"] == mode and b["depth"] == depth
                              and b["precision"] == "exact" and b["noise"] > 0), key=lambda b: b["noise"])
                if sel:
                    ax.loglog([b["noise"] for b in sel], [b["gamma"] for b in sel],
                              **_mode_style(mode, schedule))
                    if (schedule, mode) == ("uniform", "gait"):
                        anchor = (sel[-1]["noise"], sel[-1]["gamma"])
        noisy = [v for v in noises if v > 0]
        if anchor and len(noisy) > 1:  # the bias ~gamma, noise ~sigma/gamma^L balance: gamma ~ sigma^(1/(L+1))
            v = np.array([min(noisy), max(noisy)])
            ax.loglog(v, anchor[1] * (v / anchor[0]) ** (1 / (depth + 1)), color="0.6", lw=1.5, zorder=0,
                      label=rf"slope $1/(L+1) = 1/{depth + 1}$")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xlabel(r"noise strength $\sigma$")
        ax.set_ylabel(r"best output $\gamma$ (smallest error)")
        ax.set_title(f"L = {depth}: the best coupling against the noise", fontsize=10)
    fig.suptitle("Bias at large gamma, noise at small gamma: the best coupling grows with the noise and the depth")
    swept = [s for s in circuit.SCHEDULES if any(b["schedule"] == s and b["noise"] > 0 for b in best)]
    fig.legend(handles=legend_handles(rules=circuit.MODES, schedules=swept, rule_suffix=" coupling"),
               loc="outside lower center", ncols=5, fontsize=8)
    save_figure(fig, out / "coupling_noise.png")
    return fig


def _mode_style(mode: str, schedule: str) -> dict:
    """The mode's colour and the schedule's line style; ITP's markers hollow, so that curves that coincide with
    GAIT's still show."""
    return line_style(rule=mode, schedule=schedule) | ({"markerfacecolor": "none", "markersize": 6, "zorder": 3}
                                                        if mode == "itp" else {})


def _noise_label(noise: float) -> str:
    return "no noise" if noise == 0 else rf"noise $\sigma$ = {noise:.0e}"


def plot_precision(rows, depths, out):
    """Noiseless deepest-layer error against gamma for exact, float64 and float32 rates (uniform GAIT)."""
    fig, axes = new_figure(1, len(depths), figsize=(5 * len(depths) + 1, 4), sharey=True)
    for ax, depth in zip(axes[0], depths):
        for precision in PRECISIONS:
            sel = _curve(rows, schedule="uniform", mode="gait", depth=depth, noise=0.0, precision=precision)
            if sel:
                ax.loglog([r["gamma"] for r in sel], [max(r["rel_error_update"], 1e-17) for r in sel],
                          label=PRECISION_LABELS[precision], zorder=3 if precision == "exact" else 2,
                          **line_style(schedule="uniform", color=PRECISION_COLORS[precision])
                          | ({"markerfacecolor": "none", "markersize": 7} if precision == "float64" else {}))
        ax.set_title(f"uniform GAIT, L = {depth}", fontsize=10)
        ax.set_xlabel(r"coupling $\gamma$ (every layer)")
    axes[0, 0].set_ylabel("relative error of the deepest layer's update")
    axes[0, -1].legend(fontsize=8)
    fig.suptitle("Rounding: rates stored in float32 or float64\nlose the deepest layer's signal "
                 r"(error ~ eps / $\gamma^L$)", fontsize=11)
    save_figure(fig, out / "coupling_precision.png")
    return fig


def plot_stability(rows, map_points, depths, out):
    """Top: stability margin against gamma per schedule (GAIT); bottom: the output-only schedule's stability map."""
    fig, axes = new_figure(2, len(depths), figsize=(5.5 * len(depths) + 1.5, 8))
    for ax, depth in zip(axes[0], depths):
        for schedule in circuit.SCHEDULES:
            sel = sorted((r for r in rows if r["schedule"] == schedule and r["mode"] == "gait" and r["depth"] == depth
                          and r["layer"] in (1, None)), key=lambda r: r["gamma"])
            ok = [r for r in sel if not r["diverged"]]
            style = line_style(rule="gait", schedule=schedule)
            ax.semilogx([r["gamma"] for r in ok], [r["stability"] for r in ok], **style)
            bad = [r["gamma"] for r in sel if r["diverged"]]
            ax.semilogx(bad, [0.0] * len(bad), ls="none", marker=style["marker"], color=DIVERGED_COLOR, ms=8,
                        mfc="none", mew=1.5)
        ax.axhline(0, color="k", lw=0.6)
        symlog_margin_axis(ax)
        ax.set_xlabel(r"output coupling $\gamma$")
        ax.set_ylabel(r"largest real eigenvalue ($1/\tau$)")
        ax.set_title(f"GAIT coupling, L = {depth}: stability margin (< 0: stable; log beyond 0.001)", fontsize=10)
    maps = [[m for m in map_points if m["depth"] == depth] for depth in depths]
    margins = [m["stability"] for sel in maps for m in sel if not m["diverged"] and m["stability"] is not None]
    norm = stability_norm(margins)
    mesh = None
    for ax, depth, sel in zip(axes[1], depths, maps):
        if not sel:
            ax.set_visible(False)
            continue
        gammas, strong = sorted({m["gamma"] for m in sel}), sorted({m["strong"] for m in sel})
        lam = np.full((len(strong), len(gammas)), np.nan)
        diverged, unsettled = np.zeros(lam.shape, bool), np.zeros(lam.shape, bool)
        for m in sel:
            i, j = strong.index(m["strong"]), gammas.index(m["gamma"])
            diverged[i, j], unsettled[i, j] = m["diverged"], not m["converged"]
            if not m["diverged"] and m["stability"] is not None:
                lam[i, j] = m["stability"]
        mesh = stability_map(ax, gammas, strong, lam, diverged, unsettled, norm=norm)
        ax.set_xlabel(r"output coupling $\gamma$")
        ax.set_ylabel("inversion strength below the output")
        ax.set_title(f"output-only schedule, GAIT, L = {depth}: stability map", fontsize=10)
    if mesh is not None:
        stability_colorbar(fig, mesh, axes[1, :])
    handles = legend_handles(schedules=circuit.SCHEDULES)
    handles += [line_handle("diverged (marker: schedule)", ls="none", marker="o", mfc="none", color=DIVERGED_COLOR,
                            ms=8, mew=1.5),
                patch_handle("map: diverged", color="0.3"),
                line_handle("map: not settled in the time limit", ls="none", marker=".", color="k")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    save_figure(fig, out / "coupling_stability.png")
    return fig
