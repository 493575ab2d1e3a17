"""Output losses and the constructed target t_L = y_L - dL/dy_L (paper section 5).

Every loss acts on the first ``n_out`` (task) output units; auxiliary outputs have
no error: their constructed target is their forward value.  Losses are batch means.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

__all__ = ["LOSSES", "one_hot", "loss_value", "loss_gradient", "constructed_target"]

LOSSES = ("quadratic", "cross_entropy")


def one_hot(labels, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected a 1-d integer array, got dtype {labels.dtype}, shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels: expected values in 0..{n_classes - 1}, got {labels.min()}..{labels.max()}")
    out = np.zeros((labels.size, n_classes))
    out[np.arange(labels.size), labels] = 1.0
    return out


def _check(loss, output, labels, n_out):
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    output = np.asarray(output, dtype=float)
    if output.ndim != 2 or output.shape[1] < n_out:
        raise ValueError(f"output: expected shape (batch, >= {n_out}), got {output.shape}")
    labels = np.asarray(labels)
    if labels.shape != (output.shape[0],):
        raise ValueError(f"labels: expected shape ({output.shape[0]},) to match the batch, got {labels.shape}")
    return output, one_hot(labels, n_out)


def loss_value(loss: str, output, labels, n_out: int) -> float:
    """Batch-mean loss: quadratic 1/2 |y - onehot|^2 or softmax cross-entropy."""
    y, t = _check(loss, output, labels, n_out)
    z = y[:, :n_out]
    if loss == "quadratic":
        return float(0.5 * np.mean(np.sum((z - t) ** 2, axis=1)))
    return float(-np.mean(np.sum(t * log_softmax(z, axis=1), axis=1)))


def loss_gradient(loss: str, output, labels, n_out: int) -> np.ndarray:
    """dL/dy per sample (not divided by the batch size), zero on auxiliary outputs."""
    y, t = _check(loss, output, labels, n_out)
    g = np.zeros_like(y)
    z = y[:, :n_out]
    g[:, :n_out] = (z - t) if loss == "quadratic" else softmax(z, axis=1) - t
    return g


def constructed_target(loss: str, output, labels, n_out: int) -> np.ndarray:
    """``t_L = y_L - dL/dy_L``: quadratic loss gives the one-hot target on task units."""
    return np.asarray(output, dtype=float) - loss_gradient(loss, output, labels, n_out)
