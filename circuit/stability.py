"""Linear stability of the circuit: the largest real part of the Jacobian's eigenvalues.

Linearising ``tau dr/dt = -r + (1 - k) phi + k psi`` at a state r gives, per sample,
a block-tridiagonal Jacobian (units of 1/tau)::

    dF_l/dr_l     = -I
    dF_l/dr_{l-1} = (1 - k_l) diag(f'(h_l)) W_l                         (first n_l units of l-1)
    dF_l/dr_{l+1} = diag(k_l) W_{l+1}^-1 diag(1 / f'(f^-1(r_{l+1})))    (rows: first n_{l+1} units of l)

with the spec's feedback weights ``Q_{l+1}`` in place of ``W_{l+1}^-1`` where it has them.

The output's nudge is a constant and adds no block.  The state is stable when every
eigenvalue has a negative real part.  Small systems are solved densely, larger ones
with ARPACK on the matrix-free operator.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse.linalg

__all__ = ["jacobian_blocks", "largest_real_eigenvalue"]

DENSE_LIMIT = 1500


def jacobian_blocks(spec, x, rates=None):
    """Per-layer forward and feedback Jacobian blocks for every sample.

    Returns (fwd, fb): fwd[i] of shape (batch, n_{i+1}, n_{i+1}) for layer i+1 (None for layer 1,
    the input is clamped), fb[i] of shape (batch, n_{i+2}, n_{i+2}) for layers 1..L-1.
    """
    net = spec.network
    act = net.activation
    free = net.forward(x)
    k = spec.couplings(free.derivatives)
    r = [x] + (list(rates) if rates is not None else free.rates[1:])
    fwd, fb = [], []
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        n = w.shape[0]
        if i == 0:
            fwd.append(None)
        else:
            a = act.derivative(r[i][:, :n] @ w.T + b)
            fwd.append((1 - k[i])[:, :, None] * a[:, :, None] * w[None])
        if i < net.depth - 1:
            w_up = net.weights[i + 1]
            m = w_up.shape[0]
            inv = np.linalg.inv(w_up) if spec.feedback_matrix(i + 1) is None else spec.feedback_matrix(i + 1)
            gain = 1.0 / act.derivative(act.inverse(r[i + 2]))
            fb.append(k[i][:, :m, None] * inv[None] * gain[:, None, :])
    return fwd, fb


def largest_real_eigenvalue(spec, x, rates=None) -> np.ndarray:
    """Largest real part of the Jacobian's eigenvalues per sample (units of 1/tau), shape (batch,)."""
    x = spec.network.check_input(x)
    fwd, fb = jacobian_blocks(spec, x, rates)
    widths = spec.widths[1:]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    total = int(offsets[-1])
    out = np.empty(x.shape[0])
    for s in range(x.shape[0]):
        if total <= DENSE_LIMIT:
            jac = -np.eye(total)
            for i in range(len(widths)):
                if fwd[i] is not None:
                    n = fwd[i].shape[1]
                    jac[offsets[i]: offsets[i] + n, offsets[i - 1]: offsets[i - 1] + n] = fwd[i][s]
                if i < len(fb):
                    m = fb[i].shape[1]
                    jac[offsets[i]: offsets[i] + m, offsets[i + 1]: offsets[i + 1] + m] = fb[i][s]
            out[s] = np.max(scipy.linalg.eigvals(jac).real)
        else:
            out[s] = _arpack(fwd, fb, offsets, s)
    return out


def _arpack(fwd, fb, offsets, s):
    total = int(offsets[-1])

    def matvec(v):
        v = np.ravel(v)
        y = -v.copy()
        for i in range(len(offsets) - 1):
            if fwd[i] is not None:
                n = fwd[i].shape[1]
                y[offsets[i]: offsets[i] + n] += fwd[i][s] @ v[offsets[i - 1]: offsets[i - 1] + n]
            if i < len(fb):
                m = fb[i].shape[1]
                y[offsets[i]: offsets[i] + m] += fb[i][s] @ v[offsets[i + 1]: offsets[i + 1] + m]
        return y

    op = scipy.sparse.linalg.LinearOperator((total, total), matvec=matvec, dtype=float)
    vals = scipy.sparse.linalg.eigs(op, k=1, which="LR", return_eigenvectors=False, maxiter=5000, tol=1e-8)
    return float(np.max(vals.real))
