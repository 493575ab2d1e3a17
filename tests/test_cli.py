"""The command line: the console script, one vocabulary across studies (docs/cli.md), usage errors."""

import argparse
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import circuit
from experiments.__main__ import EXPERIMENTS, SINGLE_THREAD_BLAS_COMMANDS, build_parser, main, version
from experiments.options import RENAMED, HelpFormatter, number_list

ROOT = Path(__file__).resolve().parents[1]
PARSER, STUDIES = build_parser("gaitcircuit")


def setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def console_script() -> str:
    """The entry point that setup.cfg declares for ``gaitcircuit``, e.g. "experiments.__main__:main"."""
    lines = setup_cfg().get("options.entry_points", "console_scripts").strip().splitlines()
    scripts = dict(line.replace(" ", "").split("=") for line in lines)
    return scripts["gaitcircuit"]


def test_setup_cfg_declares_the_console_script_and_it_is_main():
    module, function = console_script().split(":")
    assert (module, function) == ("experiments.__main__", "main")


def test_version_is_the_checkouts(capsys):
    assert main(["--version"], prog="gaitcircuit") == 0
    assert capsys.readouterr().out.strip() == f"gaitcircuit {setup_cfg()['metadata']['version']}"
    assert version() == setup_cfg()["metadata"]["version"]


def blas_threads_at_start(command: str) -> list:
    """OpenBLAS threads of a process started as the console script is: ``gaitcircuit COMMAND`` in sys.argv, then
    the import of the entry point's module (the wrapper that pip writes does exactly this)."""
    module, function = console_script().split(":")
    code = (f"import sys\nsys.argv = ['gaitcircuit', *sys.argv[1:]]\nfrom {module} import {function}\n"
            "import json\nfrom threadpoolctl import threadpool_info\n"
            "print(json.dumps([p['num_threads'] for p in threadpool_info() if p['internal_api'] == 'openblas']))")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code, command, "--help"], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_console_script_starts_openblas_with_one_thread_for_training():
    threads = blas_threads_at_start("train")
    assert threads and all(t == 1 for t in threads), threads
    assert set(SINGLE_THREAD_BLAS_COMMANDS) == {"train", "fig2", "fig3"}
    if len(os.sched_getaffinity(0)) > 1:  # the check can tell: other commands start with every core
        assert max(blas_threads_at_start("demo")) > 1


# --------------------------------------------------------------------------- one vocabulary

#: Option names that are gone (docs/cli.md lists what replaced them).
RETIRED = {"--depths", "--layers", "--n-gammas", "--n-eps", "--runs"}
#: Options that take one number, of this type, wherever they appear.
NUMBER_TYPES = {"--gamma": float, "--noise": float, "--lr": float, "--regulariser": float, "--seed": int,
                "--batch": int, "--width": int, "--epochs": int, "--steps": int, "--workers": int}


def options(study: str):
    """(long option name, action) of every option of ``study`` that --help shows."""
    for action in STUDIES[study]._actions:
        if action.help is argparse.SUPPRESS or "--help" in action.option_strings or not action.option_strings:
            continue  # (positional arguments: compare_runs' run directories)
        yield max(action.option_strings, key=len), action


def takes_a_list(action) -> bool:
    return isinstance(action.metavar, str) and action.metavar.endswith(",...")


@pytest.mark.parametrize("study", EXPERIMENTS)
def test_every_option_follows_the_vocabulary(study):
    for name, action in options(study):
        assert name not in RETIRED and (study, name) not in RENAMED, f"{study} {name}: renamed (docs/cli.md)"
        assert action.help, f"{study} {name}: no help text"
        if action.nargs != 0:  # a flag is off unless given; every other option shows its default
            assert "(default" in HelpFormatter(study)._get_help_string(action), f"{study} {name}: no default shown"
        if takes_a_list(action):  # a sweep: plural (depth is always --hidden), a comma list
            assert name.endswith("s") or name == "--hidden", f"{study} {name}: a list with a singular name"
        elif name.endswith("s") and not name.endswith("ss") and action.nargs != 0:  # one value, a plural name:
            assert action.type is int, f"{study} {name}: one value with a plural name"  # only a count of things
        if name in NUMBER_TYPES:
            assert action.type is NUMBER_TYPES[name], f"{study} {name}: expected type {NUMBER_TYPES[name]}"
        if name == "--hidden":
            assert action.metavar in ("N", "N,...") and "hidden layers" in action.help
        if name in ("--engine", "--engines"):  # always a circuit engine; training says --update
            assert set(str(action.default).split(",")) <= set(circuit.ENGINES), f"{study} {name}"


def test_an_option_looks_the_same_in_every_study():
    metavars = {}
    for study in EXPERIMENTS:
        for name, action in options(study):
            if action.nargs != 0 and name != "--hidden":
                metavars.setdefault(name, set()).add(action.metavar)
    assert {name: m for name, m in metavars.items() if len(m) > 1} == {}


