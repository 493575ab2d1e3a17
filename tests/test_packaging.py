"""Packaging: README's commands and CI agree, version ranges and CI's pins agree, numba is optional."""

import configparser
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

import models
from models import optimizers

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list:
    """The lines of the code block of README's section "Set-up: two commands"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.strip() for line in block.strip().splitlines()]


def ci_script() -> str:
    return (ROOT / ".ci" / "run").read_text()


def test_readme_set_up_creates_a_venv_and_ci_runs_readme_test_command():
    install_and_demo, tests = readme_commands()
    assert install_and_demo.startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert install_and_demo.endswith("python -m experiments demo")
    assert f"TEST_COMMAND='{tests}'" in ci_script()
    assert ".venv/" in (ROOT / ".gitignore").read_text().splitlines()


def requirements(extra: str = None) -> list:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    value = cfg["options.extras_require"][extra] if extra else cfg["options"]["install_requires"]
    return [Requirement(line) for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_requirements_are_ranges_not_pins():
    for requirement in requirements() + requirements("test"):
        assert not any(spec.operator in ("==", "===", "~=") for spec in requirement.specifier), str(requirement)


def ci_pythons() -> list:
    return re.search(r"^PYTHONS=\((.*)\)$", ci_script(), re.M).group(1).split()


@pytest.mark.parametrize("python", ci_pythons())
def test_ci_pins_satisfy_the_declared_ranges(python):
    """Each Python CI tests has a constraints file, and its pins lie within setup.cfg's ranges for that Python."""
    path = ROOT / "constraints" / f"py{python}.txt"
    pins = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version.strip()
    environment = {"python_version": python, "python_full_version": f"{python}.0", "extra": ""}
    for requirement in requirements() + requirements("test"):
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{path.name} pins no version of {name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (path.name, str(requirement), pins[name])


# ---------------------------------------------------------------- numba is optional: the numpy Adam kernel


def adam_oracle(p, d, m, v, beta1, beta2, step_size, eps):
    """The numba kernel's loop body in plain Python floats (IEEE-754 float64, the same operations;
    float32 arrays round what is stored in them)."""
    for i in range(p.size):
        g = float(d[i])
        mi = beta1 * float(m[i]) + (1.0 - beta1) * g
        vi = beta2 * float(v[i]) + (1.0 - beta2) * g * g
        m[i], v[i] = mi, vi
        p[i] = float(p[i]) + step_size * mi / (math.sqrt(vi) + eps)


def adam_steps(kernel, n: int, steps: int = 6, seed: int = 0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p, m, v = rng.standard_normal(n).astype(dtype), np.zeros(n, dtype), np.zeros(n, dtype)
    for t in range(1, steps + 1):
        d = (rng.standard_normal(n) * 10.0 ** rng.integers(-12, 3, n)).astype(dtype)
        d[rng.random(n) < 0.05] = 0.0
        c1, c2 = 1 - 0.9**t, 1 - 0.999**t  # standard Adam's bias corrections, folded as Adam.step does
        kernel(p, d, m, v, 0.9, 0.999, 1e-3 * np.sqrt(c2) / c1, 1e-8 * np.sqrt(c2))
    return p, m, v


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_adam_kernel_gives_the_bits_of_the_loop(dtype):
    """Across several blocks (NUMPY_BLOCK) and a partial last block; float32 moments and parameters too."""
    n = 2 * optimizers.NUMPY_BLOCK + 37
    for got, want in zip(adam_steps(optimizers.adam_kernel_numpy, n, dtype=dtype),
                         adam_steps(adam_oracle, n, dtype=dtype)):
        assert got.dtype == dtype and np.array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_and_numpy_adam_kernels_give_the_same_bits(dtype):
    if optimizers.ADAM_KERNEL != "numba":
        pytest.skip(f"numba kernel not in use: {optimizers.ADAM_KERNEL_NOTE}")
    n = 784 * 785
    for got, want in zip(adam_steps(optimizers.adam_kernel_numpy, n, dtype=dtype),
                         adam_steps(optimizers._adam_kernel, n, dtype=dtype)):
        assert np.array_equal(got, want)


def test_numba_adam_kernel_keeps_the_callers_thread_count():
    """The kernel runs on the calling thread alone and leaves numba's thread count as it found it."""
    if optimizers.ADAM_KERNEL != "numba":
        pytest.skip(f"numba kernel not in use: {optimizers.ADAM_KERNEL_NOTE}")
    import numba

    before = numba.get_num_threads()
    adam_steps(optimizers._adam_kernel, 100, steps=1)
    assert numba.get_num_threads() == before


def test_training_with_either_adam_kernel_gives_the_same_bits(monkeypatch):
    from models.training import train_epoch

    rng = np.random.default_rng(5)
    x, labels = rng.standard_normal((48, 16)), rng.integers(0, 4, 48)
    results = []
    for kernel in (optimizers._adam_kernel, optimizers.adam_kernel_numpy):
        monkeypatch.setattr(optimizers, "_adam_kernel", kernel)
        net = models.init_network([16, 16, 16, 16], "orthogonal", seed=2, n_out=4)
        opt = models.Adam.published(1e-3)
        train_epoch(net, opt, x, labels, rule="gait", seed=0, epoch=1, batch=8, regulariser=0.1)
        results.append(net.weights + net.biases + opt.m + opt.v)
    assert all(np.array_equal(a, b) for a, b in zip(*results))


def test_models_and_circuit_import_when_numba_refuses_numpy(tmp_path):
    """numba raises ImportError on import with a numpy newer than it supports: Adam falls back to numpy."""
    fake = tmp_path / "numba"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise ImportError("Numba needs NumPy 2.3 or less. Got NumPy 2.5.")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("GAITCIRCUIT_ADAM_KERNEL", None)
    code = ("import circuit, models; from models import optimizers as o; print(o.ADAM_KERNEL); "
            "print(o.ADAM_KERNEL_NOTE)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    kernel, note = result.stdout.splitlines()
    assert kernel == "numpy" and "Numba needs NumPy 2.3 or less" in note
