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
from analysis.plots import use_agg
from models.validation import check_gamma, check_positive

from .common import compare_with_reference, write_summary
from .options import add_size_arguments, comma_list, count_list, given_or, number_list, quick_help, sizes
from .sweep import add_sweep_arguments, check_sweep_arguments, run_points

DESCRIPTION = __doc__
PRECISIONS = ("exact", "float64", "float32")


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
    ref, _ = models.target_updates(net, reference)
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
    plt = use_agg()
    L = max(depths)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for c, schedule in enumerate(circuit.SCHEDULES):
        for mode, style in zip(circuit.MODES, ("-", "--")):
            sel = sorted((r for r in rows if r["schedule"] == schedule and r["mode"] == mode and r["depth"] == L
                          and r["layer"] == 1 and not r["diverged"]), key=lambda r: r["gamma"])
            if sel:
                g = [r["gamma"] for r in sel]
                axes[0].loglog(g, [r["rel_error_update"] for r in sel], style, marker="o", ms=3, color=f"C{c}",
                               label=f"{schedule} {mode}")
                axes[1].semilogx(g, [r["cosine_bp"] for r in sel], style, marker="o", ms=3, color=f"C{c}")
                axes[2].semilogx(g, [r["stability"] for r in sel], style, marker="o", ms=3, color=f"C{c}")
    axes[0].set_ylabel(f"layer-1 update error vs discrete rule (L = {L})")
    axes[1].set_ylabel("layer-1 cosine with BP")
    axes[2].set_ylabel("largest real eigenvalue (1/tau)")
    axes[2].axhline(0, color="k", lw=0.6)
    for ax in axes:
        ax.set_xlabel("output coupling gamma")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "coupling.png", dpi=110)
    plt.close(fig)


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
    sel = [r for r in rows if r["layer"] == 1 and not r["diverged"] and all(r[k] == v for k, v in where.items())]
    return sorted(sel, key=lambda r: r["gamma"])


def plot_noise(rows, best, depths, noises, out):
    """Error of the deepest layer against gamma per noise level (uniform GAIT); best gamma against noise."""
    plt = use_agg()
    L = max(depths)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for c, noise in enumerate(noises):
        sel = _curve(rows, schedule="uniform", mode="gait", depth=L, noise=noise, precision="exact")
        if sel:
            g = [r["gamma"] for r in sel]
            axes[0].loglog(g, [r["rel_error_update"] for r in sel], marker="o", ms=3, color=f"C{c}",
                           label=f"noise {noise:g}")
            axes[1].semilogx(g, [r["cosine_bp"] for r in sel], marker="o", ms=3, color=f"C{c}")
    for c, (schedule, mode) in enumerate((s, m) for s in circuit.SCHEDULES for m in circuit.MODES):
        for depth, marker in zip(depths, "os^v"):
            sel = sorted((b for b in best if b["schedule"] == schedule and b["mode"] == mode and b["depth"] == depth
                          and b["precision"] == "exact" and b["noise"] > 0), key=lambda b: b["noise"])
            if sel:
                axes[2].loglog([b["noise"] for b in sel], [b["gamma"] for b in sel], marker=marker, ms=4,
                               color=f"C{c}", label=f"{schedule} {mode} L={depth}")
    noisy = [v for v in noises if v > 0]
    if noisy:
        v = np.array([min(noisy), max(noisy)])
        for depth, ls in zip(depths, (":", "-.", "--")):
            axes[2].loglog(v, 0.3 * (v / v[-1]) ** (1 / (depth + 1)), ls, color="k", lw=0.8,
                           label=f"slope 1/(L+1), L={depth}")
    axes[0].set_ylabel(f"layer-1 update error vs discrete GAIT (uniform, L = {L})")
    axes[1].set_ylabel("layer-1 cosine with BP")
    for ax in axes[:2]:
        ax.set_xlabel("coupling gamma (uniform)")
    axes[2].set_xlabel("noise strength")
    axes[2].set_ylabel("best output gamma (smallest layer-1 error)")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=6)
    fig.suptitle("bias at large gamma, noise at small gamma: the best coupling grows with the noise")
    fig.tight_layout()
    fig.savefig(out / "coupling_noise.png", dpi=110)
    plt.close(fig)


