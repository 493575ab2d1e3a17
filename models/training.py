"""One training step of the discrete reference: rule updates, regulariser, Adam.

The data loop, evaluation and checkpoints live with the experiments; this module
holds only the maths of a step so that benchmarks and training share it.
"""

from __future__ import annotations

import numpy as np

from .losses import constructed_target, loss_value
from .network import Network
from .optimizers import Adam
from .regularizer import orthogonality_gradient
from .rules import compute_updates, forward_factorising

__all__ = ["train_step", "apply_update", "step_flops", "evaluate", "epoch_order", "train_epoch"]


def train_step(net: Network, optimizer: Adam, x, target, rule: str, gamma=1e-3,
               regularizer: float = 0.0, inverse=None):
    """Update ``net`` in place by one Adam step along the rule's descent direction.

    ``regularizer`` is lambda of the orthogonality regulariser (Eq. 23), whose
    gradient is subtracted from the weight directions.  Returns the forward pass
    (computed before the update).
    """
    dW, db, fwd = compute_updates(net, x, target, rule, gamma, inverse)
    apply_update(net, optimizer, dW, db, regularizer)
    return fwd


def apply_update(net: Network, optimizer: Adam, dW: list, db: list, regularizer: float = 0.0) -> None:
    """Subtract the regulariser's gradient from ``dW`` (in place) and take one Adam step."""
    if regularizer:
        for d, w in zip(dW, net.weights):
            d -= orthogonality_gradient(w, regularizer)
    optimizer.step(net.weights + net.biases, dW + db)


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


def count_correct(output: np.ndarray, labels, n_out: int) -> int:
    """How many samples' largest task output is their label."""
    return int(np.sum(np.argmax(output[:, :n_out], axis=1) == labels))


def evaluate(net: Network, x, labels, loss: str = "quadratic", batch: int = 2000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``net`` on a dataset; prediction = argmax over task outputs."""
    total, correct = 0.0, 0
    n = len(labels)
    for start in range(0, n, batch):
        xb, yb = x[start: start + batch], labels[start: start + batch]
        out = net.forward(xb).rates[-1]
        total += loss_value(loss, out, yb, net.n_out) * len(yb)
        correct += count_correct(out, yb, net.n_out)
    return total / n, correct / n


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of ``epoch``: a function of (seed, epoch) only, so resumed runs repeat it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_epoch(net: Network, optimizer: Adam, x, labels, *, rule: str, seed: int, epoch: int, batch: int = 60,
                gamma=1e-3, regularizer: float = 0.0, loss: str = "quadratic", inverse=None, update=None,
                on_batch=None) -> dict:
    """One pass over (x, labels) in the order :func:`epoch_order` gives; returns running statistics.

    ``update(net, x, target, fwd)``, if given, replaces the rule's descent directions (e.g.
    the circuit's local rule) and returns (dW, db).  ``on_batch(i, n_batches,
    running_loss)`` is called after every batch (progress display).
    """
    order = epoch_order(len(labels), seed, epoch)
    n_batches = len(order) // batch
    total_loss, correct = 0.0, 0
    try:
        for i in range(n_batches):
            idx = order[i * batch: (i + 1) * batch]
            xb, yb = x[idx], labels[idx]
            # the layers' factorisations (TP, ITP, GAIT) overlap the forward pass; compute_targets discards them
            fwd = forward_factorising(net, xb, rule, inverse) if update is None else net.forward(xb)
            target = constructed_target(loss, fwd.rates[-1], yb, net.n_out)
            if update is None:
                dW, db, _ = compute_updates(net, xb, target, rule, gamma, inverse, fwd=fwd)
            else:
                dW, db = update(net, xb, target, fwd)
            out = fwd.rates[-1]
            total_loss += loss_value(loss, out, yb, net.n_out)
            correct += count_correct(out, yb, net.n_out)
            apply_update(net, optimizer, dW, db, regularizer)
            if on_batch is not None:
                on_batch(i, n_batches, total_loss / (i + 1))
    finally:  # no factors of weights that change in place may outlive a failed step
        getattr(inverse, "discard", lambda: None)()
    seen = n_batches * batch
    return {"running_loss": total_loss / max(n_batches, 1), "running_accuracy": correct / max(seen, 1)}
