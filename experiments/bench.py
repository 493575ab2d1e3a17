"""Benchmark: per-batch time of training steps of the discrete reference.

``--feedback``: GAIT with learned feedback weights (:class:`models.LearnedFeedback`: no LU
factorisation) against exact-inverse GAIT and BP, in one run, steps taking turns.

784-wide network with 4 hidden layers, batch 60, float64, Adam (published
variant): BP, TP and GAIT-prop, each with and without the orthogonality
regulariser; then the paper-setting GAIT step with regulariser 0.1 in float64 and
float32, with the regulariser's share and the ratio to the published code's step
(:func:`bench_regulariser`; alone with ``--regulariser-only``).  Prints the machine's
measured matmul peak (784x784 float64 products), each step's time, its counted flops and achieved GFLOP/s, and the BP
step's ratio to its floating-point floor (counted flops / peak).  Timings are
medians over repeated steps measured in one run, so ratios are comparable even
on a shared, noisy machine.
"""

from __future__ import annotations

import time

import numpy as np

import models
from analysis.metrics import relative_error
from models.errors import ValidationError
from models.training import default_lu_threads, step_flops, train_step
from models.validation import check_count

from .common import DEFAULT_BLAS_THREADS, Progress, blas_threads, write_summary
from .datasets import load_embedded
from .options import given_or, quick_help

DESCRIPTION = __doc__
#: Milliseconds per batch of the published GAIT-prop code (its numpy path; 784 wide, 4 hidden layers,
#: batch 60, one BLAS thread) on a 2-core AMD EPYC virtual machine with OpenBLAS: reference figures
#: for the comparison below, not measured by this command (the published code is not a dependency).
PUBLISHED_MS_PER_BATCH = {"bp": 665.0, "gait": 849.0, "gait_regulariser_0.1": 3984.0}


def add_arguments(parser):
    parser.add_argument("--steps", type=int, help=quick_help("timed steps per configuration", 15, 4))
    parser.add_argument("--width", type=int, default=784, help="hidden layer width, at most 784 (the input size)")
    parser.add_argument("--hidden", type=int, default=4, metavar="N", help="hidden layers")
    parser.add_argument("--batch", type=int, default=60, help="samples per step")
    parser.add_argument("--engine-threads", action="store_true",
                        help="only time the fast circuit engine as a script uses it (BLAS at its start-up threads), "
                             "without and with its one-BLAS-thread limit for small layers")
    parser.add_argument("--regulariser-only", action="store_true",
                        help="only the orthogonality regulariser's section (its kernels and its GAIT step)")
    parser.add_argument("--feedback", action="store_true",
                        help="only time GAIT with learned feedback weights (no LU factorisation per step) against "
                             "exact-inverse GAIT and BP, their steps taking turns batch by batch")


def validate(args) -> None:
    """ValidationError if an option is out of range, before anything is created."""
    if args.steps is not None:
        check_count("--steps", args.steps)
    if check_count("--width", args.width) > 784:
        raise ValidationError(f"--width: expected at most 784 (the input size), got {args.width}")
    check_count("--hidden", args.hidden, 0)
    check_count("--batch", args.batch)


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats + 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[3:]))


def matmul_peak(n: int = 784, repeats: int = 15) -> float:
    """Median GFLOP/s of float64 (n, n) @ (n, n) products (all BLAS threads)."""
    rng = np.random.default_rng(0)
    a, b, out = rng.standard_normal((n, n)), rng.standard_normal((n, n)), np.empty((n, n))
    return 2.0 * n**3 / _median_seconds(lambda: np.matmul(a, b, out=out), repeats) / 1e9


def bp_product_floor(widths, batch: int, repeats: int = 30) -> float:
    """Seconds of the BP step's own products, each timed alone in a hot loop.

    The forward (batch, n) @ (n, n)^T, backward (batch, n) @ (n, n) and weight-update
    (n, batch) @ (batch, n) products: what a BP step cannot go below with this BLAS.
    """
    rng = np.random.default_rng(0)
    total = 0.0
    for k, n in enumerate(widths[1:]):
        w, r = rng.standard_normal((n, n)), rng.standard_normal((batch, n))
        total += _median_seconds(lambda r=r, w=w: r @ w.T, repeats)
        total += _median_seconds(lambda r=r: r.T @ r, repeats)
        if k > 0:
            total += _median_seconds(lambda r=r, w=w: r @ w, repeats)
    return total