def plot_precision(rows, depths, out):
    """Noiseless layer-1 error against gamma for exact, float64 and float32 rates (uniform GAIT)."""
    plt = use_agg()
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for c, precision in enumerate(PRECISIONS):
            sel = _curve(rows, schedule="uniform", mode="gait", depth=depth, noise=0.0, precision=precision)
            if sel:
                ax.loglog([r["gamma"] for r in sel], [max(r["rel_error_update"], 1e-17) for r in sel], marker="o",
                          ms=3, color=f"C{c}", label=precision)
        ax.set_title(f"L = {depth}")
        ax.set_xlabel("coupling gamma (uniform)")
        ax.set_ylabel("layer-1 update error vs discrete GAIT")
        ax.legend(fontsize=7)
    fig.suptitle("rounding: absolute rates lose the deepest layer's signal ~eps / gamma^L")
    fig.tight_layout()
    fig.savefig(out / "coupling_precision.png", dpi=110)
    plt.close(fig)


def plot_stability(rows, stability_map, depths, out):
    """Stability margin against gamma per schedule; where the output-only schedule diverges."""
    plt = use_agg()
    fig, axes = plt.subplots(1, 1 + len(depths), figsize=(5 * (1 + len(depths)), 4))
    for c, schedule in enumerate(circuit.SCHEDULES):
        for depth, ls in zip(depths, ("-", "--", ":")):
            sel = sorted((r for r in rows if r["schedule"] == schedule and r["mode"] == "gait" and r["depth"] == depth
                          and r["layer"] in (1, None)), key=lambda r: r["gamma"])
            ok = [r for r in sel if not r["diverged"]]
            axes[0].semilogx([r["gamma"] for r in ok], [r["stability"] for r in ok], ls, marker="o", ms=3,
                             color=f"C{c}", label=f"{schedule} L={depth}")
            bad = [r["gamma"] for r in sel if r["diverged"]]
            axes[0].semilogx(bad, [0.02] * len(bad), "x", color=f"C{c}", ms=7)
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].set_xlabel("output coupling gamma")
    axes[0].set_ylabel("largest real eigenvalue at steady state (1/tau)")
    axes[0].set_title("GAIT mode; x = diverged")
    axes[0].legend(fontsize=7)
    for ax, depth in zip(axes[1:], depths):
        sel = [m for m in stability_map if m["depth"] == depth]
        if not sel:
            continue
        gammas, strong = sorted({m["gamma"] for m in sel}), sorted({m["strong"] for m in sel})
        lam = np.full((len(strong), len(gammas)), np.nan)
        for m in sel:
            if not m["diverged"]:
                lam[strong.index(m["strong"]), gammas.index(m["gamma"])] = m["stability"]
        mesh = ax.pcolormesh(_edges(gammas, log=True), _edges(strong), lam, cmap="viridis")
        for m in sel:
            if m["diverged"]:
                ax.plot(m["gamma"], m["strong"], "rx", ms=6)
        ax.set_xscale("log")
        ax.set_xlabel("output gamma")
        ax.set_ylabel("inversion strength below the output")
        ax.set_title(f"output-only schedule, GAIT, L = {depth}: x = diverged", fontsize=9)
        fig.colorbar(mesh, ax=ax, label="largest real eigenvalue at steady state (1/tau)")
    fig.tight_layout()
    fig.savefig(out / "coupling_stability.png", dpi=110)
    plt.close(fig)


def _edges(centres, log=False):
    """Cell edges around sorted grid centres (geometric midpoints when ``log``)."""
    c = np.log10(centres) if log else np.asarray(centres, dtype=float)
    if len(c) == 1:
        e = np.array([c[0] - 0.5, c[0] + 0.5])
    else:
        mid = (c[1:] + c[:-1]) / 2
        e = np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])
    return 10**e if log else e
