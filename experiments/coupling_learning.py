"""Learning by the circuit against the coupling strength and the neural noise.

Each point trains a small network whose every update comes from the circuit's steady
state and the local rule (``train --engine circuit``; with noise, the time-averaged state
of the Euler-Maruyama dynamics) and records its test accuracy; discrete GAIT-prop at the
same gamma and BP are the references.  Data: the embedded Fashion-MNIST subset shrunk to
7x7 pixels (49 inputs), network 49 wide with 2 hidden layers (3 layers of couplings, as in
``coupling``), batch 60, the paper's GAIT settings (published Adam, regulariser 0.1,
orthogonal initialisation) except a learning rate of 1e-3 (--lr) so that a few epochs on
1200 images already learn.  Points run in a process pool (or
on a Dask cluster: --scheduler) and are written to points.jsonl as they finish; a rerun
resumes.
"""

from __future__ import annotations

import time

from analysis.plots import use_agg
from models.errors import ValidationError
from models.training import TrainConfig
from models.validation import check_count, check_gamma, check_positive

from .common import write_summary
from .datasets import Dataset, load_embedded
from .demo import shrink
from .grid import comma_list
from .sweep import run_points
from .train import as_usage_error

DESCRIPTION = __doc__


def add_arguments(parser):
    parser.add_argument("--gammas", help="output couplings (uniform schedule; default 1e-3,1e-2,0.05,0.2,0.5, "
                                         "--quick: 1e-2,0.2)")
    parser.add_argument("--noise", help="noise strengths of the circuit (default 0,1e-8,1e-6,1e-4, --quick: 0,1e-4)")
    parser.add_argument("--hidden", type=int, default=2, help="hidden layers of 49 units (default 2)")
    parser.add_argument("--epochs", type=int, help="default 5 (--quick: 1)")
    parser.add_argument("--train-samples", type=int,
                        help=f"training images per epoch, at most {EMBEDDED_TRAIN} (default 1200, --quick: 180)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--scheduler", help="HOST:PORT of a Dask distributed scheduler to run the points on")


#: Training images of the embedded subset, and the batch (the paper's).
EMBEDDED_TRAIN, BATCH = 3000, 60


