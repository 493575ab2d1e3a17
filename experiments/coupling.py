"""How strong must the feedback be?  The circuit's learning signal over the coupling strength.

A sweep over gamma (log grid 1e-4 .. 0.5), the layer-wise schedule ("uniform"; "output":
gamma at the output with strong inversion, 0.9, below; "geometric": growing 4x per layer
downwards), the coupling mode (ITP, GAIT), the depth and additive white noise in the rate
dynamics (Euler-Maruyama, time-averaged readout over 150 tau after the transient).  Per
point and layer: relative
error of the circuit's targets and updates against the exact discrete rule with the same
per-layer couplings, cosine of the update with BP, the settle time (tau, to 1e-3 of each
layer's steady deviation), the stability margin (largest real eigenvalue of the
linearised circuit at the steady state) and whether it converged or diverged.
Orthogonal weights, width 30, Gaussian inputs, random one-hot targets.  Points run in a
process pool (or a Dask cluster: --scheduler) and are written to points.jsonl as they
finish (a rerun resumes).  float32 is not swept yet.
"""

from __future__ import annotations

import numpy as np

import circuit
import models
from analysis.plots import use_agg

from .common import compare_with_reference, write_summary
from .sweep import run_points

DESCRIPTION = __doc__


def add_arguments(parser):
    parser.add_argument("--width", type=int, default=30)
    parser.add_argument("--depths", default="3,5", help="numbers of layers L (default 3,5)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--noise", default="0,1e-8,1e-6,1e-4", help="noise strengths (default 0,1e-8,1e-6,1e-4)")
    parser.add_argument("--schedules", default=",".join(circuit.SCHEDULES))
    parser.add_argument("--modes", default=",".join(circuit.MODES))
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--scheduler", help="HOST:PORT of a Dask distributed scheduler to run the points on")
    parser.add_argument("--seed", type=int, default=0)


def measure_point(point: dict) -> dict:
    """Metrics of one sweep point (runs in a worker process)."""
    L, width, batch, seed = point["depth"], point["width"], point["batch"], point["seed"]
    net = models.init_network([width] * (L + 1), "orthogonal", seed=seed, n_out=min(10, width))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, width))
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], rng.integers(0, net.n_out, batch), net.n_out)
    gammas = circuit.coupling_schedule(point["schedule"], point["gamma"], L)
    spec = circuit.build_circuit(net, gammas, point["mode"])
    engine = circuit.FastEngine(spec)
    try:
        state = engine.settle_nudged(x, target, on_failure="mask")
    except circuit.DivergenceError:
        return {"diverged": True, "converged": False, "layers": []}
    if point.get("noise", 0.0) > 0:
        # average after the transient: ~10 time constants of the slowest mode at the steady state
        slowest = float(np.max(engine.stability(x, state)))
        start = min(max(50.0, 10.0 / max(-slowest, 1e-3)), 2000.0)
        state = engine.settle_noisy(x, target, point["noise"], duration=start + 150.0, average_from=start,
                                    seed=seed)
    dW, _ = engine.plasticity(state, x)
    reference = models.compute_targets(net, fwd, target, point["mode"], gammas)
    ref, _ = models.target_updates(net, reference)
    bp, _ = models.backprop(net, fwd, target)
    lam = float(np.max(engine.stability(x, state)))
    settle = settle_time(engine, x, target, state, lam)
    layers = compare_with_reference(spec, state, dW, reference, ref, bp)
    return {"diverged": False, "converged": bool(np.all(state.converged)), "stability": lam,
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
    return float(traj.times[bad[-1] + 1] / engine.spec.tau)


def run(args, out):
    gammas = [1e-4, 1e-2, 0.5] if args.quick else [float(g) for g in np.logspace(-4, np.log10(0.5), 13)]
    depths = [3] if args.quick else [int(d) for d in args.depths.split(",")]
    width, batch = (12, 4) if args.quick else (args.width, args.batch)
    noises = [0.0, 1e-4] if args.quick else [float(v) for v in args.noise.split(",")]
    schedules, modes = args.schedules.split(","), args.modes.split(",")
    points = [{"schedule": s, "mode": m, "depth": L, "gamma": g, "noise": v, "width": width, "batch": batch,
               "seed": args.seed}
              for s in schedules for m in modes for L in depths for g in gammas for v in noises
              if not (args.quick and v > 0 and s != "uniform")]  # quick: noise on the uniform schedule only
    records = run_points(points, measure_point, out / "points.jsonl", workers=args.workers, label="coupling",
                         scheduler=args.scheduler)
    rows, failed = [], []
    for rec in records:
        if "error" in rec:
            failed.append(rec)
            continue
        p, r = rec["point"], rec["result"]
        missing = {"layer": None, "rel_error_target": None, "rel_error_update": None, "cosine_bp": None}
        for layer in r["layers"] or [missing]:
            rows.append({**{k: p[k] for k in ("schedule", "mode", "depth", "gamma", "noise")}, **layer,
                         "diverged": r["diverged"], "converged": r["converged"],
                         "stability": r.get("stability"), "settle_time_tau": r.get("settle_time_tau")})
    clean = [r for r in rows if r["noise"] == 0]
    plot(clean, depths, out)
    best = plot_noise(rows, depths, noises, out)
    print_table(clean, depths)
    print("\nuniform GAIT, deepest layer: the gamma with the smallest update error, by noise strength")
    for b in best:
        print(f"  noise {b['noise']:.0e}: best gamma {b['gamma']:.1e} (error {b['rel_error_update']:.1e}, "
              f"cosine with BP {b['cosine_bp']:+.4f})")
    write_summary(out, "coupling", {**vars(args), "gammas": gammas, "depths": depths, "noises": noises}, rows=rows,
                  best_gamma_by_noise=best, failed_points=failed)


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


def plot_noise(rows, depths, noises, out) -> list:
    """Error of the deepest layer against gamma for each noise level (uniform GAIT); the best gamma."""
    plt = use_agg()
    L = max(depths)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    best = []
    for c, noise in enumerate(noises):
        sel = sorted((r for r in rows if r["schedule"] == "uniform" and r["mode"] == "gait" and r["depth"] == L
                      and r["layer"] == 1 and r["noise"] == noise and not r["diverged"]), key=lambda r: r["gamma"])
        if not sel:
            continue
        g = [r["gamma"] for r in sel]
        axes[0].loglog(g, [r["rel_error_update"] for r in sel], marker="o", ms=3, color=f"C{c}",
                       label=f"noise {noise:g}")
        axes[1].semilogx(g, [r["cosine_bp"] for r in sel], marker="o", ms=3, color=f"C{c}")
        b = min(sel, key=lambda r: r["rel_error_update"])
        best.append({"noise": noise, "gamma": b["gamma"], "rel_error_update": b["rel_error_update"],
                     "cosine_bp": b["cosine_bp"]})
    axes[0].set_ylabel(f"layer-1 update error vs discrete GAIT (L = {L})")
    axes[1].set_ylabel("layer-1 cosine with BP")
    for ax in axes:
        ax.set_xlabel("coupling gamma (uniform)")
    axes[0].legend(fontsize=7)
    fig.suptitle("bias at large gamma, noise at small gamma")
    fig.tight_layout()
    fig.savefig(out / "coupling_noise.png", dpi=110)
    plt.close(fig)
    return best
