"""The local plasticity rule at steady state, shared by every engine.

Each engine supplies per-neuron errors scaled by ``S_l = prod_{j=l..L} 1/gamma_j``:
"gait" mode ``S_l (u_l - h_l)`` (somatic minus basal potential), "itp" mode
``S_l f'(h0_l) (r_l - phi_l)``; the update is the error times the presynaptic rate::

    dW_l = S_l e_l^T r_{l-1}[:, :n_l] / batch,      db_l = mean(S_l e_l)

This converges to the discrete GAIT-prop (ITP) update as gamma -> 0.
"""

from __future__ import annotations

import numpy as np

from models.rules import batch_mean_updates

__all__ = ["updates_from_errors"]


def updates_from_errors(spec, scaled_errors: list, presynaptic: list) -> tuple[list, list]:
    """Batch-mean (dW, db) from scaled errors [i] (batch, n_{i+1}) and presynaptic rates [i] (batch, n_i)."""
    batch = presynaptic[0].shape[0]
    errors = [np.broadcast_to(e, (batch, w.shape[0])) for e, w in zip(scaled_errors, spec.network.weights)]
    return batch_mean_updates(errors, presynaptic, spec.network.weights)
