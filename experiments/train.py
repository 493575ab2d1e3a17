"""Train a network with BP, TP, ITP or GAIT-prop (paper section 7-8) and record learning curves.

Defaults follow the paper: batch 60, Adam (the published code's variant), quadratic loss
on one-hot targets, orthogonal initialisation; per rule BP lr 1e-4 without regulariser,
GAIT/ITP lr 1e-4 with regulariser 0.1 and gamma 1e-3, TP lr 1e-5 with regulariser 1000.
Each epoch ends with an evaluation (a fixed 5000-sample training subset and the whole
test set) and an atomic checkpoint; ``--resume`` continues a killed run and ends with
results identical to an uninterrupted run.  Writes metrics.csv (tidy), summary.json and
learning_curves.png.  The training itself is the library's (:func:`circuit.learning.train`,
:mod:`models.training`); this module parses the command line and records the results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from dataclasses import asdict
from pathlib import Path

import models
from analysis.plots import learning_curves, new_figure, save_figure
from models.errors import ValidationError
from models.training import FEEDBACKS, TrainConfig, TrainResult, check_training_data
from models.validation import check_count

from .common import write_summary
from .datasets import DATASETS, load_dataset
from .options import add_data_arguments, add_dtype_argument, quick_help

DESCRIPTION = __doc__
#: What --quick changes: the defaults of these options (an option given on the command line is kept).
QUICK_DEFAULTS = {"dataset": "embedded", "epochs": 2}
DEFAULTS = {"dataset": "fashion_mnist", "epochs": 5}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
#: Configuration fields whose option has another name.
FIELD_OPTIONS = {"engine": "--update"}


def add_arguments(parser):
    from circuit.learning import NOISY_AVERAGE_FROM, NOISY_DURATION

    parser.add_argument("--dataset", choices=DATASETS, help=quick_help(
        "the images (embedded: the Fashion-MNIST subset shipped with the code)", DEFAULTS["dataset"],
        QUICK_DEFAULTS["dataset"]))
    add_data_arguments(parser)
    parser.add_argument("--rule", choices=models.RULES, default="gait", help="the learning rule")
    parser.add_argument("--hidden", type=int, default=4, metavar="N", help="hidden layers of a 784-wide network")
    parser.add_argument("--widths", metavar="N,...", help="explicit widths, e.g. 784,784,500,200,10 (default: from "
                                                           "--hidden; overrides it)")
    parser.add_argument("--allow-narrow-input", action="store_true",
                        help="allow a first layer narrower than the input (it then sees only the first inputs)")
    parser.add_argument("--activation", choices=("leaky_relu", "linear"), default="leaky_relu",
                        help="the units' non-linearity")
    parser.add_argument("--epochs", type=int, help=quick_help("passes over the training set", DEFAULTS["epochs"],
                                                              QUICK_DEFAULTS["epochs"]))
    parser.add_argument("--batch", type=int, default=60, help="samples per update")
    parser.add_argument("--lr", type=float, help="learning rate (default: the rule's paper value)")
    parser.add_argument("--regulariser", type=float,
                        help="orthogonality regulariser lambda (default: the rule's paper value)")
    parser.add_argument("--gamma", type=float, default=1e-3,
                        help="ITP/GAIT increment; with --update circuit the output layer's coupling")
    parser.add_argument("--loss", choices=models.LOSSES, default="quadratic", help="loss on one-hot targets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batch order")
    parser.add_argument("--init", choices=("orthogonal", "xavier"), default="orthogonal",
                        help="initial weights")
    parser.add_argument("--adam", choices=("published", "standard"), default="published",
                        help="Adam variant (published: the paper's code's)")
    add_dtype_argument(parser)
    parser.add_argument("--update", choices=("discrete", "circuit"), default="discrete",
                        help="where every weight update comes from: discrete = the rule's exact discrete maths; "
                             "circuit = the fast circuit engine's steady state and local rule (rule gait or itp: "
                             "the coupling mode; gamma: the coupling)")
    parser.add_argument("--schedule", choices=("uniform", "output", "geometric"), default="uniform",
                        help="--update circuit: layer-wise coupling schedule, gamma at the output")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="--update circuit: additive white noise in the rate dynamics; the steady state is "
                             f"then the time average over [{NOISY_AVERAGE_FROM:g}, {NOISY_DURATION:g}] tau "
                             "(0: the exact steady state)")
    parser.add_argument("--feedback", choices=FEEDBACKS, default="exact",
                        help="target rules: the exact layer inverses, feedback weights learned alongside by a local "
                             "denoising rule, or the transposed weights; per epoch metrics.csv records ||Q W - I|| "
                             "and the cosine with BP per layer on a fixed probe batch")
    parser.add_argument("--feedback-lr", type=float, default=0.05,
                        help="--feedback learned: learning rate of the feedback rule")
    add_eval_every_argument(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--lu-threads", type=int,
                        help="threads factorising the layer inverses of TP, ITP and GAIT side by side (default: "
                             "the cores available to this process, at most 2; results are identical for any value)")
    # testing aid, hidden from --help: exit after this many batches, as a killed run would
    parser.add_argument("--stop-after-batches", type=int, help=argparse.SUPPRESS)


def add_eval_every_argument(parser) -> None:
    """--eval-every N: the published evaluation protocol (train, fig2, fig3, coupling_learning)."""
    parser.add_argument("--eval-every", type=int, metavar="N",
                        help="evaluate on the whole training and test sets every N batches (and at the end of every "
                             "epoch) and report the peak, the published protocol with N = 10 (default: once per "
                             "epoch, on 5000 training samples and the test set)")


def check_eval_every(args) -> int | None:
    """--eval-every as given (None: per epoch); :class:`ValidationError` naming it if it is not a count."""
    if args.eval_every is None:
        return None
    return check_count("--eval-every", args.eval_every, hint="leave it out to evaluate once per epoch")


def cli_message(message: str) -> str:
    """A library message with the configuration's field names spelled as the options (``epochs:`` -> ``--epochs:``)."""
    head, sep, rest = message.partition(":")
    names = head.split(" and ")
    if sep and all(n in _CONFIG_FIELDS for n in names):
        head = " and ".join(FIELD_OPTIONS.get(n, "--" + n.replace("_", "-")) for n in names)
    return head + sep + rest


