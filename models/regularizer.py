"""Soft orthogonality regulariser (Eq. 23) as the published GAIT-prop code computes it.

The published code stores weights as (n_pre, n_post) and penalises the
off-diagonal entries of its ``W W^T``.  In this project's (n_post, n_pre) layout
that matrix is ``M = W^T W``::

    R(W) = lam * sum_{i != j} M_ij^2,            dR/dW = 4 lam W O,   O = M - diag(M)

For the square matrices used here ``W^T W = I`` if and only if ``W W^T = I``, so
both forms have the same minimisers (orthogonal W).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dsymm, dsyrk

__all__ = ["orthogonality_penalty", "orthogonality_gradient"]


def _off_diagonal_gram(w: np.ndarray) -> np.ndarray:
    # dsyrk fills the upper triangle of W^T W at half the cost of a full product.
    m = dsyrk(1.0, w, trans=1)
    np.fill_diagonal(m, 0.0)
    return m


def orthogonality_penalty(w: np.ndarray, lam: float) -> float:
    """``lam * sum of squared off-diagonal entries of W^T W`` (see module docstring)."""
    m = _off_diagonal_gram(np.asarray(w, dtype=float))
    upper = np.triu(m, 1)
    return float(lam * 2.0 * np.sum(upper * upper))


def orthogonality_gradient(w: np.ndarray, lam: float) -> np.ndarray:
    """Gradient of :func:`orthogonality_penalty` with respect to W: ``4 lam W O``."""
    w = np.asarray(w, dtype=float)
    m = _off_diagonal_gram(w)
    # dsymm reads only the upper triangle of the symmetric matrix: returns 4 lam * W @ O.
    return dsymm(4.0 * lam, m, w, side=1, lower=0)
