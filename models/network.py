"""Invertible networks (paper section 7): square and variable-width, with auxiliary units.

Conventions (used throughout the project)
-----------------------------------------
Layers are l = 0..L with widths ``n_0 .. n_L``; layer 0 is the input.
``weights[i]`` has shape ``(n_{i+1}, n_{i+1})`` and maps the *first* ``n_{i+1}``
units of layer ``i`` to layer ``i+1``::

    h_{i+1} = r_i[:, :n_{i+1}] @ weights[i].T + biases[i],    r_{i+1} = f(h_{i+1})

The remaining ``n_i - n_{i+1}`` units of layer i are auxiliary: they have no
forward synapses and their targets are their forward values.  Output units beyond
the task's (``n_L - n_out``) are auxiliary too.  Batch is the first axis.
Lists indexed by ``i`` (weights, biases, preactivations, derivatives) refer to
layer ``i+1``; ``rates[l]`` refers to layer ``l`` (``rates[0]`` is the input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg

from .activations import Activation, get_activation
from .errors import SingularWeightsError
from .validation import check_array

__all__ = [
    "Network",
    "ForwardPass",
    "SingularWeightsError",
    "check_array",
    "init_network",
    "orthogonal",
    "xavier_normal",
    "DirectInverse",
]

#: Weight matrices whose reciprocal 1-norm condition number is below this are
#: refused by the inverse-based rules: their inverse would amplify float64
#: rounding (1e-16) by more than 1e6.
MIN_RCOND = 1e-10


@dataclass
class Network:
    """An invertible layered network: weights, biases, activation and widths.

    Parameters
    ----------
    weights : list of ndarray, weights[i] of shape (n_{i+1}, n_{i+1})
    biases : list of ndarray, biases[i] of shape (n_{i+1},)
    input_width : int
        n_0, the number of input units (>= n_1).
    activation : Activation or str
    n_out : int, optional
        Number of task output units (the first ``n_out`` units of layer L);
        defaults to all of them.
    """

    weights: list
    biases: list
    input_width: int
    activation: Activation = field(default_factory=lambda: get_activation("leaky_relu"))
    n_out: int | None = None

    def __post_init__(self):
        self.activation = get_activation(self.activation)
        if len(self.weights) == 0 or len(self.weights) != len(self.biases):
            raise ValueError(
                f"weights and biases: expected two lists of the same non-zero length (one per layer), "
                f"got {len(self.weights)} weights and {len(self.biases)} biases"
            )
        prev = int(self.input_width)
        ws, bs = [], []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            w = np.asarray(w, dtype=float)
            n = w.shape[0] if w.ndim == 2 else -1
            if w.ndim != 2 or w.shape[0] != w.shape[1]:
                raise ValueError(
                    f"weights[{i}]: expected a square matrix (n_{i + 1}, n_{i + 1}) acting on the first "
                    f"n_{i + 1} units of layer {i}, got shape {w.shape}"
                )
            if n > prev:
                raise ValueError(
                    f"weights[{i}]: layer {i + 1} has {n} units but layer {i} has only {prev}; "
                    f"widths must not grow (n_{i + 1} <= n_{i})"
                )
            ws.append(check_array(f"weights[{i}]", w, (n, n)))
            bs.append(
                check_array(
                    f"biases[{i}]", b, (n,), hint=f"layer {i + 1} has {n} units"
                )
            )
            prev = n
        self.weights, self.biases = ws, bs
        n_last = self.widths[-1]
        if self.n_out is None:
            self.n_out = n_last
        if not (1 <= int(self.n_out) <= n_last):
            raise ValueError(f"n_out: expected 1..{n_last} task output units, got {self.n_out}")
        self.n_out = int(self.n_out)

    @property
    def widths(self) -> tuple:
        """(n_0, n_1, ..., n_L)."""
        return (int(self.input_width),) + tuple(w.shape[0] for w in self.weights)

    @property
    def depth(self) -> int:
        """L, the number of weight layers (hidden layers + 1)."""
        return len(self.weights)

    def copy(self) -> "Network":
        return Network([w.copy() for w in self.weights], [b.copy() for b in self.biases],
                       self.input_width, self.activation, self.n_out)

    def check_input(self, x) -> np.ndarray:
        return check_array("x", x, (None, self.widths[0]),
                           hint=f"the network has {self.widths[0]} input units; pass a batch (batch, n_0)")

    def forward(self, x) -> "ForwardPass":
        """Forward pass (Eq. 1) with biases, for a batch ``x`` of shape (batch, n_0)."""
        x = self.check_input(x)
        rates, pre, der = [x], [], []
        f = self.activation
        for w, b in zip(self.weights, self.biases):
            h = rates[-1][:, : w.shape[0]] @ w.T
            h += b
            a = f.derivative(h)
            pre.append(h)
            # f is piecewise linear through 0: f(h) = f'(h) h exactly (one multiply, no second branch).
            rates.append(h * a)
            der.append(a)
        return ForwardPass(rates, pre, der)


@dataclass
class ForwardPass:
    """Rates ``y_l`` (l = 0..L), pre-activations ``h_l`` and derivatives ``A_l = f'(h_l)`` (l = 1..L)."""

    rates: list
    preactivations: list
    derivatives: list