@contextlib.contextmanager
def as_usage_error():
    """Re-raise a :class:`ValidationError` with the option names of the command line."""
    try:
        yield
    except ValidationError as err:
        raise ValidationError(cli_message(str(err))) from None


def parse_widths(text: str) -> list:
    """``"784,784,10"`` -> [784, 784, 10]; a :class:`ValidationError` for anything else."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        widths = []
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValidationError(f"--widths: expected two or more positive integers separated by commas, such as "
                              f"784,784,10, got {text!r}")
    return widths


def config_from_args(args) -> TrainConfig:
    """The run's configuration (resolved: lr and regulariser set); :class:`ValidationError` naming the option."""
    quick = QUICK_DEFAULTS if args.quick else DEFAULTS
    widths = parse_widths(args.widths) if args.widths else [784] * (check_count("--hidden", args.hidden, 0) + 2)
    if args.update == "discrete" and (args.schedule != "uniform" or args.noise != 0):
        raise ValidationError(f"--schedule and --noise: expected the defaults (uniform, 0) with --update discrete "
                              f"(the discrete rules have neither), got {args.schedule} and {args.noise!r}; use "
                              "--update circuit")
    with as_usage_error():
        cfg = TrainConfig(dataset=args.dataset or quick["dataset"], rule=args.rule, widths=widths,
                          activation=args.activation, epochs=quick["epochs"] if args.epochs is None else args.epochs,
                          batch=args.batch, lr=args.lr, regulariser=args.regulariser, gamma=args.gamma, loss=args.loss,
                          seed=args.seed, init=args.init, adam=args.adam, engine=args.update, schedule=args.schedule,
                          noise=args.noise, allow_narrow_input=args.allow_narrow_input, feedback=args.feedback,
                          feedback_lr=args.feedback_lr, eval_every=check_eval_every(args), dtype=args.dtype).resolved()
        if cfg.engine == "circuit":
            from circuit.learning import check_config

            check_config(cfg)
    return cfg


