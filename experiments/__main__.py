"""``gaitcircuit STUDY [--out DIR] [--quick] [--overwrite] ...``: run one study (also ``python -m experiments``).

``gaitcircuit --help`` lists the studies, ``gaitcircuit STUDY --help`` their options (every one
with its default), ``gaitcircuit --version`` the version; docs/cli.md describes the vocabulary
they share.  Every study checks its arguments (a module's optional ``validate(args)``), then
takes the lock of ``--out`` and checks that it can write there
(:func:`experiments.common.prepare_out`) before it computes.  Bad arguments, a busy or
occupied ``--out`` and missing data end with a one-line message and exit status 2 (a damaged
checkpoint: 1), never a traceback.
"""

from __future__ import annotations

import configparser
import importlib
import importlib.metadata
import os
import sys
import time
from pathlib import Path

#: Commands whose results must not depend on how the process was started.  OpenBLAS rounds
#: differently when it starts with several threads and is limited to one later than when it
#: starts with one (as under ``taskset -c 1``), so these start it with one thread (training
#: uses one BLAS thread anyway) before numpy loads: the same run gives the same bits whatever
#: the CPUs it sees, and ``--resume`` continues it exactly.
#: The console script ``gaitcircuit`` imports this module with its own command line in
#: ``sys.argv`` too, so it starts OpenBLAS in the same way.
SINGLE_THREAD_BLAS_COMMANDS = ("train", "fig2", "fig3")
if len(sys.argv) > 1 and sys.argv[1] in SINGLE_THREAD_BLAS_COMMANDS and "numpy" not in sys.modules:
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

from models.errors import (  # noqa: E402
    CheckpointError,
    DataNotFoundError,
    RunDirBusyError,
    RunExistsError,
    ValidationError,
)

from .common import prepare_out, tune_allocator  # noqa: E402  (after the BLAS set-up above)
from .options import Parser, program_name, unknown_options_message  # noqa: E402

#: Errors that end a command with a one-line message (no traceback) and this exit status.
USER_ERRORS = ((ValidationError, 2), (RunExistsError, 2), (RunDirBusyError, 2), (DataNotFoundError, 2),
               (CheckpointError, 1))

#: name -> module under experiments/; each module has DESCRIPTION, add_arguments(parser), run(args, out) and
#: optionally validate(args) (raises ValidationError before anything is created).
EXPERIMENTS = {
    "demo": "the main job: a small circuit settles (free, nudged) and its local rule gives the GAIT-prop update",
    "equilibrium": "the circuit's steady-state targets and updates against the discrete reference, over gamma",
    "coupling": "how strong must the feedback be: error, cosine, settle time and stability over gamma",
    "coupling_learning": "learning by the circuit: test accuracy against the coupling gamma and the neural noise",
    "train": "train a network with BP, TP, ITP or GAIT-prop on MNIST, Fashion-MNIST or KMNIST",
    "fig2": "Fig. 2: BP, TP, GAIT accuracy against depth, across datasets, and in a linear network",
    "fig3": "Fig. 3: full-width against reduced-width networks with auxiliary units",
    "alignment": "Fig. 1 (right): TP/ITP/GAIT updates against BP in an untrained 784-wide network",
    "inverse_error": "how exact must the inverse be: GAIT with feedback Q != W^-1, discrete and (--circuit) "
                     "in the circuit, over eps, gamma, depth and noise",
    "compare_runs": "training runs side by side (finished or still training): test accuracy per epoch, peak, gap",
    "bench": "per-batch time of training steps (BP, TP, GAIT; with/without regulariser) and GFLOP/s",
}


def version() -> str:
    """The version of the running code: its checkout's setup.cfg, else the installed package's metadata.

    A source checkout's setup.cfg comes first: an editable install's metadata keeps the version
    of the day it was installed, and another checkout may be the one installed.
    """
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    if setup_cfg.get("metadata", "name", fallback=None) == "gaitcircuit":
        return setup_cfg.get("metadata", "version", fallback="unknown")
    try:
        return importlib.metadata.version("gaitcircuit")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser(prog: str | None = None) -> tuple[Parser, dict]:
    """The command line: (parser, {study: its subparser}); ``prog`` defaults to how the process was started."""
    prog = prog or program_name()
    parser = Parser(prog=prog, description="GAIT-prop circuit simulator: runnable studies. Each writes figures "
                                           "and summary.json to --out; STUDY --help lists its options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="experiment", metavar="STUDY")
    studies = {}
    for name, description in EXPERIMENTS.items():
        p = sub.add_parser(name, help=description, description=description)
        p.add_argument("--out", default=f"results/{name}", metavar="DIR", help="output directory")
        p.add_argument("--quick", action="store_true",
                       help="a reduced version that runs in well under a minute (changes only the defaults of the "
                            "options not given)")
        p.add_argument("--overwrite", action="store_true",
                       help="write into --out even if it holds a training run or another study's results (train: "
                            "start anew, replacing the run there)")
        importlib.import_module(f"experiments.{name}").add_arguments(p)
        studies[name] = p
    return parser, studies


def main(argv=None, prog: str | None = None) -> int:
    """Run the study named on the command line (``argv``, default ``sys.argv[1:]``); return the exit status.

    The console script ``gaitcircuit`` calls this.  ``prog``: the name in help and error
    messages (default: ``gaitcircuit`` or ``python -m experiments``, as the process was started).
    """
    parser, studies = build_parser(prog)
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            if args.experiment is None:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            study = studies[args.experiment]
            study.error(unknown_options_message(args.experiment, extra,
                                                [o for a in study._actions for o in a.option_strings]))
    except SystemExit as done:  # --help, --version, a usage error
        return done.code if isinstance(done.code, int) else 2
    if args.experiment is None:
        parser.print_help()
        return 2
    check_data_dir_argument(args, studies[args.experiment])
    module = importlib.import_module(f"experiments.{args.experiment}")
    try:
        getattr(module, "validate", lambda args: None)(args)
        with prepare_out(args.out, args.experiment, resume=getattr(args, "resume", False),
                         overwrite=args.overwrite) as out:
            tune_allocator()
            start = time.perf_counter()
            module.run(args, out)
    except tuple(kind for kind, _ in USER_ERRORS) as err:
        status = next(code for kind, code in USER_ERRORS if isinstance(err, kind))
        print(f"{parser.prog} {args.experiment}: error: {err}", file=sys.stderr)
        return status
    print(f"[{args.experiment}] done in {time.perf_counter() - start:.1f} s; results in {out}/", file=sys.stderr)
    return 0


def check_data_dir_argument(args, parser) -> None:
    """A usage error (exit 2, before anything is written) when --data-dir lacks a dataset the command reads."""
    data_dir = getattr(args, "data_dir", None)
    given = getattr(args, "dataset", None) or getattr(args, "datasets", None)
    if data_dir is None or given is None:  # not given: --quick's or the study's own default data
        return
    from models.errors import DataNotFoundError, ValidationError

    from .datasets import check_data_dir

    names = [given] if isinstance(given, str) and hasattr(args, "dataset") else (
        [d.strip() for d in given.split(",")] if isinstance(given, str) else list(given))
    names = [n for n in names if n != "embedded"]
    try:
        check_data_dir(data_dir, names, argument="--data-dir")
    except (DataNotFoundError, ValidationError) as err:
        parser.error(str(err))


if __name__ == "__main__":
    sys.exit(main())
