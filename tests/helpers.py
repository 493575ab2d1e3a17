"""Small shared helpers for the tests (metrics come from analysis/)."""

import csv
import json

import numpy as np

from analysis.metrics import cosine, relative_error  # noqa: F401  (re-exported for tests)


def random_batch(net, batch=7, seed=0, n_task=None):
    """An input batch and a full output target: task outputs nudged, auxiliary ones at forward values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, net.widths[0]))
    y = net.forward(x).rates[-1]
    target = y.copy()
    n_task = n_task or net.n_out
    target[:, :n_task] = rng.standard_normal((batch, n_task))
    return x, target


def literal_alg1(net, x, target, rule, gamma):
    """Alg. 1 transcribed literally (absolute targets, differences formed at the end).

    The oracle for the scaled implementation where float64 suffices, and the
    'plain formula' whose precision loss the scaled implementation avoids.
    """
    f = net.activation
    fwd = net.forward(x)
    y, A = fwd.rates, fwd.derivatives
    L = net.depth
    t = [None] * (L + 1)
    t[L] = np.asarray(target, dtype=float)
    for layer in range(L, 1, -1):
        w, b = net.weights[layer - 1], net.biases[layer - 1]
        n = w.shape[0]
        eps = gamma * A[layer - 1] ** 2 if rule == "gait" else (gamma if rule == "itp" else 1.0)
        mixed = (1 - eps) * y[layer] + eps * t[layer]
        below = y[layer - 1].copy()
        below[:, :n] = np.linalg.solve(w, (f.inverse(mixed) - b).T).T
        t[layer - 1] = below
    dW, db = [], []
    for layer in range(1, L + 1):
        scale = 1.0 if rule == "tp" else gamma ** -(L - layer)
        e = scale * A[layer - 1] * (t[layer] - y[layer])
        n = net.weights[layer - 1].shape[0]
        dW.append(e.T @ y[layer - 1][:, :n] / x.shape[0])
        db.append(e.mean(axis=0))
    return dW, db


def linear_circuit_system(net, spec, x, target):
    """A linear circuit's deviation dynamics, tau dd/dt = (M - I) d + n, per sample: [(M, n)] over the batch.

    With f = identity, d = r - y stacked over layers 1..L: M holds the forward blocks
    (1 - k_l) W_l below the diagonal and the feedback blocks k_l W_{l+1}^-1 above it; n is
    the output's nudge k_L (t - y_L).  Layers must have one width.
    """
    fwd = net.forward(x)
    k = spec.couplings(fwd.derivatives)
    n, L = net.widths[1], net.depth
    out = []
    for s in range(x.shape[0]):
        M = np.zeros((n * L, n * L))
        drive = np.zeros(n * L)
        for i in range(L):
            rows = slice(i * n, (i + 1) * n)
            if i > 0:
                M[rows, (i - 1) * n: i * n] = (1 - k[i][s])[:, None] * net.weights[i]
            if i < L - 1:
                M[rows, (i + 1) * n: (i + 2) * n] = k[i][s][:, None] * np.linalg.inv(net.weights[i + 1])
        drive[(L - 1) * n:] = k[L - 1][s] * (target[s] - fwd.rates[L][s])
        out.append((M, drive))
    return out


#: The configuration of the runs :func:`write_run` writes.
TRAIN_RUN_CONFIG = {"dataset": "fashion_mnist", "widths": [784, 784, 10], "epochs": 4, "batch": 60, "regulariser": 0.0,
          "seed": 0}


def write_run(path, rule, accuracies, finished, regulariser=0.0, steps_per_epoch=1000):
    """A run directory as ``train`` leaves it: metrics.csv, and summary.json (finished) or checkpoint.npz."""
    path.mkdir()
    config = {**TRAIN_RUN_CONFIG, "rule": rule, "regulariser": regulariser}
    with open(path / "metrics.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "step", "split", "metric", "value"])
        for epoch, value in enumerate(accuracies):
            step = epoch * steps_per_epoch
            writer.writerow([epoch, step, "test", "accuracy", value])
            if epoch:
                writer.writerow([epoch, step, "train_running", "accuracy", value])
    if finished:
        (path / "summary.json").write_text(json.dumps({"experiment": "train", "config": config}))
    else:
        np.savez(path / "checkpoint.npz", meta=np.array(json.dumps({"config": config, "epoch": len(accuracies) - 1})))
    return path
