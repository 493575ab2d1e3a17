"""What every experiment shares: output directory, summary.json with provenance, progress."""

from __future__ import annotations

import ctypes
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["prepare_out", "write_summary", "provenance", "Progress", "tune_allocator", "blas_threads",
           "compare_with_reference"]

#: BLAS threads during training steps.  At batch 60 each product is ~1 ms of work; on the
#: 2-core machine this project is benchmarked on, waking a second BLAS thread for every
#: product made GAIT steps ~2x slower (python -m experiments bench shows both settings).
DEFAULT_BLAS_THREADS = 1


def prepare_out(out) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def provenance() -> dict:
    """Package versions, Python, machine and git commit of the running code."""
    versions = {}
    for name in ("numpy", "scipy", "matplotlib", "brian2", "numba"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                                    cwd=Path(__file__).parent, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_model(),
            "blas": blas_libraries(), "packages": versions, "git_commit": commit, "git_dirty": dirty,
            "command": " ".join(sys.argv), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def cpu_model() -> str | None:
    """The processor's model name (Linux), e.g. to tell two machines' roundings apart."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        return platform.processor() or None


def blas_libraries() -> list:
    """Each loaded BLAS: library, version and the CPU kernels it chose at run time.

    Runs whose floating-point results differ between machines (LU factorisations,
    products) usually differ here: OpenBLAS picks its kernels by CPU.
    """
    from threadpoolctl import threadpool_info

    return [{"library": Path(i["filepath"]).name, "version": i.get("version"),
             "architecture": i.get("architecture"), "threads": i.get("num_threads")}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_start_threads() -> list:
    """Each BLAS library's thread count outside any limit (for OpenBLAS: what it started with).

    OpenBLAS started with one thread rounds differently from one started with more and limited
    to one, so a run's bits depend on it (``python -m experiments train`` starts it with one).
    """
    return [b["threads"] for b in blas_libraries()]


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


class Progress:
    """Prints ``[name] i/n label (elapsed, eta)`` lines to stderr for long work."""

    def __init__(self, name: str, total: int):
        self.name, self.total, self.done = name, total, 0
        self.start = time.perf_counter()

    def step(self, label: str = "") -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        print(f"[{self.name}] {self.done}/{self.total} {label} ({elapsed:.1f} s, ~{eta:.0f} s left)",
              file=sys.stderr, flush=True)


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


def blas_threads(n: int | None):
    """Context manager limiting BLAS threads to ``n`` (None: leave as is)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


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
