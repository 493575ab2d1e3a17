"""Train a network with BP, TP, ITP or GAIT-prop (paper section 7-8) and record learning curves.

Defaults follow the paper: batch 60, Adam (the published code's variant), quadratic loss
on one-hot targets, orthogonal initialisation; per rule BP lr 1e-4 without regulariser,
GAIT/ITP lr 1e-4 with regulariser 0.1 and gamma 1e-3, TP lr 1e-5 with regulariser 1000.
Each epoch ends with an evaluation (a fixed 5000-sample training subset and the whole
test set) and an atomic checkpoint; ``--resume`` continues a killed run and ends with
results identical to an uninterrupted run.  Writes metrics.csv (tidy), summary.json and
learning_curves.png.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import models
from analysis.plots import learning_curves, new_figure, save_figure
from models.training import evaluate, train_epoch

from .common import DEFAULT_BLAS_THREADS, blas_start_threads, blas_threads, write_summary
from .datasets import DATASETS, load_dataset

DESCRIPTION = __doc__
RULE_DEFAULTS = {"bp": {"lr": 1e-4, "regulariser": 0.0}, "gait": {"lr": 1e-4, "regulariser": 0.1},
                 "itp": {"lr": 1e-4, "regulariser": 0.1}, "tp": {"lr": 1e-5, "regulariser": 1000.0}}
EVAL_TRAIN_SAMPLES = 5000
# noisy circuit training: Euler-Maruyama steps of NOISY_DT tau for NOISY_DURATION tau from the free phase, readout
# = the average after NOISY_AVERAGE_FROM tau (the Euler fixed point is the steady state itself, so the step only
# shapes the noise, not the mean; Euler is stable for the circuit's eigenvalues in [-2, 0)/tau up to 1 tau)
NOISY_DT, NOISY_DURATION, NOISY_AVERAGE_FROM = 0.25, 120.0, 20.0


@dataclass
class TrainConfig:
    dataset: str = "fashion_mnist"
    rule: str = "gait"
    widths: list = field(default_factory=lambda: [784] * 6)
    activation: str = "leaky_relu"
    epochs: int = 5
    batch: int = 60
    lr: float | None = None
    regulariser: float | None = None
    gamma: float = 1e-3
    loss: str = "quadratic"
    seed: int = 0
    init: str = "orthogonal"
    adam: str = "published"
    n_out: int = 10
    engine: str = "discrete"
    schedule: str = "uniform"   # circuit engine: layer-wise coupling schedule (gamma is the output's)
    noise: float = 0.0          # circuit engine: white-noise strength in the rate dynamics

    def resolved(self) -> "TrainConfig":
        """Fill lr and regulariser from the rule's paper defaults."""
        d = RULE_DEFAULTS[self.rule]
        return TrainConfig(**{**asdict(self), "lr": d["lr"] if self.lr is None else self.lr,
                              "regulariser": d["regulariser"] if self.regulariser is None else self.regulariser})


def with_defaults(config: dict) -> dict:
    """A saved configuration with settings added to TrainConfig after it was written at their defaults."""
    return {**asdict(TrainConfig()), **config}


def add_arguments(parser):
    parser.add_argument("--dataset", choices=DATASETS, default="fashion_mnist")
    parser.add_argument("--data-dir", help="directory with the official files (also: $GAITCIRCUIT_DATA)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the data is missing")
    parser.add_argument("--rule", choices=models.RULES, default="gait")
    parser.add_argument("--hidden", type=int, default=4, help="hidden layers of a 784-wide network (default 4)")
    parser.add_argument("--widths", help="explicit widths, e.g. 784,784,500,200,10 (overrides --hidden)")
    parser.add_argument("--activation", choices=("leaky_relu", "linear"), default="leaky_relu")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=60)
    parser.add_argument("--lr", type=float, help="learning rate (default: the rule's paper value)")
    parser.add_argument("--regulariser", type=float, help="orthogonality regulariser lambda (default: per rule)")
    parser.add_argument("--gamma", type=float, default=1e-3)
    parser.add_argument("--loss", choices=models.LOSSES, default="quadratic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", choices=("orthogonal", "xavier"), default="orthogonal")
    parser.add_argument("--adam", choices=("published", "standard"), default="published")
    parser.add_argument("--engine", choices=("discrete", "circuit"), default="discrete",
                        help="circuit: every update comes from the fast circuit engine's steady state and local "
                             "rule (rule gait or itp: the coupling mode; gamma: the coupling)")
    parser.add_argument("--schedule", choices=("uniform", "output", "geometric"), default="uniform",
                        help="circuit engine: layer-wise coupling schedule, gamma at the output (default uniform)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="circuit engine: additive white noise in the rate dynamics; the steady state is "
                             f"then the time average over [{NOISY_AVERAGE_FROM:g}, {NOISY_DURATION:g}] tau "
                             "(default 0: exact steady state)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--lu-threads", type=int,
                        help="threads factorising the layer inverses of TP, ITP and GAIT side by side (default: "
                             "the cores available to this process, at most 2; results are identical for any value)")
    # testing aid, hidden from --help: exit after this many batches, as a killed run would
    parser.add_argument("--stop-after-batches", type=int, help=argparse.SUPPRESS)