def validate(args) -> None:
    """Every check that needs no data, before --out is touched."""
    config_from_args(args)
    if args.lu_threads is not None:
        check_count("--lu-threads", args.lu_threads)


def run(args, out):
    import circuit

    cfg = config_from_args(args)
    data = load_dataset(cfg.dataset, args.data_dir, allow_download=not args.no_download)
    with as_usage_error():
        check_training_data(data, cfg)
    if args.overwrite:  # the old run's records go with it (the library removes its checkpoints and metrics)
        for name in ("summary.json", "learning_curves.png"):
            (out / name).unlink(missing_ok=True)
    result = circuit.train(cfg, data, out, resume=args.resume, overwrite=args.overwrite, lu_threads=args.lu_threads,
                           on_batch=stop_after(args.stop_after_batches))
    record_run(result, out)
    print(f"[train] {describe_result(result.summary)}")


def stop_after(batches: int | None):
    """An ``on_batch`` that ends the process (status 3) after ``batches`` batches of an epoch, as a kill would."""
    if batches is None:
        return None

    def stop(epoch, i, n, running_loss):
        if i + 1 >= batches:
            print("\n[train] stopping as asked (--stop-after-batches)", file=sys.stderr)
            sys.exit(3)

    return stop


def describe_result(summary: dict) -> str:
    """A run's results in one line: peak test accuracy and where it occurred, the final one, the evaluations' cost."""
    where = (f" (epoch {summary['peak_test_epoch']}, batch {summary['peak_test_step']})"
             if summary.get("peak_test_step") is not None else "")
    share = summary.get("evaluation_share")
    n = summary.get("evaluations")
    cost = (f"; {n} evaluation{'s' if n != 1 else ''}, {100 * share:.1f}% of the training loop's time"
            if share is not None and share == share else "")  # NaN: nothing was trained
    return (f"peak test accuracy {summary['peak_test_accuracy']:.4f}{where}, final "
            f"{summary['final_test_accuracy']:.4f}{cost}")


def resume_run(config: TrainConfig, data, out, *, lu_threads: int | None = None, on_batch=None) -> TrainResult:
    """Train per ``config`` in the run directory ``out``, continuing the run there bit for bit, and record it.

    A finished run is read back, not trained again; a stopped one continues after its last
    finished epoch.  No progress display (grids run many of these side by side).
    """
    import circuit

    result = circuit.train(config, data, out, resume=True, progress=False, lu_threads=lu_threads, on_batch=on_batch)
    record_run(result, Path(out))
    return result


def record_run(result: TrainResult, out: Path) -> None:
    """summary.json (configuration, provenance, rows, epoch times, summary) and learning_curves.png in ``out``."""
    write_summary(out, "train", asdict(result.config), rows=result.rows, epoch_times=result.epoch_times,
                  **result.summary)
    plot_curves(result.rows, result.config, Path(out) / "learning_curves.png")


def plot_curves(rows: list, cfg: TrainConfig, path: Path):
    """learning_curves.png: loss and accuracy against epoch (test set, training subset, running mean)."""
    fig, axes = new_figure(1, 2, figsize=(9.5, 3.6))
    learning_curves(axes[0], rows, rule=cfg.rule, loss=cfg.loss, full_training_set=cfg.eval_every is not None)
    engine = " by the circuit" if cfg.engine == "circuit" else ""
    fig.suptitle(f"{cfg.rule.upper()}{engine} on {cfg.dataset}, widths {'-'.join(map(str, cfg.widths))}", fontsize=10)
    save_figure(fig, path)
    return fig
