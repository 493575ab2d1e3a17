"""What every experiment shares: its output directory (locked, checked before computing), summary.json with
provenance, progress bars."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.errors import RunExistsError, ValidationError
from models.training import (  # noqa: F401  (re-exported: the studies' BLAS set-up)
    DEFAULT_BLAS_THREADS,
    blas_libraries,
    blas_start_threads,
    blas_threads,
    holds_run,
    run_dir_lock,
)

__all__ = ["prepare_out", "check_out", "write_summary", "provenance", "project_commit", "Progress", "tune_allocator",
           "blas_threads", "compare_with_reference"]

#: The project's own directory (holding models/, circuit/, experiments/): its git commit is the code's.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def check_out(out, experiment: str, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (:class:`RunExistsError`) an output directory that holds another study's results or a run.

    ``train`` may write only into a directory without a run, unless it resumes that run;
    every other study only where no training run and no other study's summary.json are.
    ``overwrite`` allows both.  Reads only.
    """
    out = Path(out)
    if not out.exists() or overwrite:
        return
    if not out.is_dir():
        raise ValidationError(f"--out: expected a directory, got the file {out}")
    previous = _summary_experiment(out / "summary.json")
    if previous is not None and previous != experiment:
        raise RunExistsError(f"{out}: holds the results of `{previous}` (summary.json); use another --out, or "
                             "--overwrite to write there anyway")
    if experiment == "train":
        if not resume and (holds_run(out) or previous is not None):
            found = ", ".join(holds_run(out) or ["summary.json"])
            raise RunExistsError(f"{out}: already holds a training run ({found}); continue it with --resume, "
                                 "replace it with --overwrite, or use another --out")
    elif holds_run(out):
        raise RunExistsError(f"{out}: holds a training run ({', '.join(holds_run(out))}); use another --out, or "
                             "--overwrite to write there anyway")


def _summary_experiment(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text()).get("experiment", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unknown"


@contextlib.contextmanager
def prepare_out(out, experiment: str, *, resume: bool = False, overwrite: bool = False):
    """Create ``out``, hold its run lock and check that it can be written, before a study computes.

    Refuses a directory that another process is writing (:class:`RunDirBusyError`) or that
    holds other results (:func:`check_out`).  If the study then fails, a directory created
    here that received nothing is removed again.
    """
    out = Path(out)
    check_out(out, experiment, resume=resume, overwrite=overwrite)
    missing = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValidationError(f"--out: expected a directory this process can create and write, got {out} "
                              f"({err.strerror})") from None
    try:
        with run_dir_lock(out):
            check_out(out, experiment, resume=resume, overwrite=overwrite)
            yield out
    finally:  # a directory created here that received nothing goes again
        if missing and out.is_dir() and {p.name for p in out.iterdir()} <= {".lock"}:
            with contextlib.suppress(OSError):
                (out / ".lock").unlink(missing_ok=True)
                for p in missing:
                    p.rmdir()


def project_commit(root=PROJECT_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git repository whose top level is ``root``; (None, None) otherwise.

    Installed from a wheel (e.g. into a virtual environment inside another repository),
    the code is in no repository of its own: no commit is recorded.
    """
    root = Path(root).resolve()

    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return None, None
        commit = git("rev-parse", "HEAD").stdout.strip() or None
        dirty = bool(git("status", "--porcelain").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def provenance() -> dict:
    """Package versions, Python, machine and git commit of the running code (None outside its own repository)."""
    versions = {}
    for name in ("numpy", "scipy", "matplotlib", "brian2", "numba"):
        # the installed version, read without importing (brian2's import fails outside the main thread, as in a
        # Dask worker's task); a module already imported tells its own
        try:
            versions[name] = sys.modules[name].__version__ if name in sys.modules else importlib.metadata.version(name)
        except (AttributeError, importlib.metadata.PackageNotFoundError):
            versions[name] = None
    commit, dirty = project_commit()
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_model(),
            "blas": blas_libraries(), "packages": versions, "git_commit": commit, "git_dirty": dirty,
            "command": command_line(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def command_line() -> str:
    """The command as a user would type it: ``python -m experiments ARGS`` (not the checkout's path)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if program is not None and program.name == "__main__.py" and program.parent.name == "experiments":
        return " ".join(["python -m experiments", *sys.argv[1:]])
    return " ".join(sys.argv)


def cpu_model() -> str | None:
    """The processor's model name (Linux), e.g. to tell two machines' roundings apart."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_summary(out: Path, experiment: str, config: dict, **results) -> Path:
    """Write ``out/summary.json``: experiment name, configuration, provenance and results."""
    path = Path(out) / "summary.json"
    payload = {"experiment": experiment, "config": config, "provenance": provenance(), **results}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=2) + "\n")
    tmp.replace(path)
    return path


class Progress(tqdm):
    """A progress bar ``[name] i/n [elapsed<eta, label]`` on stderr for long work (tqdm)."""

    def __init__(self, name: str, total: int, unit: str = "step", initial: int = 0):
        super().__init__(total=total, desc=f"[{name}]", file=sys.stderr, unit=unit, initial=initial,
                         dynamic_ncols=True)

    def step(self, label: str = "") -> None:
        """One more step done; ``label`` names it.  The bar closes after the last."""
        self.set_postfix_str(label, refresh=False)
        self.update(1)
        if self.n >= self.total:
            self.close()


def tune_allocator() -> None:
    """Keep freed large arrays in the heap (glibc only) instead of returning them to the OS.

    Training allocates the same (n, n) arrays every step; with glibc's defaults each
    one is a fresh mmap whose pages fault in again (measured: a BP step of the
    784-wide network took ~25% longer).  No effect elsewhere.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)


def compare_with_reference(spec, state, dW, reference, ref_dW, bp) -> list:
    """Per layer: the circuit's targets ((r - y)/k on units with feedback) and local-rule updates
    against the discrete rule (``reference``: models.Targets, ``ref_dW``), and the cosine with BP."""
    from analysis.metrics import cosine, relative_error

    k = spec.couplings(state.forward.derivatives)
    rows = []
    for i in range(spec.depth):
        mask = spec.feedback_mask(i + 1)
        rows.append({
            "layer": i + 1,
            "rel_error_target": relative_error(state.deviations[i][:, mask] / k[i][:, mask],
                                               reference.deviations[i][:, mask]),
            "rel_error_update": relative_error(dW[i], ref_dW[i]),
            "cosine_bp": cosine(dW[i], bp[i]),
        })
    return rows
