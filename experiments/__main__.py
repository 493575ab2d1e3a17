"""``python -m experiments NAME [--out DIR] [--quick] [--overwrite]``: run one study; ``--help`` lists them.

Every study checks its arguments (a module's optional ``validate(args)``), then takes the lock of
``--out`` and checks that it can write there (:func:`experiments.common.prepare_out`) before it
computes.  Bad arguments, a busy or occupied ``--out`` and missing data end with a one-line
message and exit status 2 (a damaged checkpoint: 1), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

#: Commands whose results must not depend on how the process was started.  OpenBLAS rounds
#: differently when it starts with several threads and is limited to one later than when it
#: starts with one (as under ``taskset -c 1``), so these start it with one thread (training
#: uses one BLAS thread anyway) before numpy loads: the same run gives the same bits whatever
#: the CPUs it sees, and ``--resume`` continues it exactly.
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
    "bench": "per-batch time of training steps (BP, TP, GAIT; with/without regulariser) and GFLOP/s",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description="GAIT-prop circuit simulator: runnable studies. Each writes figures and "
                    "summary.json to --out.",
    )
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for name, description in EXPERIMENTS.items():
        p = sub.add_parser(name, help=description, description=description)
        p.add_argument("--out", default=f"results/{name}", help="output directory (default: %(default)s)")
        p.add_argument("--quick", action="store_true",
                       help="a reduced version that runs in well under a minute (changes only the defaults of the "
                            "options not given)")
        p.add_argument("--overwrite", action="store_true",
                       help="write into --out even if it holds a training run or another study's results (train: "
                            "start anew, replacing the run there)")
        importlib.import_module(f"experiments.{name}").add_arguments(p)
    args = parser.parse_args(argv)
    if args.experiment is None:
        parser.print_help()
        return 2
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
        print(f"python -m experiments {args.experiment}: error: {err}", file=sys.stderr)
        return status
    print(f"[{args.experiment}] done in {time.perf_counter() - start:.1f} s; results in {out}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
