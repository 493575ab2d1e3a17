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

import numbers
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import scipy.linalg

from .activations import Activation, get_activation
from .errors import NonFiniteError, SingularWeightsError, ValidationError
from .validation import check_array, check_count, check_dtype

__all__ = [
    "Network",
    "ForwardPass",
    "SingularWeightsError",
    "check_array",
    "check_finite_result",
    "init_network",
    "orthogonal",
    "xavier_normal",
    "DirectInverse",
    "Description",
    "activation_arguments",
    "layer_table",
]

#: Weight matrices whose reciprocal 1-norm condition number is below this are
#: refused by the inverse-based rules: their inverse would amplify float64
#: rounding (1e-16) by more than 1e6.
MIN_RCOND = 1e-10
#: The same limit for float32 weights: their inverse would amplify float32 rounding
#: (6e-8) by more than 1e5, to errors of 1e-2 of the targets' deviations.
MIN_RCOND_FLOAT32 = 1e-5


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
    dtype : {"float64", "float32"}
        The floating-point type of the weights, biases and every computation with them
        (the forward pass, and the rules' targets and updates); the arrays given are
        converted to it.  Stored as a ``numpy.dtype``.
    """

    weights: list
    biases: list
    input_width: int
    activation: Activation = field(default_factory=lambda: get_activation("leaky_relu"))
    n_out: int | None = None
    dtype: np.dtype | str = "float64"

    def __post_init__(self):
        self.activation = get_activation(self.activation)
        self.dtype = dtype = check_dtype("dtype", self.dtype)
        if len(self.weights) == 0 or len(self.weights) != len(self.biases):
            raise ValidationError(
                f"weights and biases: expected two lists of the same non-zero length (one per layer), "
                f"got {len(self.weights)} weights and {len(self.biases)} biases"
            )
        prev = self.input_width = check_count("input_width", self.input_width)
        ws, bs = [], []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            square = f"a square matrix (n_{i + 1}, n_{i + 1}) acting on the first n_{i + 1} units of layer {i}"
            w = check_array(f"weights[{i}]", w, (None, None), hint=f"weights[{i}] is {square}", dtype=dtype)
            n = w.shape[0]
            if w.shape[0] != w.shape[1]:
                raise ValidationError(f"weights[{i}]: expected {square}, got shape {w.shape}")
            if n > prev:
                raise ValidationError(
                    f"weights[{i}]: layer {i + 1} has {n} units but layer {i} has only {prev}; "
                    f"widths must not grow (n_{i + 1} <= n_{i})"
                )
            ws.append(w)
            bs.append(
                check_array(
                    f"biases[{i}]", b, (n,), hint=f"layer {i + 1} has {n} units", dtype=dtype
                )
            )
            prev = n
        self.weights, self.biases = ws, bs
        n_last = self.widths[-1]
        if self.n_out is None:
            self.n_out = n_last
        n_out = self.n_out
        if not isinstance(n_out, numbers.Integral) or isinstance(n_out, bool) or not 1 <= n_out <= n_last:
            raise ValidationError(f"n_out: expected an integer in 1..{n_last} (task output units), got {n_out!r}")
        self.n_out = int(n_out)

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
                       self.input_width, self.activation, self.n_out, self.dtype)

    def check_input(self, x) -> np.ndarray:
        """``x`` as a (batch, n_0) array of the network's dtype (ValidationError naming ``x`` otherwise)."""
        return check_array("x", x, (None, self.widths[0]),
                           hint=f"the network has {self.widths[0]} input units; pass a batch (batch, n_0)",
                           dtype=self.dtype)

    def forward(self, x) -> "ForwardPass":
        """Forward pass (Eq. 1) with biases, for a batch ``x`` of shape (batch, n_0).

        Computed in the network's dtype (``x`` is converted to it).  Raises
        :class:`~models.errors.NonFiniteError` if finite inputs overflow it.
        """
        x = self.check_input(x)
        rates, pre, der = [x], [], []
        f = self.activation
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported once, below
            for w, b in zip(self.weights, self.biases):
                h = rates[-1][:, : w.shape[0]] @ w.T
                h += b
                a = f.derivative(h)
                pre.append(h)
                # f is piecewise linear through 0: f(h) = f'(h) h exactly (one multiply, no second branch).
                rates.append(h * a)
                der.append(a)
        check_finite_result("forward pass", [(f"the layer {i} rates", r) for i, r in enumerate(rates[1:], 1)],
                            lambda: self._overflow_hint(x))
        return ForwardPass(rates, pre, der)

    def _overflow_hint(self, x: np.ndarray) -> str:
        """Why a result from finite ``x`` and these weights may overflow (computed on the error path only)."""
        largest_w = max(float(np.max(np.abs(w))) for w in self.weights)
        return (f"{self.dtype.name} overflowed (largest |x| = {np.max(np.abs(x)):.3g}, largest |weight| = "
                f"{largest_w:.3g}): scale the inputs to O(1), e.g. x / x.std()")

    def __repr__(self) -> str:
        dtype = "" if self.dtype == np.float64 else f", dtype={self.dtype.name!r}"
        return f"Network(widths={self.widths}, n_out={self.n_out}, {activation_arguments(self.activation)}{dtype})"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython/Jupyter display: the description
        printer.text(repr(self) if cycle else self.describe())

    def describe(self) -> "Description":
        """A readable multi-line description: widths, task and auxiliary units, activation, parameters.

        ``print(net.describe())``; in a notebook the returned text also displays as it is.
        """
        n_params = sum(w.size + b.size for w, b in zip(self.weights, self.biases))
        lines = [
            f"Network {' -> '.join(map(str, self.widths))}: {self.depth} weight layers, "
            f"{n_params:,} parameters",
            f"  activation: {self.activation.label()}",
            *layer_table(self),
            "  auxiliary units have no forward synapses (hidden layers) or no task target (output);",
            "  their targets are their forward values.",
        ]
        return Description("\n".join(lines))


def activation_arguments(activation: Activation) -> str:
    """``activation='leaky_relu', negative_slope=0.1``: the activation as :func:`init_network` takes it."""
    try:
        settings = dict(activation.settings())
    except NotImplementedError:
        return f"activation={activation!r}"
    return ", ".join([f"activation={settings.pop('name')!r}"] + [f"{k}={v!r}" for k, v in settings.items()])


class Description(str):
    """A multi-line text that a notebook (and ``repr``) shows as it reads, without quotes or ``\\n``."""

    def __repr__(self) -> str:
        return str(self)


def layer_table(net: Network, columns: dict | None = None) -> list:
    """Lines of a per-layer table of ``net`` (layer, units, task, auxiliary), indented by two spaces.

    ``columns`` adds columns: ``{header: [text for layer 0, ..., text for layer L]}``.
    Auxiliary units of layer l < L are the ``n_l - n_{l+1}`` units without forward synapses;
    at the output, the ``n_L - n_out`` units without a task target.
    """
    widths, L = net.widths, net.depth
    table = {
        "layer": [f"{l}" + (" (input)" if l == 0 else " (output)" if l == L else "") for l in range(L + 1)],
        "units": [str(n) for n in widths],
        "task": ["-"] * L + [str(net.n_out)],
        "auxiliary": [str(widths[l] - widths[l + 1]) for l in range(L)] + [str(widths[L] - net.n_out)],
        **(columns or {}),
    }
    sizes = {h: max(len(h), *(len(v) for v in values)) for h, values in table.items()}

    numeric = {h: all(_is_number(v) or v == "-" for v in values) for h, values in table.items()}

    def row(cells):
        return "  " + "  ".join(c.rjust(sizes[h]) if numeric[h] else c.ljust(sizes[h])
                                for h, c in zip(table, cells)).rstrip()

    return [row(table)] + [row([table[h][l] for h in table]) for l in range(L + 1)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_finite_result(what: str, named_arrays, hint: str) -> None:
    """Raise :class:`NonFiniteError` if any of ``named_arrays`` [(name, array), ...] holds NaN or inf.

    For results computed from finite inputs: one pass over each returned array, once per call.
    ``hint`` (a string, or a function returning one, called on the error path only) says why
    and what to do.
    """
    for name, arr in named_arrays:
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            hint_text = hint() if callable(hint) else hint
            raise NonFiniteError(f"{what}: {bad} of {arr.size} values of {name} are NaN or infinite, "
                                 f"although every input was finite; {hint_text}")


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
                 n_out: int | None = None, dtype: str = "float64") -> Network:
    """A seeded network with the given widths (n_0 >= n_1 >= ... >= n_L) and zero biases.

    ``init`` is "orthogonal" or "xavier" (Xavier normal, called "random" in Fig. 1).
    ``dtype`` "float32": the float64 initial weights of the same seed, rounded to float32.
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
    return Network(weights, biases, widths[0], get_activation(activation, negative_slope), n_out, dtype)


class DirectInverse:
    """Applies ``W^-1`` by LU factorisation, refusing singular or badly conditioned W.

    ``solve(i, w, u)`` returns ``x`` with ``x @ w.T = u`` (each row solves W x = u), factorised
    and solved in the precision of ``w`` (LAPACK ``sgetrf``/``sgetrs`` for float32 weights,
    ``dgetrf``/``dgetrs`` otherwise).

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
        x, info = _lapack("getrs", lu)(lu, piv, np.asarray(u).T, trans=1)
        return x.T


def _lapack(name: str, a: np.ndarray):
    """LAPACK routine ``name`` in the precision of ``a``: ``s`` for float32, ``d`` otherwise."""
    return getattr(scipy.linalg.lapack, ("s" if a.dtype == np.float32 else "d") + name)


def lu_checked(index: int, w: np.ndarray):
    """LU factors of ``w.T`` after checking its reciprocal condition number (LAPACK getrf, gecon).

    In the precision of ``w`` (float32 weights: ``sgetrf``, limit :data:`MIN_RCOND_FLOAT32`).
    """
    wt = w.T
    lu, piv, info = _lapack("getrf", wt)(wt)
    limit = MIN_RCOND_FLOAT32 if lu.dtype == np.float32 else MIN_RCOND
    rcond = 0.0
    if info == 0:
        rcond, _ = _lapack("gecon", lu)(lu, np.abs(wt).sum(axis=0).max(), norm="1")
    if info != 0 or not rcond >= limit:
        raise SingularWeightsError(
            f"weights[{index}] (layer {index + 1}): expected an invertible matrix for the exact "
            f"layer inverse, got reciprocal condition number {rcond:.2e} (< {limit:.0e}); "
            "TP, ITP and GAIT-prop need invertible weights: use orthogonal initialisation or the "
            "orthogonality regulariser, or use rule='bp'"
        )
    return lu, piv