def orthogonal(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-distributed random orthogonal (n, n) matrix (QR of a Gaussian, sign-corrected)."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def xavier_normal(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian (n, n) matrix with variance 2 / (fan_in + fan_out) = 1 / n."""
    return rng.standard_normal((n, n)) * np.sqrt(2.0 / (n + n))


def init_network(widths: Sequence[int], init: str = "orthogonal", seed: int = 0,
                 activation: str | Activation = "leaky_relu", negative_slope: float = 0.1,
                 n_out: int | None = None) -> Network:
    """A seeded network with the given widths (n_0 >= n_1 >= ... >= n_L) and zero biases.

    ``init`` is "orthogonal" or "xavier" (Xavier normal, called "random" in Fig. 1).
    """
    widths = [int(w) for w in widths]
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f"widths: expected at least two positive layer widths, got {widths}")
    if any(b > a for a, b in zip(widths, widths[1:])):
        raise ValueError(f"widths: expected non-increasing widths (auxiliary units only drop out), got {widths}")
    makers = {"orthogonal": orthogonal, "xavier": xavier_normal, "random": xavier_normal}
    if init not in makers:
        raise ValueError(f"init: expected one of {sorted(makers)}, got {init!r}")
    rng = np.random.default_rng(seed)
    weights = [makers[init](n, rng) for n in widths[1:]]
    biases = [np.zeros(n) for n in widths[1:]]
    return Network(weights, biases, widths[0], get_activation(activation, negative_slope), n_out)


class DirectInverse:
    """Applies ``W^-1`` by LU factorisation, refusing singular or badly conditioned W.

    ``solve(i, w, u)`` returns ``x`` with ``x @ w.T = u`` (each row solves W x = u).

    ``threads > 1``: :meth:`prepare` starts the LU factorisations of the layers a
    target rule will invert on a pool of that many threads (LAPACK releases the GIL),
    and each ``solve`` waits only for its own layer's factors.  Each factorisation runs
    in one thread with the same LAPACK call, so the results are bit-identical to
    ``threads=1``; keep BLAS itself at one thread (``threadpoolctl``) or the two
    kinds of threads compete for the cores.
    """

    def __init__(self, threads: int = 1):
        if not (isinstance(threads, int) and threads >= 1):
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        self.threads = threads
        self._pool = None
        self._pending = {}

    def prepare(self, weights: Sequence[np.ndarray], indices: Sequence[int]) -> None:
        """Begin factorising ``weights[i]`` for ``i`` in ``indices`` (in that order) on the pool.

        A later ``solve(i, w, u)`` uses those factors only if ``w`` is the very array
        prepared; the caller must not change the weights in between, and calls
        :meth:`discard` once done.  Preparing the same arrays again keeps the
        factorisations already under way (so a training step can start them before its
        forward pass, and the target computation's own ``prepare`` finds them).
        """
        indices = list(indices)
        if self._pending and all(i in self._pending and self._pending[i][0] is weights[i] for i in indices):
            return
        self.discard()
        if self.threads == 1:
            return
        self._ensure_pool()
        self._pending = {i: (weights[i], self._pool.submit(lu_checked, i, weights[i])) for i in indices}

    def factorise(self, weights: Sequence[np.ndarray], indices: Iterable[int]) -> dict:
        """``{i: LU factors of weights[i]}`` for repeated solves (side by side on the pool if threads > 1)."""
        indices = list(indices)
        if self.threads == 1 or len(indices) < 2:
            return {i: lu_checked(i, weights[i]) for i in indices}
        self._ensure_pool()
        return dict(zip(indices, self._pool.map(lu_checked, indices, [weights[i] for i in indices])))

    def _ensure_pool(self) -> None:
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lu")

    def discard(self) -> None:
        """Forget prepared factors (waits for running factorisations, ignores their errors)."""
        pending, self._pending = self._pending, {}
        for _, future in pending.values():
            future.cancel() or future.exception()

    def solve(self, index: int, w: np.ndarray, u: np.ndarray) -> np.ndarray:
        prepared = self._pending.pop(index, None)
        lu, piv = prepared[1].result() if prepared is not None and prepared[0] is w else lu_checked(index, w)
        # lu factors W^T (the Fortran view of C-ordered W: no copy); W x = u^T is its transposed system.
        x, info = scipy.linalg.lapack.dgetrs(lu, piv, np.asarray(u).T, trans=1)
        return x.T


def lu_checked(index: int, w: np.ndarray):
    """LU factors of ``w.T`` after checking its reciprocal condition number (LAPACK getrf, gecon)."""
    wt = w.T
    lu, piv, info = scipy.linalg.lapack.dgetrf(wt)
    rcond = 0.0
    if info == 0:
        rcond, _ = scipy.linalg.lapack.dgecon(lu, np.abs(wt).sum(axis=0).max(), norm="1")
    if info != 0 or not rcond >= MIN_RCOND:
        raise SingularWeightsError(
            f"weights[{index}] (layer {index + 1}): expected an invertible matrix for the exact "
            f"layer inverse, got reciprocal condition number {rcond:.2e} (< {MIN_RCOND:.0e}); "
            "TP, ITP and GAIT-prop need invertible weights: use orthogonal initialisation or the "
            "orthogonality regulariser, or use rule='bp'"
        )
    return lu, piv