def time_steps(widths, batch, rule, regulariser, steps, data, lu_threads=1):
    net = models.init_network(widths, "orthogonal", seed=0, n_out=10)
    opt = models.Adam.published(lr=1e-4)
    inverse = models.DirectInverse(lu_threads)
    n = data.train_x.shape[0]
    times = []
    for k in range(steps + 2):  # two warm-up steps (JIT compilation, first-touch of buffers)
        idx = np.arange(k * batch, (k + 1) * batch) % n
        x = data.train_x[idx]
        target = models.constructed_target("quadratic", net.forward(x).rates[-1], data.train_y[idx], 10)
        t0 = time.perf_counter()
        train_step(net, opt, x, target, rule, 1e-3, regulariser, inverse=inverse)
        times.append(time.perf_counter() - t0)
    return np.array(times[2:]), net


def inverse_floor(widths, batch: int, repeats: int = 20) -> dict:
    """Milliseconds of the exact inverses' LAPACK calls alone, one thread, each timed in a hot loop.

    TP and GAIT factorise every weight matrix they invert (all but the first) with ``getrf``
    and apply it to the batch with ``getrs``; in float64 (what training uses) and float32
    (for comparison: what single precision would save).  Their sum is a floor under the
    step that no scheduling removes, only more cores.
    """
    import scipy.linalg.lapack as lapack

    rng = np.random.default_rng(0)
    out = {}
    for dtype, prefix in ((np.float64, "d"), (np.float32, "s")):
        getrf, getrs = getattr(lapack, prefix + "getrf"), getattr(lapack, prefix + "getrs")
        total_f = total_s = 0.0
        for n in widths[2:]:
            w = (np.linalg.qr(rng.standard_normal((n, n)))[0] + 0.01 * rng.standard_normal((n, n))).astype(dtype)
            u = rng.standard_normal((n, batch)).astype(dtype)
            lu, piv, _ = getrf(w.T)
            total_f += _median_seconds(lambda w=w, getrf=getrf: getrf(w.T), repeats)
            total_s += _median_seconds(lambda lu=lu, piv=piv, u=u, getrs=getrs: getrs(lu, piv, u, trans=1), repeats)
        out[dtype.__name__] = {"getrf_ms": total_f * 1e3, "getrs_ms": total_s * 1e3}
    return out


class NumpySolve:
    """np.linalg.solve on each layer: the independent direct solve the targets are checked against."""

    def solve(self, index, w, u):
        return np.linalg.solve(w, u.T).T


