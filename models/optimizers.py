"""Adam (Kingma & Ba) with bias correction, and the published GAIT-prop code's variant.

Parameters are updated in place along *descent directions* (the change per unit
learning rate, as returned by :mod:`models.rules`)::

    m <- beta1 m + (1 - beta1) d
    v <- beta2 v + (1 - beta2) d^2
    p <- p + lr * mhat / (sqrt(vhat) + eps)

``bias_correction=True`` (standard Adam): mhat = m / (1 - beta1^t), vhat = v / (1 - beta2^t).
``Adam.published()``: no bias correction, beta1 0.9, beta2 0.99, eps 1e-8 added to sqrt(v).

float32 parameters keep float32 moments: each element's step is formed in float64 as above
and the new ``m``, ``v`` and ``p`` are rounded to float32 when stored.

The step runs as one fused numba loop when numba is installed and imports (the ``fast``
extra), otherwise as numpy operations in the same order, which give the same bits
(``tests/test_packaging.py`` compares them bit for bit).  :data:`ADAM_KERNEL` names the one in
use; setting the environment variable ``GAITCIRCUIT_ADAM_KERNEL=numpy`` before import
selects numpy even where numba is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Adam", "ADAM_KERNEL", "ADAM_KERNEL_NOTE"]


@dataclass
class Adam:
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = True
    step_count: int = 0
    m: list = field(default_factory=list)
    v: list = field(default_factory=list)

    def __post_init__(self):
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError(
                f"Adam: expected lr > 0, 0 <= beta1, beta2 < 1 and eps > 0, got lr={self.lr}, "
                f"beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}"
            )

    @classmethod
    def published(cls, lr: float = 1e-4) -> "Adam":
        """The variant of the published GAIT-prop code."""
        return cls(lr=lr, beta1=0.9, beta2=0.99, eps=1e-8, bias_correction=False)

    def step(self, params: list, directions: list) -> None:
        """Update every array in ``params`` in place along ``directions`` (same shapes)."""
        if len(params) != len(directions):
            raise ValueError(f"Adam.step: expected {len(params)} directions, got {len(directions)}")
        if not self.m:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.step_count += 1
        t = self.step_count
        c1 = 1.0 - self.beta1**t if self.bias_correction else 1.0
        c2 = 1.0 - self.beta2**t if self.bias_correction else 1.0
        # sqrt(vhat) + eps = (sqrt(v) + eps sqrt(c2)) / sqrt(c2): fold the corrections into two scalars.
        step_size = self.lr * np.sqrt(c2) / c1
        eps = self.eps * np.sqrt(c2)
        for p, d, m, v in zip(params, directions, self.m, self.v):
            if d.shape != p.shape:
                raise ValueError(f"Adam.step: direction of shape {d.shape} for a parameter of shape {p.shape}")
            if not p.flags.c_contiguous:
                raise ValueError("Adam.step: parameters must be C-contiguous arrays (updated in place); "
                                 "pass np.ascontiguousarray(p) when building the network")
            _adam_kernel(p.reshape(-1), np.ascontiguousarray(d).reshape(-1), m.reshape(-1), v.reshape(-1),
                         self.beta1, self.beta2, step_size, eps)


#: Elements per block of the numpy kernel: its three float64 buffers (128 KiB each) stay in cache.
NUMPY_BLOCK = 1 << 14


def adam_kernel_numpy(p, d, m, v, beta1, beta2, step_size, eps):
    """One Adam step on flat arrays, in place, with numpy: the numba loop's operations in its order.

    Each operation rounds as the corresponding one in the loop body of the numba kernel
    (IEEE-754 float64 products, sums, square root and quotient, operands in the same order;
    m and v enter the update of p at float64 before they are stored), so both give the same
    bits.  Works through blocks of :data:`NUMPY_BLOCK` elements so that its intermediate
    arrays stay in cache.
    """
    beta1, beta2, step_size, eps = (np.float64(s) for s in (beta1, beta2, step_size, eps))
    one_minus_beta1, one_minus_beta2 = np.float64(1.0) - beta1, np.float64(1.0) - beta2
    size = min(p.size, NUMPY_BLOCK)
    mi_buffer, vi_buffer, term_buffer = (np.empty(size) for _ in range(3))
    for start in range(0, p.size, NUMPY_BLOCK):
        block = slice(start, start + NUMPY_BLOCK)
        pb, db, mb, vb = p[block], d[block], m[block], v[block]
        mi, vi, term = mi_buffer[:pb.size], vi_buffer[:pb.size], term_buffer[:pb.size]
        np.multiply(beta1, mb, out=mi)                # mi = beta1 * m + (1 - beta1) * g
        np.multiply(one_minus_beta1, db, out=term)
        np.add(mi, term, out=mi)
        np.multiply(beta2, vb, out=vi)                # vi = beta2 * v + ((1 - beta2) * g) * g
        np.multiply(one_minus_beta2, db, out=term)
        np.multiply(term, db, out=term)
        np.add(vi, term, out=vi)
        mb[...] = mi
        vb[...] = vi
        np.sqrt(vi, out=vi)                           # p += (step_size * mi) / (sqrt(vi) + eps)
        np.add(vi, eps, out=vi)
        np.multiply(step_size, mi, out=mi)
        np.divide(mi, vi, out=mi)
        np.add(pb, mi, out=pb, casting="unsafe")


def _numba_or_reason():
    """The numba module, or None and the reason it is not used."""
    if os.environ.get("GAITCIRCUIT_ADAM_KERNEL", "").strip().lower() == "numpy":
        return None, "numpy (GAITCIRCUIT_ADAM_KERNEL=numpy)"
    try:
        import numba
    except (ImportError, OSError) as err:  # not installed, or e.g. "Numba needs NumPy 2.3 or less"
        return None, "numpy (numba unavailable: " + " ".join(str(err).split()) + ")"
    return numba, f"numba {numba.__version__}"


numba, ADAM_KERNEL_NOTE = _numba_or_reason()
#: "numba" (the fused loop, ``fast`` extra) or "numpy" (same bits, slower); ADAM_KERNEL_NOTE says which and why.
ADAM_KERNEL = "numpy" if numba is None else "numba"

if numba is None:
    _adam_kernel = adam_kernel_numpy
else:
    @numba.njit(parallel=True, cache=True)
    def _adam_loop(p, d, m, v, beta1, beta2, step_size, eps):  # pragma: no cover - compiled
        # One fused pass over memory, vectorised: a prange loop, which numba lets LLVM vectorise (a plain
        # range loop over four arrays that might alias it does not: 3x slower).  Each element is computed
        # alike whatever the threads (the same bits).
        for i in numba.prange(p.size):
            g = d[i]
            mi = beta1 * m[i] + (1.0 - beta1) * g
            vi = beta2 * v[i] + (1.0 - beta2) * g * g
            m[i] = mi
            v[i] = vi
            p[i] += step_size * mi / (np.sqrt(vi) + eps)

    def _adam_kernel(p, d, m, v, beta1, beta2, step_size, eps):
        """The numba loop on the calling thread alone (its numba thread count restored after).

        The pass takes about 3 ms (float64) for the paper's 3.1 million parameters; a team of
        threads that must all finish, at each of a step's ten calls, cost up to 20x that whenever
        another process holds a core (``python -m experiments bench`` times the step's stages).
        """
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            _adam_loop(p, d, m, v, beta1, beta2, step_size, eps)
        finally:
            numba.set_num_threads(threads)
