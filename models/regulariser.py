"""Soft orthogonality regulariser (Eq. 23) as the published GAIT-prop code computes it.

The published code stores weights as (n_pre, n_post) and penalises the
off-diagonal entries of its ``W W^T``.  In this project's (n_post, n_pre) layout
that matrix is ``M = W^T W``::

    R(W) = lam * sum_{i != j} M_ij^2,            dR/dW = 4 lam W O,   O = M - diag(M)

For the square matrices used here ``W^T W = I`` if and only if ``W W^T = I``, so
both forms have the same minimisers (orthogonal W).

Cost
----
Two BLAS calls per (n, n) matrix: ``syrk`` forms the upper triangle of ``M``
(n^3 flops, half a full product) and ``symm`` forms ``4 lam W O`` from that
triangle (2 n^3 flops).  Both run close to the core's peak (784 wide, one
thread: about 45 and 55 GFLOP/s), so with BLAS on one thread the gradient costs
what its 3 n^3 flops cost; a ``gemm`` on the symmetrised ``O`` rounds the same
but is no faster.  What remains is to use more cores without changing a bit:
:func:`subtract_orthogonality_gradients` and :func:`start_orthogonality_gradients`
compute the matrices on a thread pool, each one by the same BLAS calls in one
thread, alongside the rule's updates.  SciPy's ``scipy.linalg.blas`` wrappers hold
the GIL during each call, so the pool's BLAS calls take turns with each other and
with the Python steps of the calling thread; its numpy products and the LAPACK
factorisations of :class:`~models.network.DirectInverse` release it and overlap
them (``python -m experiments bench`` times the schedules).  float32 weights are computed in float32 (``ssyrk``,
``ssymm``, about twice as fast); anything else in float64.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.linalg import blas

from .errors import ValidationError
from .validation import check_count, float_array

__all__ = ["orthogonality_penalty", "orthogonality_gradient", "subtract_orthogonality_gradients",
           "start_orthogonality_gradients", "PendingGradients"]


def _as_float(w) -> np.ndarray:
    return float_array(w)


def _routine(w: np.ndarray, name: str):
    return getattr(blas, ("s" if w.dtype == np.float32 else "d") + name)


def _off_diagonal_gram(w: np.ndarray) -> np.ndarray:
    # syrk fills the upper triangle of W^T W at half the cost of a full product.
    m = _routine(w, "syrk")(1.0, w, trans=1)
    np.fill_diagonal(m, 0.0)
    return m


def orthogonality_penalty(w: np.ndarray, lam: float) -> float:
    """``lam * sum of squared off-diagonal entries of W^T W`` (see module docstring)."""
    m = _off_diagonal_gram(_as_float(w))
    upper = np.triu(m, 1)
    return float(lam * 2.0 * np.sum(upper * upper))


def orthogonality_gradient(w: np.ndarray, lam: float) -> np.ndarray:
    """Gradient of :func:`orthogonality_penalty` with respect to W: ``4 lam W O``.

    Parameters
    ----------
    w : (n, n) array
        Weights, (n_post, n_pre).  float32 stays float32; other types become float64.
    lam : float
        The regulariser's strength lambda.

    Returns
    -------
    (n, n) array, Fortran-ordered
        ``4 lam W (W^T W - diag(W^T W))``.
    """
    w = _as_float(w)
    m = _off_diagonal_gram(w)
    # symm reads only the upper triangle of the symmetric matrix: returns 4 lam * W @ O.
    return _routine(w, "symm")(4.0 * lam, m, w, side=1, lower=0)


@lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="regulariser")


class PendingGradients:
    """The orthogonality gradients of a list of matrices, under way on a thread pool or not yet begun.

    Made by :func:`start_orthogonality_gradients`; :meth:`subtract_from` waits for them.
    """

    def __init__(self, weights: Sequence[np.ndarray], lam: float, threads: int):
        self.weights, self.lam = list(weights), lam
        # Largest matrices first, so that the pool's last round is short.
        order = sorted(range(len(self.weights)), key=lambda i: -np.size(self.weights[i]))
        self._futures = None
        if threads > 1 and len(self.weights) > 1:
            pool = _pool(threads)
            futures = {i: pool.submit(orthogonality_gradient, self.weights[i], lam) for i in order}
            self._futures = [futures[i] for i in range(len(self.weights))]

    def subtract_from(self, directions: Sequence[np.ndarray]) -> None:
        """``d -= orthogonality_gradient(w, lam)`` for each direction, in place, in the weights' order."""
        if len(directions) != len(self.weights):
            raise ValidationError(f"directions: expected {len(self.weights)} arrays (one per weight matrix), "
                                  f"got {len(directions)}")
        for i, d in enumerate(directions):
            d -= self._futures[i].result() if self._futures else orthogonality_gradient(self.weights[i], self.lam)


def start_orthogonality_gradients(weights: Sequence[np.ndarray], lam: float, threads: int = 1) -> PendingGradients:
    """Begin the orthogonality gradients of ``weights`` (on a pool of ``threads`` threads if ``threads > 1``).

    A training step can start them before its rule's updates, which need the same
    weights but not the gradients, and subtract them afterwards: the two then share
    the cores.  The caller must not change ``weights`` before
    :meth:`PendingGradients.subtract_from` has returned.

    Parameters
    ----------
    weights : sequence of (n, n) arrays
        The weight matrices.
    lam : float
        The regulariser's strength lambda.
    threads : int, optional
        ``1``: nothing runs until ``subtract_from``, which computes the matrices one
        after the other.  ``> 1``: the matrices are computed side by side on a pool of
        that many threads, alongside the caller's work.  Each matrix still goes through the
        same BLAS calls in one thread, so the results are bit-identical to ``threads=1``;
        keep BLAS itself at one thread (``threadpoolctl``) or the two kinds of threads
        compete for the cores (and OpenBLAS on several threads may round differently).
    """
    return PendingGradients(weights, lam, check_count("threads", threads))


def subtract_orthogonality_gradients(directions: Sequence[np.ndarray], weights: Sequence[np.ndarray],
                                     lam: float, threads: int = 1) -> None:
    """``d -= orthogonality_gradient(w, lam)`` for each (d, w) pair, in place.

    ``threads > 1`` computes the matrices side by side on that many threads, with the
    same bits (see :func:`start_orthogonality_gradients`).
    """
    start_orthogonality_gradients(weights, lam, threads).subtract_from(directions)