def bench_engine_threads(quick: bool) -> list:
    """Seconds of an 8-tau simulate and a nudged settle of the fast engine, BLAS left at its start-up threads
    (``single_blas_thread_below = 0``, as before the limit) against the engine's own limit (one BLAS thread
    below :data:`circuit.engine.SINGLE_BLAS_THREAD_BELOW`); 4 layers, batch 8, gamma 1e-3, GAIT mode."""
    from threadpoolctl import threadpool_info

    import circuit
    from circuit.engine import SINGLE_BLAS_THREAD_BELOW

    threads = max(i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas")
    rows = []
    for width in (20,) if quick else (20, 100, 400):
        net = models.init_network([width] * 5, "orthogonal", seed=0, n_out=min(10, width))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((8, width))
        target = net.forward(x).rates[-1] + 0.1 * rng.standard_normal((8, width))
        engine = circuit.FastEngine(circuit.build_circuit(net, 1e-3, "gait"))
        row = {"width": width, "blas_threads_at_start": threads}
        for label, limit in (("unlimited", 0), ("engine_limit", SINGLE_BLAS_THREAD_BELOW)):
            engine.single_blas_thread_below = limit
            for verb, seconds in _time_engine(engine, x, target, 1 if quick else 3).items():
                row[f"{verb}_{label}"] = seconds
        print(f"fast engine {width} wide, BLAS started with {threads} thread(s): 8-tau simulate "
              f"{row['simulate_8tau_s_unlimited']:.3g} s -> {row['simulate_8tau_s_engine_limit']:.3g} s, nudged settle "
              f"{row['settle_nudged_s_unlimited'] * 1e3:.3g} ms -> {row['settle_nudged_s_engine_limit'] * 1e3:.3g} ms "
              "(BLAS left alone -> one BLAS thread inside the engine)")
        rows.append(row)
    return rows


def _time_engine(engine, x, target, runs: int) -> dict:
    """Median seconds of an 8-tau simulate and of a nudged settle, after one warm-up call each."""
    calls = {"simulate_8tau_s": lambda: engine.simulate(x, target, duration=8 * engine.spec.tau),
             "settle_nudged_s": lambda: engine.settle_nudged(x, target)}
    out = {}
    for verb, call in calls.items():
        call()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out[verb] = float(np.median(times))
    return out


def run(args, out):
    if args.engine_threads:
        rows = bench_engine_threads(args.quick)
        write_summary(out, "bench", vars(args), engine_threads=rows)
        return
    data = load_embedded()
    widths = [784] + [args.width] * (args.hidden + 1)
    if args.regulariser_only:
        write_summary(out, "bench", {**vars(args), "widths": widths}, rows=[],
                      regulariser=bench_regulariser(args, data, widths))
        return
    steps = given_or(args, "steps", 15, 4)
    if args.feedback:
        from .inverse_error import time_learned_feedback, timing_line

        timing = time_learned_feedback(widths, args.batch, steps, data=data)
        print(timing_line(timing, widths, args.batch))
        write_summary(out, "bench", {**vars(args), "widths": widths, "steps": steps}, feedback=timing)
        return
    peak = matmul_peak(repeats=5 if args.quick else 15)
    with blas_threads(DEFAULT_BLAS_THREADS):
        product_floor = bp_product_floor(widths, args.batch, repeats=10 if args.quick else 30)
        lapack_floor = inverse_floor(widths, args.batch, repeats=5 if args.quick else 20)
    print(f"matmul peak ({widths[1]}x{widths[1]} float64, all threads): {peak:.1f} GFLOP/s")
    for name, f in lapack_floor.items():
        print(f"exact inverses alone, {name}, one thread: getrf x{len(widths) - 2} {f['getrf_ms']:.1f} ms "
              f"+ getrs x{len(widths) - 2} (batch {args.batch}) {f['getrs_ms']:.1f} ms "
              f"= {f['getrf_ms'] + f['getrs_ms']:.1f} ms per batch")
    print(f"BP step's own products timed alone (blas_threads={DEFAULT_BLAS_THREADS}): {product_floor * 1e3:.1f} ms")
    thread_settings = (DEFAULT_BLAS_THREADS,) if args.quick else (1, 2)
    configs = [(t, rule, reg, 1) for t in thread_settings for rule in ("bp", "tp", "gait") for reg in (0.0, 0.1)]
    # the training default: one BLAS thread, the layers' LU factorisations side by side on two threads
    configs += [(DEFAULT_BLAS_THREADS, rule, 0.0, 2) for rule in ("tp", "gait")]
    progress = Progress("bench", len(configs))
    rows = []
    for threads, rule, reg, lu_threads in configs:
        with blas_threads(threads):
            times, net = time_steps(widths, args.batch, rule, reg, steps, data, lu_threads)
        flops = step_flops(widths, args.batch, rule, regulariser=bool(reg))
        ms = float(np.median(times) * 1e3)
        rows.append({"rule": rule, "regulariser": reg, "blas_threads": threads, "lu_threads": lu_threads,
                     "ms_per_batch": ms,
                     "ms_min": float(times.min() * 1e3), "gflops": flops / (ms * 1e-3) / 1e9,
                     "counted_gflop": flops / 1e9, "floor_ms": flops / (peak * 1e9) * 1e3})
        progress.step(f"{rule} regulariser={reg} blas_threads={threads} lu_threads={lu_threads}")
    # GAIT targets against an independent direct solve (np.linalg.solve), on the trained-for-a-while weights.
    x = data.test_x[: args.batch]
    fwd = net.forward(x)
    target = models.constructed_target("quadratic", fwd.rates[-1], data.test_y[: args.batch], 10)
    ours = models.compute_targets(net, fwd, target, "gait", 1e-3).deviations
    direct = models.compute_targets(net, fwd, target, "gait", 1e-3, inverse=NumpySolve()).deviations
    target_error = max(relative_error(a, b) for a, b in zip(ours, direct))
    by = {(r["rule"], r["regulariser"], r["blas_threads"], r["lu_threads"]): r for r in rows}
    bp, gait = by["bp", 0.0, DEFAULT_BLAS_THREADS, 1], by["gait", 0.0, DEFAULT_BLAS_THREADS, 1]
    gait_lu2 = by["gait", 0.0, DEFAULT_BLAS_THREADS, 2]
    published_ms = PUBLISHED_MS_PER_BATCH["gait"]
    ratios = {
        "bp_over_flop_floor": bp["ms_per_batch"] / bp["floor_ms"],
        "bp_over_product_floor": bp["ms_per_batch"] / (product_floor * 1e3),
        "gait_over_bp": gait["ms_per_batch"] / bp["ms_per_batch"],
        "published_over_gait": published_ms / gait["ms_per_batch"],
        "gait_lu1_over_lu2": gait["ms_per_batch"] / gait_lu2["ms_per_batch"],
    }
    print(f"\n{'rule':<6}{'regul.':>8}{'threads':>8}{'LU thr.':>8}{'ms/batch':>10}{'min ms':>9}{'GFLOP':>8}"
          f"{'GFLOP/s':>9}{'floor ms':>10}")
    for r in rows:
        print(f"{r['rule']:<6}{r['regulariser']:>8g}{r['blas_threads']:>8}{r['lu_threads']:>8}{r['ms_per_batch']:>10.1f}"
              f"{r['ms_min']:>9.1f}{r['counted_gflop']:>8.2f}{r['gflops']:>9.1f}{r['floor_ms']:>10.1f}")
    print(f"\nratios use blas_threads={DEFAULT_BLAS_THREADS} (the training default)")
    print(f"BP step / its flop floor at the measured peak: {ratios['bp_over_flop_floor']:.2f}x")
    print(f"BP step / its own products timed alone: {ratios['bp_over_product_floor']:.2f}x")
    print(f"GAIT step / BP step: {ratios['gait_over_bp']:.2f}x")
    print(f"GAIT step, LU on one thread / on two threads: {ratios['gait_lu1_over_lu2']:.2f}x "
          f"({gait_lu2['ms_per_batch']:.1f} ms per batch: {gait_lu2['ms_per_batch']:.1f} s per 1000-batch epoch)")
    print(f"published code's GAIT step ({published_ms:.0f} ms per batch on a 2-core AMD EPYC, a reference figure) "
          f"/ this GAIT step: {ratios['published_over_gait']:.1f}x")
    print(f"GAIT targets vs np.linalg.solve: max relative difference {target_error:.1e}")
    circuit_results = bench_circuit(args, data, widths, gait["ms_per_batch"])
    regulariser_results = bench_regulariser(args, data, widths)
    write_summary(out, "bench", {**vars(args), "widths": widths, "steps": steps}, rows=rows,
                  matmul_gflops=peak, bp_product_floor_ms=product_floor * 1e3, ratios=ratios,
                  inverse_floor_ms=lapack_floor,
                  gait_target_rel_diff_vs_direct=target_error, circuit=circuit_results,
                  regulariser=regulariser_results)


def bench_circuit(args, data, widths, gait_step_ms):
    """The circuit engines on the same network and batch: fast settle, Brian2 per sample."""
    import circuit
    from circuit.brian import summed_synapses_network

    net = models.init_network(widths, "orthogonal", seed=0, n_out=10)
    x = data.test_x[: args.batch]
    target = models.constructed_target("quadratic", net.forward(x).rates[-1], data.test_y[: args.batch], 10)
    spec = circuit.build_circuit(net, 1e-3, "gait")
    lu_threads = default_lu_threads()
    with blas_threads(DEFAULT_BLAS_THREADS):
        t0 = time.perf_counter()
        engine = circuit.make_engine(spec, "fast", inverse=models.DirectInverse(lu_threads))
        t1 = time.perf_counter()
        state = engine.settle_nudged(x, target, rtol=1e-10)
        t2 = time.perf_counter()
    fast_ms, factor_ms = (t2 - t0) * 1e3, (t1 - t0) * 1e3
    print(f"\ncircuit, {widths[1]} wide, {len(widths) - 2} hidden layers, batch {args.batch}, gamma 1e-3, GAIT mode")
    print(f"fast engine: nudged settle to relative residual 1e-10: {fast_ms:.0f} ms "
          f"(of which LU factorisation on {lu_threads} thread(s) {factor_ms:.0f} ms; "
          f"worst residual {np.max(state.residual):.1e}) "
          f"= {fast_ms / gait_step_ms:.1f}x the discrete GAIT step")
    # Brian2: a fixed 30 tau of simulated time (dt = tau/10): what a settle at moderate gamma takes.
    duration_tau = 30.0
    brian = circuit.make_engine(spec, "brian2", codegen="numpy")
    with blas_threads(DEFAULT_BLAS_THREADS):
        t0 = time.perf_counter()
        brian.simulate(x, target, duration=duration_tau * spec.tau, n_points=2)
        brian_s = time.perf_counter() - t0
    per_sample = brian_s / args.batch
    print(f"brian2 engine (network_operation coupling, numpy target): {duration_tau:g} tau = "
          f"{duration_tau * spec.tau * 1e3:g} ms simulated for the batch in {brian_s:.2f} s = "
          f"{per_sample:.3f} s per sample")
    # The plain (summed) Synapses formulation, one sample, a short run scaled to the same duration.
    import brian2 as b2

    summed_widths = widths if not args.quick else [784, 784, 784, 784]
    summed_net = models.init_network(summed_widths, "orthogonal", seed=0, n_out=10)
    summed_spec = circuit.build_circuit(summed_net, 1e-3, "gait")
    y = summed_net.forward(x[:1]).rates[-1]
    b2.prefs.codegen.target = "numpy"
    t0 = time.perf_counter()
    network = summed_synapses_network(summed_spec, x[0], y[0])
    t_build = time.perf_counter() - t0
    short_tau = 2.0
    t0 = time.perf_counter()
    network.run(short_tau * summed_spec.tau * b2.second)
    summed_run = time.perf_counter() - t0
    summed_per_sample = summed_run * duration_tau / short_tau
    print(f"brian2, plain (summed) Synapses ({len(summed_widths) - 1} layers of {summed_widths[1]}, numpy target): "
          f"{summed_run:.2f} s for {short_tau:g} tau, i.e. {summed_per_sample:.1f} s per sample for "
          f"{duration_tau:g} tau (+{t_build:.1f} s to build the synapses); "
          f"{summed_per_sample / per_sample:.0f}x the network_operation engine")
    circuit_ms, discrete_ms = circuit_training_step_ms(widths, args.batch, data, 3 if args.quick else 8, lu_threads)
    print(f"training step with the paper's GAIT settings (regulariser 0.1, LU on {lu_threads} thread(s)): "
          f"circuit-driven {circuit_ms:.0f} ms, "
          f"discrete {discrete_ms:.0f} ms per batch: a circuit epoch costs {circuit_ms / discrete_ms:.1f}x a "
          "discrete GAIT epoch")
    return {"circuit_training_step_ms": circuit_ms, "discrete_gait_training_step_ms": discrete_ms,
            "fast_settle_ms": fast_ms, "fast_factorisation_ms": factor_ms, "lu_threads": lu_threads,
            "fast_residual": float(np.max(state.residual)),
            "fast_settle_over_gait_step": fast_ms / gait_step_ms, "brian2_seconds_per_sample": per_sample,
            "brian2_simulated_tau": duration_tau, "summed_synapses_seconds_per_sample": summed_per_sample,
            "summed_synapses_layers": len(summed_widths) - 1, "summed_synapses_build_seconds": t_build}


def circuit_training_step_ms(widths, batch, data, steps, lu_threads):
    """Median ms per training batch: updates from the circuit (fast engine) vs discrete GAIT, same LU threads."""
    from circuit.learning import CircuitUpdate
    from models.training import TrainConfig, train_epoch

    out = {}
    x, y = data.train_x[: (steps + 2) * batch], data.train_y[: (steps + 2) * batch]
    for engine in ("circuit", "discrete"):
        cfg = TrainConfig(rule="gait", widths=list(widths), engine=engine).resolved()
        net = models.init_network(widths, "orthogonal", seed=0, n_out=10)
        opt = models.Adam.published(cfg.lr)
        times, last = [], [time.perf_counter()]

        def tick(i, n, loss, times=times, last=last):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        with blas_threads(DEFAULT_BLAS_THREADS):
            train_epoch(net, opt, x, y, rule="gait", seed=0, epoch=1, batch=batch, gamma=cfg.gamma,
                        regulariser=cfg.regulariser, on_batch=tick, inverse=models.DirectInverse(lu_threads),
                        update=CircuitUpdate(cfg, lu_threads) if engine == "circuit" else None)
        out[engine] = float(np.median(times[2:]) * 1e3)
    return out["circuit"], out["discrete"]


# ---------------------------------------------------------------- the orthogonality regulariser


def _interleaved_median_ms(fns: dict, repeats: int) -> dict:
    """``{name: (wall ms, thread CPU ms)}``: medians over ``repeats`` calls of each callable, the callables
    taking turns (after one warm-up call each) so that all of them meet the same load on a shared machine.
    The calling thread's CPU time leaves out the time other processes hold the core: for single-threaded
    work it is the steadier figure; it misses any work done on other threads."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.thread_time()
            fn()
            times[name].append((time.perf_counter() - t0, time.thread_time() - c0))
    return {name: tuple(float(v) for v in np.median(t, axis=0) * 1e3) for name, t in times.items()}


#: Goal for the float32 paper-setting GAIT step with regulariser 0.1 on two cores (ms); ``bench`` says if it is met.
FLOAT32_STEP_GOAL_MS = 150.0
#: The regulariser's schedules timed in the paper-setting GAIT step: (name, threads, started before the rules).
#: The last is how training runs it (``train_epoch(regulariser_threads=)``, threads = the LU threads).
SCHEDULES = (("none (regulariser 0)", 0, False), ("one matrix after the other", 1, False),
             ("matrices on 2 threads", 2, False), ("started before the rules, 2 threads", 2, True))


def _gait_step_stages(net, opt, inverse, x, labels, lam, threads, early) -> tuple:
    """One paper-setting GAIT step in the order of ``train_epoch``; seconds of its three stages.

    (rules: forward pass, targets and updates, with the regulariser running alongside if started
    early; regulariser: what is left of it afterwards; Adam) and the process's CPU seconds (all threads).
    """
    from models.regulariser import start_orthogonality_gradients
    from models.rules import forward_factorising

    t0, c0 = time.perf_counter(), time.process_time()
    pending = start_orthogonality_gradients(net.weights, lam, threads) if lam and early else None
    fwd = forward_factorising(net, x, "gait", inverse)
    target = models.constructed_target("quadratic", fwd.rates[-1], labels, 10)
    dW, db, _ = models.rule_updates(net, x, target, "gait", 1e-3, inverse, fwd=fwd)
    t1 = time.perf_counter()
    if lam:
        (pending or start_orthogonality_gradients(net.weights, lam, threads)).subtract_from(dW)
    t2 = time.perf_counter()
    opt.step(net.weights + net.biases, dW + db)
    t3 = time.perf_counter()
    return (t1 - t0, t2 - t1, t3 - t2), time.process_time() - c0


def bench_regulariser(args, data, widths, lam: float = 0.1):
    """The paper-setting GAIT step (regulariser ``lam``) in float64 and float32, and the regulariser alone.

    For each dtype the step runs with the regulariser computed one matrix after the other (as
    ``train_step`` does), side by side on two threads, started on two threads before the rule's
    updates (as training runs it), and without the regulariser; the variants step their own networks
    from the same start on the same batches, taking turns step by step, so that all meet the same load.
    A step is timed in its three stages (rule updates, regulariser, Adam).  The regulariser's share of
    a step is the time it adds to the step without it.  At the end the regularised variants' weights
    are compared bit for bit with ``train_step``'s of their dtype.  Then the regulariser alone per
    matrix (float64 and float32, one and two BLAS threads, the output layer's task rows).
    """
    from scipy.linalg.blas import dsyrk, ssyrk

    from models.regulariser import orthogonality_gradient

    steps = given_or(args, "steps", 15, 3)
    lu_threads = default_lu_threads()
    dtypes = ("float64", "float32")
    variants = [(dtype, *schedule) for dtype in dtypes for schedule in SCHEDULES]
    names = [(dtype, name) for dtype, name, _, _ in variants] + [(dtype, "train_step") for dtype in dtypes]
    nets = {key: models.init_network(widths, "orthogonal", seed=0, n_out=10, dtype=key[0]) for key in names}
    optimizers = {key: models.Adam.published(lr=1e-4) for key in names}
    inverses = {key: models.DirectInverse(lu_threads) for key in names}
    stages = {(dtype, name): [] for dtype, name, _, _ in variants}
    n = data.train_x.shape[0]
    with blas_threads(DEFAULT_BLAS_THREADS):
        for k in range(steps + 2):  # two warm-up steps
            idx = np.arange(k * args.batch, (k + 1) * args.batch) % n
            x, labels = data.train_x[idx], data.train_y[idx]
            for dtype, name, threads, early in variants:
                key = (dtype, name)
                stages[key].append(_gait_step_stages(nets[key], optimizers[key], inverses[key], x, labels,
                                                     lam if threads else 0.0, threads, early))
            for dtype in dtypes:
                key = (dtype, "train_step")
                target = models.constructed_target("quadratic", nets[key].forward(x).rates[-1], labels, 10)
                train_step(nets[key], optimizers[key], x, target, "gait", 1e-3, lam, inverse=inverses[key])
    identical = {dtype: all(np.array_equal(a, b) for (d, name, threads, _) in variants if d == dtype and threads
                            for a, b in zip(nets[dtype, name].weights + nets[dtype, name].biases,
                                            nets[dtype, "train_step"].weights + nets[dtype, "train_step"].biases))
                 for dtype in dtypes}
    step_rows = []
    for (dtype, name), timed in stages.items():
        walls = np.array([t for t, _ in timed[2:]])
        rules_ms, reg_ms, adam_ms = np.median(walls, axis=0) * 1e3
        step_rows.append({"dtype": dtype, "regulariser_schedule": name, "rules_ms": float(rules_ms),
                          "regulariser_ms": float(reg_ms), "adam_ms": float(adam_ms),
                          "step_ms": float(np.median(walls.sum(axis=1)) * 1e3),
                          "cpu_ms": float(np.median([c for _, c in timed[2:]]) * 1e3)})
    by = {(r["dtype"], r["regulariser_schedule"]): r for r in step_rows}
    for r in step_rows:
        r["regulariser_share"] = 1.0 - by[r["dtype"], SCHEDULES[0][0]]["step_ms"] / r["step_ms"]
        r["published_over_step"] = PUBLISHED_MS_PER_BATCH["gait_regulariser_0.1"] / r["step_ms"]
    print(f"\nGAIT step at the paper's settings ({widths[1]} wide, {len(widths) - 2} hidden layers, "
          f"batch {args.batch}, gamma 1e-3, regulariser {lam:g}, published Adam; BLAS on {DEFAULT_BLAS_THREADS} "
          f"thread(s), LU on {lu_threads}), median ms over {steps} steps, the variants taking turns (regul.: "
          "what is left of the regulariser once the rules' updates are done; CPU: the process's CPU time, all "
          "threads; share: the time the regulariser adds to the step without it):")
    print(f"{'dtype':<9}{'regulariser':<38}{'rules':>8}{'regul.':>8}{'Adam':>7}{'step':>8}{'CPU':>8}{'share':>8}"
          f"{'published/step':>16}")
    for r in step_rows:
        print(f"{r['dtype']:<9}{r['regulariser_schedule']:<38}{r['rules_ms']:>8.1f}{r['regulariser_ms']:>8.1f}"
              f"{r['adam_ms']:>7.1f}{r['step_ms']:>8.1f}{r['cpu_ms']:>8.1f}{r['regulariser_share']:>8.0%}"
              f"{r['published_over_step']:>15.1f}x")
    training = {dtype: by[dtype, SCHEDULES[-1][0]] for dtype in dtypes}
    f64, f32 = training["float64"], training["float32"]
    published = PUBLISHED_MS_PER_BATCH["gait_regulariser_0.1"]
    print(f"as training runs it ({SCHEDULES[-1][0]}): float64 {f64['step_ms']:.1f} ms, float32 {f32['step_ms']:.1f} ms "
          f"per step (float32 / float64 {f32['step_ms'] / f64['step_ms']:.2f}x); the regulariser's share "
          f"{f64['regulariser_share']:.0%} and {f32['regulariser_share']:.0%}; the published code's "
          f"{published:.0f} ms (a reference figure, 2-core AMD EPYC) / this step: {f64['published_over_step']:.1f}x "
          f"and {f32['published_over_step']:.1f}x")
    met = f32["step_ms"] <= FLOAT32_STEP_GOAL_MS
    print(f"float32 step {f32['step_ms']:.1f} ms against the goal of {FLOAT32_STEP_GOAL_MS:.0f} ms on two cores: "
          f"{'met' if met else 'not met'} (CPU time {f32['cpu_ms']:.1f} ms per step over all threads: "
          f"{f32['cpu_ms'] / f32['step_ms']:.2f} cores busy on average)")
    for dtype in dtypes:
        base = by[dtype, SCHEDULES[1][0]]
        for r in step_rows:
            if r["dtype"] == dtype and r["regulariser_schedule"] not in (SCHEDULES[0][0], SCHEDULES[1][0]):
                print(f"{dtype}: {r['regulariser_schedule']} / one matrix after the other: step "
                      f"{r['step_ms'] / base['step_ms']:.2f}x")
    print("weights and biases after {} steps bit-identical across the regularised variants and train_step: {}".format(
        steps + 2, ", ".join(f"{dtype} {same}" for dtype, same in identical.items())))

    # The regulariser alone on each matrix of the trained-for-a-while network.
    repeats = 3 if args.quick else 9
    net = nets["float64", "train_step"]
    layer_rows = []
    for i, w in enumerate(net.weights):
        w32 = w.astype(np.float32)
        fns = {"f64": lambda w=w: orthogonality_gradient(w, lam),
               "f32": lambda w=w32: orthogonality_gradient(w, lam),
               "syrk_f64": lambda w=w: dsyrk(1.0, w, trans=1), "syrk_f32": lambda w=w32: ssyrk(1.0, w, trans=1)}
        if i == len(net.weights) - 1:  # the output layer's task rows alone: a different, cheaper regulariser
            fns["task_rows_f64"] = lambda w=w: orthogonality_gradient(w[: net.n_out], lam)
        row = {"layer": i + 1, "shape": list(w.shape)}
        for threads in (1, 2):
            with blas_threads(threads):
                for key, (wall, cpu) in _interleaved_median_ms(fns, repeats).items():
                    row[f"{key}_{threads}t_ms"] = wall
                    if threads == 1:
                        row[f"{key}_1t_cpu_ms"] = cpu
        layer_rows.append(row)
    cols = {"f64_1t_ms": "f64 1t", "f64_1t_cpu_ms": "f64 1t cpu", "syrk_f64_1t_cpu_ms": "syrk 1t cpu",
            "f32_1t_ms": "f32 1t", "f32_1t_cpu_ms": "f32 1t cpu", "syrk_f32_1t_cpu_ms": "ssyrk 1t cpu",
            "f64_2t_ms": "f64 2t", "f32_2t_ms": "f32 2t"}
    print(f"\nregulariser alone per matrix, median ms over {repeats} calls (1t / 2t: BLAS threads; cpu: the calling "
          "thread's CPU time; syrk: W^T W, the rest is symm):")
    print(f"{'layer':<7}{'shape':<10}" + "".join(f"{label:>13}" for label in cols.values()))
    for r in layer_rows:
        print(f"{r['layer']:<7}{'x'.join(map(str, r['shape'])):<10}" + "".join(f"{r[c]:>13.1f}" for c in cols))
    total = {c: sum(r[c] for r in layer_rows) for c in cols}
    print(f"{'all':<17}" + "".join(f"{total[c]:>13.1f}" for c in cols))
    flops = sum(3.0 * w.shape[0] ** 3 for w in net.weights)
    out_row = layer_rows[-1]
    print(f"float64, one thread: {flops / 1e9:.2f} GFLOP at {flops / total['f64_1t_cpu_ms'] / 1e6:.1f} GFLOP/s "
          f"(CPU time; syrk {total['syrk_f64_1t_cpu_ms'] / total['f64_1t_cpu_ms']:.0%} of it, symm the rest); "
          f"float32 / float64 {total['f32_1t_cpu_ms'] / total['f64_1t_cpu_ms']:.2f}x (CPU time); two BLAS threads "
          f"/ one {total['f64_2t_ms'] / total['f64_1t_ms']:.2f}x (float64, wall), "
          f"{total['f32_2t_ms'] / total['f32_1t_ms']:.2f}x (float32)")
    print(f"output layer ({net.n_out} task rows, {out_row['shape'][0] - net.n_out} auxiliary): "
          f"{out_row['f64_1t_cpu_ms']:.1f} ms of {total['f64_1t_cpu_ms']:.1f} ms (CPU time), like any hidden layer "
          f"(its auxiliary rows enter W^T W and are regularised too); its task rows alone would take "
          f"{out_row['task_rows_f64_1t_cpu_ms']:.1f} ms (a different regulariser, not what training computes)")
    return {"step": step_rows, "layers": layer_rows, "bit_identical_to_train_step": identical,
            "steps": steps, "lu_threads": lu_threads, "lambda": lam, "float32_goal_ms": FLOAT32_STEP_GOAL_MS,
            "float32_goal_met": met}
