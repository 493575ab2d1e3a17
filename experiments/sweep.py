"""Sweeps of independent points: a process pool, results written as each point finishes.

``run_points(points, fn, path)`` calls ``fn(point)`` for every point (a dict of plain
values) not already recorded in ``path`` (JSON lines), in a process pool, and appends
one line per finished point: ``{"point": ..., "result": ...}`` or, if ``fn`` raised,
``{"point": ..., "error": "..."}``.  A killed sweep resumes without redoing finished
points; failed points are reported (and retried on the next run), never dropped.  With
``scheduler="HOST:PORT"`` the points run on that Dask distributed cluster instead of
the local pool (the workers need this project importable, e.g. ``pip install -e .``).
A progress bar on stderr counts the points with an ETA; ``describe(point, result)``
adds a one-line summary per finished point where that is worth reading.

The local pool's workers are not forked from the calling process (a process that has
trained, with numba's OpenMP threads in the Adam step, cannot fork workers that train):
they are forked from a fresh server process (``forkserver``; ``spawn`` where there is
none) that has imported the point function's module once.  They inherit the environment,
so OpenBLAS starts in them as it did here (``OPENBLAS_NUM_THREADS``).
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

from models.training import available_cores
from models.validation import check_count

from .common import Progress
from .options import check_scheduler

__all__ = ["run_points", "load_records", "add_sweep_arguments", "check_sweep_arguments"]


def add_sweep_arguments(parser) -> None:
    """--workers and --scheduler: where a sweep's points run."""
    parser.add_argument("--workers", type=int, help="processes of the local pool (default: one per core)")
    parser.add_argument("--scheduler", metavar="HOST:PORT",
                        help="a Dask distributed scheduler to run the points on (default: the local pool)")


def check_sweep_arguments(args) -> None:
    """:class:`ValidationError` if --workers or --scheduler is malformed."""
    if args.workers is not None:
        check_count("--workers", args.workers)
    check_scheduler(args.scheduler)


def _key(point: dict) -> str:
    return json.dumps(point, sort_keys=True)


def load_records(path) -> dict:
    """Finished points of a sweep file: {key: record}; failed points are not counted as finished."""
    records = {}
    path = Path(path)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if "result" in rec:
                    records[_key(rec["point"])] = rec
    return records


def pool_size(workers: int | None = None) -> int:
    """The local pool's processes: ``workers``, by default one per core this process may run on."""
    return workers or available_cores()


def _call(fn, point):
    # One BLAS thread per worker: the workers already use every core.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return fn(point)


def run_points(points: list, fn, path, workers: int | None = None, label: str = "sweep",
               scheduler: str | None = None, describe: Callable[[dict, dict], str] | None = None,
               prepare: Callable[[list], None] | None = None) -> list:
    """Run ``fn`` on every unfinished point; return the records of all points, in order.

    Progress goes to stderr: a bar over all points (finished ones included) with an ETA, and,
    if ``describe`` is given, the line ``describe(point, result)`` for every point that finishes.
    ``prepare(unfinished_points)``, if given, is called in this process before any point runs
    (e.g. to check, and download once, the data that the workers then read).
    """
    path = Path(path)
    done = load_records(path)
    todo = [p for p in points if _key(p) not in done]
    if len(todo) < len(points):
        print(f"[{label}] {len(points) - len(todo)} of {len(points)} points already done in {path}", file=sys.stderr)
    if prepare is not None and todo:
        prepare(todo)
    failures = []
    progress = Progress(label, len(points), unit="point", initial=len(points) - len(todo)) if todo else None
    with open(path, "a") as fh, _executor(scheduler, workers, fn) as (submit, completed):
        futures = {submit(_call, fn, p): p for p in todo}
        for future in completed(futures):
            point = futures[future]
            try:
                record = {"point": point, "result": future.result()}
                done[_key(point)] = record
            except Exception as err:  # noqa: BLE001  (reported below, never dropped)
                record = {"point": point, "error": f"{type(err).__name__}: {err}"}
                failures.append(record)
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            if describe is not None and "result" in record:
                progress.write(f"[{label}] {describe(point, record['result'])}", file=sys.stderr)
            progress.step(f"{len(failures)} failed" if failures else "")
    for f in failures:
        print(f"[{label}] failed point {f['point']}: {f['error']}", file=sys.stderr)
    return [done.get(_key(p)) or next(f for f in failures if f["point"] == p) for p in points]


def _pool_context(fn):
    """The local pool's multiprocessing context: a fork server that has imported ``fn``'s module, else spawn."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # read when the server starts, i.e. by the first pool of this process; later pools import what else they need
    context.set_forkserver_preload(["experiments.sweep", getattr(fn, "func", fn).__module__])
    return context


class _executor:
    """(submit, as_completed) of a local process pool, or of a Dask distributed client."""

    def __init__(self, scheduler, workers, fn):
        self.scheduler, self.workers, self.fn = scheduler, workers, fn

    def __enter__(self):
        if self.scheduler:
            try:
                from dask.distributed import Client
                from dask.distributed import as_completed as dask_completed
            except ImportError:
                raise RuntimeError("--scheduler needs dask.distributed: python -m pip install 'dask[distributed]'") \
                    from None
            self.client = Client(self.scheduler)
            return (lambda f, *a: self.client.submit(f, *a, pure=False)), dask_completed
        self.pool = ProcessPoolExecutor(max_workers=pool_size(self.workers),
                                        mp_context=_pool_context(self.fn))
        return self.pool.submit, as_completed

    def __exit__(self, *exc):
        if self.scheduler:
            self.client.close()
        else:
            self.pool.shutdown()