@pytest.mark.parametrize("study", EXPERIMENTS)
def test_help_of_every_study_shows_defaults(study, capsys):
    assert main([study, "--help"], prog="gaitcircuit") == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gaitcircuit {study} ") and "(default: " in text


def test_log_grids_and_lists():
    assert number_list("--gammas", "1e-4:0.5:13") == [float(g) for g in np.logspace(-4, np.log10(0.5), 13)]
    assert number_list("--noises", "0, 1e-8:1e-4:3") == pytest.approx([0, 1e-8, 1e-6, 1e-4], rel=1e-12, abs=0)
    assert number_list("--gammas", "1e-3") == [1e-3]


# --------------------------------------------------------------------------- usage errors

@pytest.mark.parametrize("study, old", sorted(RENAMED), ids=" ".join)
def test_a_renamed_option_names_its_successor(study, old, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert main([study, old, "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"python -m experiments {study}: error: {old} was re") and len(err.splitlines()) == 1, err
    new = RENAMED[study, old].split(" --")[1].split()[0]
    assert f"--{new}" in dict(options(study)), (old, new)
    assert not (tmp_path / "new").exists()


BAD_VALUES = [
    (["demo", "--gamma", "1"], "--gamma"), (["demo", "--engines", "fast,nengo"], "--engines"),
    (["demo", "--engines", ""], "--engines"), (["demo", "--batch", "0"], "--batch"),
    (["equilibrium", "--hidden", "0"], "--hidden"), (["equilibrium", "--width", "-3"], "--width"),
    (["equilibrium", "--engines", "fast,"], "--engines"),
    (["coupling", "--gammas", "0,0.1"], "--gammas"), (["coupling", "--gammas", "1e-4:0.5"], "--gammas"),
    (["coupling", "--gammas", "0.5:1e-4:3"], "--gammas"), (["coupling", "--gammas", ""], "--gammas"),
    (["coupling", "--gammas", "1e-3,nan"], "--gammas"), (["coupling", "--hidden", "2,x"], "--hidden"),
    (["coupling", "--noises=-1e-8"], "--noises"), (["coupling", "--noises", "1e-8,,1e-6"], "--noises"),
    (["coupling", "--modes", "gait,bp"], "--modes"), (["coupling", "--schedules", "linear"], "--schedules"),
    (["coupling", "--precisions", "float16"], "--precisions"), (["coupling", "--strengths", "1.5"], "--strengths"),
    (["coupling", "--workers", "0"], "--workers"), (["coupling", "--scheduler", "nowhere"], "--scheduler"),
    (["coupling", "--width", "0"], "--width"),
    (["coupling_learning", "--noises", "x"], "--noises"), (["coupling_learning", "--gammas", "1"], "--gammas"),
    (["coupling_learning", "--hidden", "-1"], "--hidden"),
    (["train", "--gamma", "1.5"], "--gamma"), (["train", "--epochs", "1.5"], "--epochs"),
    (["train", "--dataset", "cifar"], "--dataset"), (["train", "--update", "brian2"], "--update"),
    (["fig2", "--hidden", "0"], "--hidden"), (["fig2", "--seeds", "-1"], "--seeds"), (["fig3", "--seeds", ""],
                                                                                      "--seeds"),
    (["alignment", "--gamma", "0"], "--gamma"), (["alignment", "--width", "1000"], "--width"),
    (["alignment", "--checkpoint", "no/such/checkpoint.npz"], "--checkpoint"),
    (["bench", "--steps", "0"], "--steps"), (["bench", "--hidden", "-1"], "--hidden"),
    (["inverse_error", "--epsilons", "0"], "--epsilons"), (["inverse_error", "--gammas", "1.5"], "--gammas"),
    (["inverse_error", "--hidden", "0"], "--hidden"), (["inverse_error", "--seeds", "a"], "--seeds"),
    (["inverse_error", "--alphas", "-1"], "--alphas"),
]


@pytest.mark.parametrize("argv, option", BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_values_are_one_line_usage_errors_before_anything_is_created(argv, option, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert main([argv[0], "--out", str(out), *argv[1:]], prog="gaitcircuit") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gaitcircuit {argv[0]}: error: ") and len(err.splitlines()) == 1, err
    assert option in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv, hint", [
    (["coupling", "--gamma", "1e-3"], "coupling sweeps it: use --gammas"),
    (["train", "--gammas", "1e-3"], "train takes one value: use --gamma"),
    (["fig2", "--seed", "1"], "fig2 sweeps it: use --seeds"),
    (["train", "--hiden", "3"], "did you mean --hidden?"),
    (["train", "--hid", "3"], "--hid"),  # no abbreviations: every option is spelled out
])
def test_unknown_options_get_a_hint(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.splitlines()) == 1, err
