"""One training step of the discrete reference: rule updates, regulariser, Adam.

The data loop, evaluation and checkpoints live with the experiments; this module
holds only the maths of a step so that benchmarks and training share it.
"""

from __future__ import annotations

from .network import Network
from .optimizers import Adam
from .regularizer import orthogonality_gradient
from .rules import compute_updates

__all__ = ["train_step", "step_flops"]


def train_step(net: Network, optimizer: Adam, x, target, rule: str, gamma=1e-3,
               regularizer: float = 0.0, inverse=None):
    """Update ``net`` in place by one Adam step along the rule's descent direction.

    ``regularizer`` is lambda of the orthogonality regulariser (Eq. 23), whose
    gradient is subtracted from the weight directions.  Returns the forward pass
    (computed before the update).
    """
    dW, db, fwd = compute_updates(net, x, target, rule, gamma, inverse)
    if regularizer:
        for d, w in zip(dW, net.weights):
            d -= orthogonality_gradient(w, regularizer)
    optimizer.step(net.weights + net.biases, dW + db)
    return fwd


def step_flops(widths, batch: int, rule: str, regularizer: bool = False,
               inverse: str = "lu") -> float:
    """Floating-point operations of one :func:`train_step` (matrix products only).

    Counts 2*m*n*k per (m, k) @ (k, n) product; LU factorisation 2/3 n^3 and the
    two triangular solves 2 n^2 per right-hand side.  Element-wise work (activation,
    Adam) is O(n^2) and left out: it is bounded by memory traffic, not flops.
    """
    ns = [int(n) for n in widths[1:]]
    flops = sum(2.0 * batch * n * n for n in ns)          # forward pass
    flops += sum(2.0 * batch * n * n for n in ns)         # weight updates e^T y
    if rule == "bp":
        flops += sum(2.0 * batch * n * n for n in ns[1:])  # signals through W^T
    else:
        for n in ns[1:]:                                   # one solve with W_{l+1} per layer below
            flops += (2.0 / 3.0 * n**3 if inverse == "lu" else 0.0) + 2.0 * batch * n * n
    if regularizer:
        flops += sum(3.0 * n**3 for n in ns)               # W^T W (syrk, n^3) and W O (symm, 2 n^3)
    return flops