def config_from_args(args) -> TrainConfig:
    if args.widths:
        widths = [int(w) for w in args.widths.split(",")]
    else:
        widths = [784] * (args.hidden + 2)
    cfg = TrainConfig(dataset=args.dataset, rule=args.rule, widths=widths, activation=args.activation,
                      epochs=args.epochs, batch=args.batch, lr=args.lr, regulariser=args.regulariser,
                      gamma=args.gamma, loss=args.loss, seed=args.seed, init=args.init, adam=args.adam,
                      engine=args.engine, schedule=args.schedule, noise=args.noise)
    if cfg.engine != "circuit" and (cfg.schedule != "uniform" or cfg.noise != 0):
        raise ValueError("--schedule and --noise: expected only with --engine circuit (the discrete rules have "
                         "neither); add --engine circuit")
    if args.quick:
        cfg.dataset, cfg.epochs = "embedded", min(cfg.epochs, 2)
    return cfg.resolved()


def circuit_update(cfg: TrainConfig, lu_threads: int | None = None):
    """An update hook for :func:`models.training.train_epoch`: the circuit's local rule at steady state.

    ``lu_threads`` (default :func:`default_lu_threads`): threads factorising the circuit's layers (same results).
    """
    import circuit

    if cfg.rule not in circuit.MODES:
        raise ValueError(f"--engine circuit: expected --rule gait or itp (the coupling mode), got {cfg.rule!r}")

    gammas = circuit.coupling_schedule(cfg.schedule, cfg.gamma, len(cfg.widths) - 1)
    warned = []
    inverse = lu_inverse(lu_threads)

    def update(net, x, target, fwd):
        engine = circuit.FastEngine(circuit.build_circuit(net, gammas, cfg.rule), inverse=inverse)
        if cfg.noise > 0:  # the noise seed follows the batch's content, so --resume stays bit-identical
            seed = [cfg.seed, zlib.crc32(np.ascontiguousarray(x).tobytes())]
            state = engine.settle_noisy(x, target, cfg.noise, duration=NOISY_DURATION,
                                        average_from=NOISY_AVERAGE_FROM, dt=NOISY_DT, seed=seed, forward=fwd)
        else:
            # a sample whose slowest mode has not reached the 1e-10 residual after the engine's 2000 tau keeps the
            # state it reached (as a circuit read out at that time would); divergence still raises
            state = engine.settle_nudged(x, target, on_failure="mask", forward=fwd)
            if not state.converged.all() and not warned:
                warned.append(True)
                print(f"\n[train] circuit: {np.sum(~state.converged)} of {len(x)} samples of a batch did not settle to "
                      f"residual 1e-10 within 2000 tau (worst {state.residual.max():.1e}); their state at that time is "
                      "used (reported once per run)", file=sys.stderr)
        return engine.plasticity(state, x)

    return update


def run(args, out):
    cfg = config_from_args(args)
    data = load_dataset(cfg.dataset, args.data_dir, allow_download=not args.no_download)
    update = circuit_update(cfg, args.lu_threads) if cfg.engine == "circuit" else None
    result = train(cfg, data, out, resume=args.resume, stop_after_batches=args.stop_after_batches, update=update,
                   lu_threads=args.lu_threads)
    print(f"[train] peak test accuracy {result['peak_test_accuracy']:.4f}, final {result['final_test_accuracy']:.4f}")


class ProgressBar:
    def __init__(self, label: str):
        self.label, self.start, self.last = label, time.perf_counter(), 0.0

    def __call__(self, i, n, running_loss):
        now = time.perf_counter()
        if now - self.last < 0.5 and i + 1 < n:
            return
        self.last = now
        done = (i + 1) / n
        elapsed = now - self.start
        bar = "#" * int(25 * done) + "." * (25 - int(25 * done))
        print(f"\r[train] {self.label} |{bar}| {i + 1}/{n} batches {elapsed:5.1f} s, "
              f"~{elapsed / done - elapsed:4.0f} s left, loss {running_loss:.4f}", end="", file=sys.stderr,
              flush=True)


