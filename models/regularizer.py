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
thread: about 50 and 60 GFLOP/s), so with BLAS on one thread the gradient costs
what its 3 n^3 flops cost; a ``gemm`` on the symmetrised ``O`` rounds the same
but is no faster.  What remains is the second core, without changing a bit:
:func:`subtract_orthogonality_gradients` and :func:`start_orthogonality_gradients`
compute the matrices side by side on a thread pool, each one by the same two BLAS
calls in one thread.  The calls go to SciPy's BLAS (``scipy.linalg.cython_blas``,
the library behind ``scipy.linalg.blas``) through ``ctypes``, which releases the
GIL for the call (SciPy's ``scipy.linalg.blas`` wrappers hold it, so threads
calling them run one at a time), with the operands, layouts and arguments that
``scipy.linalg.blas.dsyrk(1.0, w, trans=1)`` and
``dsymm(4 lam, m, w, side=1)`` pass; where SciPy does not export its BLAS to
``ctypes`` (its ``__pyx_capi__`` table), the wrappers themselves are called: the same
bits, one thread at a time.  float32 weights are computed in float32 (``ssyrk``,
``ssymm``, about twice as fast); anything else in float64.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.linalg import blas, cython_blas

from .errors import ValidationError
from .validation import check_count, float_array

__all__ = ["orthogonality_penalty", "orthogonality_gradient", "subtract_orthogonality_gradients",
           "start_orthogonality_gradients", "PendingGradients"]


def _fortran_float(w) -> np.ndarray:
    """``w`` Fortran-ordered (what SciPy's BLAS wrappers copy a C-ordered array to), float32 or float64."""
    return np.asfortranarray(float_array(w))


_INT_P, _CHAR_P = ctypes.POINTER(ctypes.c_int), ctypes.c_char_p


def _prefix(w: np.ndarray) -> str:
    return "s" if w.dtype == np.float32 else "d"


def _int(value: int):
    return ctypes.byref(ctypes.c_int(value))


@lru_cache(maxsize=None)
def _nogil(name: str):
    """SciPy's BLAS routine ``name`` (``scipy.linalg.cython_blas``) as a ctypes function, which releases
    the GIL while the routine runs; None if SciPy does not export it (then the wrappers are called)."""
    try:
        capsule = cython_blas.__pyx_capi__[name]
    except (AttributeError, KeyError):
        return None
    get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
    get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi))
    scalar = ctypes.POINTER(ctypes.c_float if name[0] == "s" else ctypes.c_double)
    args = {"syrk": (_CHAR_P, _CHAR_P, _INT_P, _INT_P, scalar, ctypes.c_void_p, _INT_P, scalar, ctypes.c_void_p,
                     _INT_P),
            "symm": (_CHAR_P, _CHAR_P, _INT_P, _INT_P, scalar, ctypes.c_void_p, _INT_P, ctypes.c_void_p, _INT_P,
                     scalar, ctypes.c_void_p, _INT_P)}[name[1:]]
    return ctypes.CFUNCTYPE(None, *args)(get_pointer(capsule, get_name(capsule)))


def _off_diagonal_gram(w: np.ndarray) -> np.ndarray:
    """Upper triangle of ``W^T W`` (syrk: half the cost of a full product), diagonal and lower triangle zero.

    ``w`` is Fortran-ordered (p, q); the call is ``scipy.linalg.blas.dsyrk(1.0, w, trans=1)``'s.
    """
    p, q = w.shape
    syrk = _nogil(_prefix(w) + "syrk")
    if syrk is None:
        m = getattr(blas, _prefix(w) + "syrk")(1.0, w, trans=1)
    else:
        scalar = np.ctypeslib.as_ctypes_type(w.dtype)
        m = np.zeros((q, q), dtype=w.dtype, order="F")
        syrk(b"U", b"T", _int(q), _int(p), ctypes.byref(scalar(1.0)), w.ctypes.data, _int(max(p, 1)),
             ctypes.byref(scalar(0.0)), m.ctypes.data, _int(max(q, 1)))
    np.fill_diagonal(m, 0.0)
    return m


def orthogonality_penalty(w: np.ndarray, lam: float) -> float:
    """``lam * sum of squared off-diagonal entries of W^T W`` (see module docstring)."""
    m = _off_diagonal_gram(_fortran_float(w))
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
    w = _fortran_float(w)
    m = _off_diagonal_gram(w)
    # symm reads only the upper triangle of the symmetric matrix: 4 lam * W @ O, the call of
    # scipy.linalg.blas.dsymm(4 lam, m, w, side=1, lower=0).
    p, q = w.shape
    symm = _nogil(_prefix(w) + "symm")
    if symm is None:
        return getattr(blas, _prefix(w) + "symm")(4.0 * lam, m, w, side=1, lower=0)
    scalar = np.ctypeslib.as_ctypes_type(w.dtype)
    g = np.zeros((p, q), dtype=w.dtype, order="F")
    symm(b"R", b"U", _int(p), _int(q), ctypes.byref(scalar(4.0 * lam)), m.ctypes.data, _int(max(q, 1)),
         w.ctypes.data, _int(max(p, 1)), ctypes.byref(scalar(0.0)), g.ctypes.data, _int(max(p, 1)))
    return g


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
        that many threads (the BLAS calls release the GIL).  Each matrix still goes through the
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