def validate(args) -> dict:
    """The sweep's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    quick = args.quick
    gammas = comma_list("--gammas", args.gammas or ("1e-2,0.2" if quick else "1e-3,1e-2,0.05,0.2,0.5"), convert=float)
    check_gamma(gammas, len(gammas), name="--gammas")
    noises = comma_list("--noise", args.noise or ("0,1e-4" if quick else "0,1e-8,1e-6,1e-4"), convert=float)
    for v in noises:
        check_positive("--noise", v, allow_zero=True)
    common = {"hidden": check_count("--hidden", args.hidden, 0),
              "epochs": (1 if quick else 5) if args.epochs is None else check_count("--epochs", args.epochs),
              "lr": args.lr, "seed": args.seed,
              "train_samples": (180 if quick else 1200) if args.train_samples is None else args.train_samples}
    if not BATCH <= common["train_samples"] <= EMBEDDED_TRAIN:
        raise ValidationError(f"--train-samples: expected {BATCH} (one batch) to {EMBEDDED_TRAIN} (the embedded "
                              f"subset), got {common['train_samples']}")
    if args.workers is not None:
        check_count("--workers", args.workers)
    points = [{"rule": "bp", "engine": "discrete", "gamma": None, "noise": 0.0, **common}]
    points += [{"rule": "gait", "engine": "discrete", "gamma": g, "noise": 0.0, **common} for g in gammas]
    points += [{"rule": "gait", "engine": "circuit", "gamma": g, "noise": v, **common} for v in noises for g in gammas]
    with as_usage_error():
        for point in points:
            point_config(point, name="embedded-7x7")
    return {"gammas": gammas, "noises": noises, "common": common, "points": points}


def small_dataset(train_samples: int) -> Dataset:
    raw = load_embedded()
    return Dataset("embedded-7x7", shrink(raw.train_x[:train_samples]), raw.train_y[:train_samples],
                   shrink(raw.test_x), raw.test_y)


def point_config(point: dict, name: str) -> TrainConfig:
    """The training configuration of one point (ValidationError if a setting is bad)."""
    return TrainConfig(dataset=name, rule=point["rule"], widths=[49] * (point["hidden"] + 2), epochs=point["epochs"],
                       batch=BATCH, lr=point["lr"], gamma=point["gamma"] or 1e-3, seed=point["seed"],
                       engine=point["engine"], noise=point["noise"]).resolved()


def learn_point(point: dict) -> dict:
    """Train one configuration; test accuracy after every epoch (runs in a worker process)."""
    import circuit

    data = small_dataset(point["train_samples"])
    start = time.perf_counter()
    # one LU thread: the workers already fill the cores
    result = circuit.train(point_config(point, data.name), data, lu_threads=1, progress=False)
    accuracy = result.series("test", "accuracy")[1].tolist()
    return {"test_accuracy": accuracy, "final_test_accuracy": accuracy[-1], "peak_test_accuracy": max(accuracy),
            "unsettled_samples": result.summary.get("unsettled_samples"), "seconds": time.perf_counter() - start}


def run(args, out):
    settings = validate(args)
    gammas, noises, common, points = settings["gammas"], settings["noises"], settings["common"], settings["points"]
    records = run_points(points, learn_point, out / "points.jsonl", workers=args.workers, label="coupling_learning",
                         scheduler=args.scheduler)
    rows, failed = [], []
    for rec in records:
        if "error" in rec:
            failed.append(rec)
            continue
        rows.append({**{k: rec["point"][k] for k in ("rule", "engine", "gamma", "noise")}, **rec["result"]})
    print_table(rows, gammas, noises)
    plot(rows, gammas, noises, out)
    write_summary(out, "coupling_learning", {**vars(args), "gammas": gammas, "noises": noises, **common},
                  rows=rows, failed_points=failed)


def _find(rows, **where):
    return next((r for r in rows if all(r[k] == v for k, v in where.items())), None)


def print_table(rows, gammas, noises):
    bp = _find(rows, rule="bp")
    print(f"\nfinal test accuracy (BP: {bp['final_test_accuracy']:.4f})" if bp else "\nfinal test accuracy")
    print(f"{'':>22}" + "".join(f"{g:>10.0e}" for g in gammas))
    lines = [("discrete GAIT", {"engine": "discrete", "rule": "gait"})]
    lines += [(f"circuit, noise {v:.0e}", {"engine": "circuit", "noise": v}) for v in noises]
    for name, where in lines:
        cells = [_find(rows, gamma=g, **where) for g in gammas]
        print(f"{name:>22}" + "".join(f"{c['final_test_accuracy']:>10.4f}" if c else f"{'failed':>10}"
                                      for c in cells))


def plot(rows, gammas, noises, out):
    plt = use_agg()
    fig, ax = plt.subplots(figsize=(6, 4))
    bp = _find(rows, rule="bp")
    if bp:
        ax.axhline(bp["final_test_accuracy"], color="k", lw=1, label="BP")
    sel = [_find(rows, engine="discrete", rule="gait", gamma=g) for g in gammas]
    ax.semilogx([g for g, r in zip(gammas, sel) if r], [r["final_test_accuracy"] for r in sel if r], "k--o", ms=4,
                label="discrete GAIT")
    for c, v in enumerate(noises):
        sel = [_find(rows, engine="circuit", noise=v, gamma=g) for g in gammas]
        ax.semilogx([g for g, r in zip(gammas, sel) if r], [r["final_test_accuracy"] for r in sel if r], "-o",
                    ms=4, color=f"C{c}", label=f"circuit, noise {v:g}")
    ax.axhline(0.1, color="0.6", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("coupling gamma (uniform)")
    ax.set_ylabel("final test accuracy")
    ax.set_title("learning by the circuit: accuracy against coupling and noise", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "coupling_learning.png", dpi=110)
    plt.close(fig)