def build(cfg: TrainConfig):
    act = "identity" if cfg.activation == "linear" else "leaky_relu"
    net = models.init_network(cfg.widths, cfg.init, seed=cfg.seed, activation=act, n_out=cfg.n_out)
    opt = models.Adam.published(cfg.lr) if cfg.adam == "published" else models.Adam(lr=cfg.lr)
    return net, opt


def lu_inverse(lu_threads: int | None) -> models.DirectInverse:
    """The exact layer inverses on ``lu_threads`` threads (None: :func:`default_lu_threads`); same results for any."""
    return models.DirectInverse(default_lu_threads() if lu_threads is None else lu_threads)


def default_lu_threads() -> int:
    """The cores this process may use, at most 2 (measured: a third LU thread gains nothing at 784 wide)."""
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def train(cfg: TrainConfig, data, out: Path, resume: bool = False, stop_after_batches: int | None = None,
          update=None, label: str = "", lu_threads: int | None = None) -> dict:
    """Train per ``cfg``; checkpoint every epoch in ``out``; return the summary dict.

    ``lu_threads`` (default :func:`default_lu_threads`) only changes speed, never results.
    Only one process trains in ``out`` at a time (:class:`RunDirBusyError` otherwise).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with run_dir_lock(out):
        return _train(cfg, data, out, resume, stop_after_batches, update, label, lu_threads)


class RunDirBusyError(RuntimeError):
    """Another process is training in the same output directory."""


@contextlib.contextmanager
def run_dir_lock(out: Path):
    """Hold an exclusive lock on ``out/.lock`` (released by the OS even if the process is killed).

    Two processes checkpointing into one directory would overwrite each other's epochs.
    """
    fh = open(out / ".lock", "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise RunDirBusyError(
                f"{out}: expected no other training in this directory, but process {holder} holds its lock; "
                "wait for it to finish (then --resume) or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


def _train(cfg, data, out, resume, stop_after_batches, update, label, lu_threads) -> dict:
    net, opt = build(cfg)
    history, first_epoch, times = [], 1, []
    ckpt = out / "checkpoint.npz"
    blas = blas_start_threads()
    if resume and ckpt.exists():
        first_epoch, history, times, saved_blas = load_checkpoint(ckpt, cfg, net, opt)
        print(f"[train] resuming after epoch {first_epoch - 1} from {ckpt}", file=sys.stderr)
        if saved_blas is not None and saved_blas != blas:
            print(f"[train] warning: the checkpoint was written by a process whose BLAS started with {saved_blas} "
                  f"thread(s), this one with {blas}: the run continues correctly, but its last bits will differ "
                  "from an uninterrupted run (resume with `python -m experiments train`, which starts OpenBLAS "
                  "with one thread, or set OPENBLAS_NUM_THREADS as the first process had it)", file=sys.stderr)
    eval_idx = np.random.default_rng([cfg.seed, 10**6]).choice(len(data.train_y), min(EVAL_TRAIN_SAMPLES,
                                                                                     len(data.train_y)), replace=False)
    batches_per_epoch = len(data.train_y) // cfg.batch
    inverse = lu_inverse(lu_threads)
    if not history:
        history += evaluation_rows(net, cfg, data, eval_idx, epoch=0, step=0)
    for epoch in range(first_epoch, cfg.epochs + 1):
        bar = ProgressBar(f"{label}epoch {epoch}/{cfg.epochs}")
        hook = bar
        if stop_after_batches is not None:
            def hook(i, n, loss, bar=bar):
                bar(i, n, loss)
                if i + 1 >= stop_after_batches:
                    print("\n[train] stopping as asked (--stop-after-batches)", file=sys.stderr)
                    sys.exit(3)
        t0 = time.perf_counter()
        with blas_threads(DEFAULT_BLAS_THREADS):
            stats = train_epoch(net, opt, data.train_x, data.train_y, rule=cfg.rule, seed=cfg.seed, epoch=epoch,
                                batch=cfg.batch, gamma=cfg.gamma, regularizer=cfg.regulariser, loss=cfg.loss,
                                update=update, on_batch=hook, inverse=inverse)
            t1 = time.perf_counter()
            rows = evaluation_rows(net, cfg, data, eval_idx, epoch=epoch, step=epoch * batches_per_epoch)
            t2 = time.perf_counter()
        rows += [{"epoch": epoch, "step": epoch * batches_per_epoch, "split": "train_running",
                  "metric": k.removeprefix("running_"),
                  "value": v} for k, v in stats.items()]
        history += rows
        times.append({"epoch": epoch, "train_seconds": t1 - t0, "eval_seconds": t2 - t1})
        test_acc = next(r["value"] for r in rows if r["split"] == "test" and r["metric"] == "accuracy")
        print(f"\r[train] {label}epoch {epoch}/{cfg.epochs}: {t1 - t0:.1f} s training "
              f"({batches_per_epoch / (t1 - t0):.1f} batches/s), evaluation {t2 - t1:.1f} s "
              f"({100 * (t2 - t1) / (t1 - t0):.1f}%), test accuracy {test_acc:.4f}" + " " * 20, file=sys.stderr)
        save_checkpoint(ckpt, cfg, net, opt, epoch, history, times, blas)
        write_csv(out / "metrics.csv", history)
    return summarise(cfg, history, times, out)


def evaluation_rows(net, cfg, data, eval_idx, epoch, step):
    rows = []
    for split, (x, y) in {"train": (data.train_x[eval_idx], data.train_y[eval_idx]),
                          "test": (data.test_x, data.test_y)}.items():
        loss, acc = evaluate(net, x, y, cfg.loss)
        rows += [{"epoch": epoch, "step": step, "split": split, "metric": "loss", "value": loss},
                 {"epoch": epoch, "step": step, "split": split, "metric": "accuracy", "value": acc}]
    return rows


def save_checkpoint(path: Path, cfg, net, opt, epoch, history, times, blas_threads_at_start=None):
    arrays = {f"w{i}": w for i, w in enumerate(net.weights)}
    arrays.update({f"b{i}": b for i, b in enumerate(net.biases)})
    arrays.update({f"m{i}": m for i, m in enumerate(opt.m)})
    arrays.update({f"v{i}": v for i, v in enumerate(opt.v)})
    meta = {"config": asdict(cfg), "epoch": epoch, "adam_steps": opt.step_count, "history": history,
            "times": times, "blas_start_threads": blas_threads_at_start}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, cfg, net, opt):
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        saved = with_defaults(meta["config"])
        saved = {k: v for k, v in saved.items() if k != "epochs"}
        wanted = {k: v for k, v in asdict(cfg).items() if k != "epochs"}
        if saved != wanted:
            diff = {k: (saved.get(k), wanted.get(k)) for k in wanted if saved.get(k) != wanted.get(k)}
            raise ValueError(f"--resume: the checkpoint {path} was made with another configuration "
                             f"(saved vs now: {diff}); use another --out or the same settings")
        L = len(net.weights)
        for i in range(L):
            net.weights[i][...] = data[f"w{i}"]
            net.biases[i][...] = data[f"b{i}"]
        opt.m = [data[f"m{i}"].copy() for i in range(2 * L)]
        opt.v = [data[f"v{i}"].copy() for i in range(2 * L)]
        opt.step_count = meta["adam_steps"]
    return meta["epoch"] + 1, meta["history"], meta["times"], meta.get("blas_start_threads")


def write_csv(path: Path, history):
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", "step", "split", "metric", "value"])
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, path)


def summarise(cfg, history, times, out) -> dict:
    def series(split, metric):
        return [(r["epoch"], r["value"]) for r in history if r["split"] == split and r["metric"] == metric]

    test_acc = series("test", "accuracy")
    train_acc = series("train", "accuracy")
    train_s = sum(t["train_seconds"] for t in times)
    eval_s = sum(t["eval_seconds"] for t in times)
    result = {
        "peak_test_accuracy": max(v for e, v in test_acc if e > 0) if len(test_acc) > 1 else float("nan"),
        "final_test_accuracy": test_acc[-1][1],
        "peak_train_accuracy": max(v for e, v in train_acc if e > 0) if len(train_acc) > 1 else float("nan"),
        "final_train_accuracy": train_acc[-1][1],
        "seconds_per_epoch": train_s / max(len(times), 1),
        "evaluation_overhead": eval_s / train_s if train_s else float("nan"),
    }
    plot_curves(history, out, cfg)
    write_summary(out, "train", asdict(cfg), rows=history, epoch_times=times, **result)
    return result


def plot_curves(history, out, cfg):
    """learning_curves.png: loss and accuracy against epoch (test set, training subset, running mean)."""
    fig, axes = new_figure(1, 2, figsize=(9.5, 3.6))
    learning_curves(axes[0], history, rule=cfg.rule, loss=cfg.loss)
    engine = " by the circuit" if cfg.engine == "circuit" else ""
    fig.suptitle(f"{cfg.rule.upper()}{engine} on {cfg.dataset}, widths {'-'.join(map(str, cfg.widths))}", fontsize=10)
    save_figure(fig, Path(out) / "learning_curves.png")
    return fig
