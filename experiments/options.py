"""The command line's one vocabulary (docs/cli.md): help that shows defaults, one-line usage errors, lists.

Names: an option that takes one value is singular (``--gamma 1e-3``, ``--noise``, ``--rule``,
``--mode``, ``--engine``, ``--schedule``, ``--dataset``, ``--seed``); an option that a study
sweeps is plural and takes a comma list (``--gammas 1e-3,1e-2``, ``--noises``, ``--rules``,
...), whose numbers may also be log grids ``LO:HI:N``.  A count of things is named after the
things (``--epochs 5``, ``--workers 2``).  Depth is always counted in hidden layers and spelled
``--hidden`` (one number, or a comma list where a study sweeps it).  ``--engine``/``--engines``
always name a circuit engine (fast, brian2); training chooses where its updates come from with
``--update discrete|circuit``.

The values are checked by each study's ``validate(args)`` with these helpers, before anything
is created; a bad value is a :class:`ValidationError` naming the option.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
import sys
from pathlib import Path

from models.errors import ValidationError
from models.validation import check_count

__all__ = ["HelpFormatter", "Parser", "RENAMED", "unknown_options_message", "comma_list", "number_list",
           "count_list", "add_data_arguments", "add_size_arguments", "add_dtype_argument", "sizes", "quick_help",
           "given_or", "check_scheduler", "program_name"]


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, ``(default: X)``, unless the help states it already.

    Options whose default depends on ``--quick`` are stored as None and say both in their help
    (:func:`quick_help`); flags (``store_true``) are off unless given.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if ("(default" in text or not action.option_strings or action.nargs == 0 or action.default is None
                or action.default is argparse.SUPPRESS):
            return text
        default = action.default
        if isinstance(default, (list, tuple)):
            return f"{text} (default: {','.join(map(str, default))})"
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``PROG: error: MESSAGE``, with exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # every option is spelled out: --gamma is never --gammas
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (--help lists the options)\n")


#: Options renamed in the one vocabulary: (study, old option) -> what to write instead.  A study of None: every study.
RENAMED = {
    ("equilibrium", "--layers"): "--layers was renamed --hidden and counts hidden layers (--layers 4 is --hidden 3)",
    ("coupling", "--depths"): "--depths was renamed --hidden and counts hidden layers (--depths 3,5 is "
                              "--hidden 2,4)",
    ("inverse_error", "--depths"): "--depths was renamed --hidden and counts hidden layers (--depths 3,5 is "
                                   "--hidden 2,4)",
    ("fig2", "--depths"): "--depths was renamed --hidden (hidden layers, as before)",
    ("coupling", "--n-gammas"): "--n-gammas was replaced by the log grid --gammas LO:HI:N (--n-gammas 13 is "
                                "--gammas 1e-4:0.5:13)",
    ("inverse_error", "--n-gammas"): "--n-gammas was replaced by the log grid --gammas LO:HI:N (--n-gammas 13 is "
                                     "--gammas 1e-4:1:13)",
    ("inverse_error", "--n-eps"): "--n-eps was replaced by the log grid --epsilons LO:HI:N (--n-eps 11 is "
                                  "--epsilons 1e-6:1e-1:11)",
    ("coupling", "--noise"): "--noise was renamed --noises (a comma list of noise strengths)",
    ("coupling_learning", "--noise"): "--noise was renamed --noises (a comma list of noise strengths)",
    ("train", "--engine"): "--engine was renamed --update (discrete|circuit: where the weight updates come from; "
                           "--engine names a circuit engine, fast or brian2, in the other studies)",
    ("fig2", "--runs"): "--runs was renamed --runs-dir",
    ("fig3", "--runs"): "--runs was renamed --runs-dir",
}


def unknown_options_message(study: str, extra: list, known) -> str:
    """The usage error for command-line words that ``study`` does not know (``known``: its option strings)."""
    known = set(known)
    for word in extra:
        option = word.split("=", 1)[0]
        if not option.startswith("--"):
            continue
        if (study, option) in RENAMED:
            return RENAMED[study, option]
        if option + "s" in known:
            return f"{option}: {study} sweeps it: use {option}s (a comma list)"
        if option.endswith("s") and option[:-1] in known:
            return f"{option}: {study} takes one value: use {option[:-1]}"
        close = difflib.get_close_matches(option, sorted(known), n=1)
        if close:
            return f"unrecognized option {option} (did you mean {close[0]}?)"
    return f"unrecognized arguments: {' '.join(extra)}"


def add_data_arguments(parser) -> None:
    """--data-dir and --no-download: where the datasets come from (:func:`experiments.datasets.load_dataset`)."""
    parser.add_argument("--data-dir", metavar="DIR", help="a directory with the official files (default: "
                                                          "$GAITCIRCUIT_DATA, the system's copy, the download cache)")
    parser.add_argument("--no-download", action="store_true", help="never download; fail if the data is missing")


def add_dtype_argument(parser) -> None:
    """--dtype float64|float32: the floating-point type of training (:data:`models.validation.DTYPES`)."""
    from models.validation import DTYPES

    parser.add_argument("--dtype", choices=DTYPES, default=DTYPES[0],
                        help="floating-point type of the weights, the rules' targets and updates, the regulariser "
                             "and Adam's moments; a run resumes only in the type it started in")


def add_size_arguments(parser, quick: dict) -> None:
    """--width and --batch of a study of small networks; ``quick[name]``: (default, default with --quick)."""
    parser.add_argument("--width", type=int, help=quick_help("units per layer", *quick["width"]))
    parser.add_argument("--batch", type=int, help=quick_help("samples", *quick["batch"]))


def sizes(args, quick: dict) -> dict:
    """{"width": ..., "batch": ...} as given or by default (:func:`add_size_arguments`); ValidationError if < 1."""
    return {name: check_count(f"--{name}", given_or(args, name, *quick[name])) for name in ("width", "batch")}


def quick_help(text: str, normal, quick) -> str:
    """Help of an option whose default depends on --quick: ``text (default: NORMAL; --quick: QUICK)``."""
    return f"{text} (default: {normal}; --quick: {quick})"


def given_or(args, name: str, normal, quick):
    """The value of option ``name`` as given, else its default (``quick`` with --quick, ``normal`` otherwise)."""
    value = getattr(args, name)
    if value is not None:
        return value
    return quick if args.quick else normal


def comma_list(option: str, text, choices=None, convert=str) -> list:
    """``"a,b"`` -> ["a", "b"] (each converted, and one of ``choices``); :class:`ValidationError` naming ``option``."""
    try:
        items = [convert(t.strip()) for t in str(text).split(",")]
    except ValueError:
        items = []
    if not items or any(i == "" for i in items) or (choices is not None and any(i not in choices for i in items)):
        allowed = f" from {', '.join(map(str, choices))}" if choices is not None else ""
        raise ValidationError(f"{option}: expected a comma-separated list{allowed}, got {text!r}")
    return items


_GRID = re.compile(r"([^:]+):([^:]+):([^:]+)")


def number_list(option: str, text) -> list:
    """Comma-separated finite numbers and log grids ``LO:HI:N`` (N values from LO to HI, log-spaced) -> floats.

    ``"0,1e-8:1e-4:3"`` -> [0.0, 1e-08, 1e-06, 0.0001].  The ranges are the caller's to check.
    """
    import numpy as np

    expected = (f"{option}: expected numbers and log grids LO:HI:N (0 < LO < HI, N >= 2 values) separated by commas, "
                f"such as 1e-3,1e-2 or 1e-4:0.5:13, got {text!r}")
    values = []
    for item in str(text).split(","):
        grid = _GRID.fullmatch(item.strip())
        try:
            if grid:
                lo, hi, n = float(grid[1]), float(grid[2]), int(grid[3])
                if not (0 < lo < hi < math.inf and n >= 2):
                    raise ValueError
                values += [float(v) for v in np.logspace(np.log10(lo), np.log10(hi), n)]
            else:
                values.append(float(item))
        except ValueError:
            raise ValidationError(expected) from None
    if not all(math.isfinite(v) for v in values):
        raise ValidationError(expected)
    return values


def count_list(option: str, text, minimum: int = 1) -> list:
    """Comma-separated integers >= ``minimum`` -> ints; :class:`ValidationError` naming ``option``."""
    values = comma_list(option, text, convert=int)
    for v in values:
        check_count(option, v, minimum)
    return values


def check_scheduler(address: str | None) -> str | None:
    """A Dask scheduler address ``HOST:PORT`` (optionally ``tcp://HOST:PORT``), or None."""
    if address is not None and not re.fullmatch(r"([a-z]+://)?[^\s:/]+:\d+", address):
        raise ValidationError(f"--scheduler: expected the address of a Dask scheduler, HOST:PORT, got {address!r}")
    return address


def program_name() -> str:
    """``gaitcircuit`` when run as the console script, else ``python -m experiments``."""
    return "gaitcircuit" if sys.argv and Path(sys.argv[0]).stem == "gaitcircuit" else "python -m experiments"
