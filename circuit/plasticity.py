"""The local plasticity rule at steady state, shared by every engine.

Each engine supplies per-neuron errors scaled by ``S_l = prod_{j=l..L} 1/gamma_j``:
"gait" mode ``S_l (u_l - h_l)`` (somatic minus basal potential), "itp" mode
``S_l f'(h0_l) (r_l - phi_l)``; the update is the error times the presynaptic rate::

    dW_l = S_l e_l^T r_{l-1}[:, :n_l] / batch,      db_l = mean(S_l e_l)

This converges to the discrete GAIT-prop (ITP) update as gamma -> 0.
"""

from __future__ import annotations

import numpy as np

from models.deprecation import renamed_getattr
from models.rules import plasticity_step

__all__ = ["steady_state_updates"]

#: Former names -> new names; the old ones warn until 0.3.0 (see :mod:`models.rules`).
RENAMED = {"updates_from_errors": "steady_state_updates"}
__getattr__ = renamed_getattr(__name__, RENAMED)


def steady_state_updates(spec, scaled_errors: list, presynaptic: list) -> tuple[list, list]:
    """Batch-mean (dW, db) at a steady state, from its scaled errors [i] (batch, n_{i+1}) and presynaptic rates.

    ``presynaptic[i]`` of shape (batch, n_i); the errors broadcast to (batch, n_{i+1}).  The
    step itself is :func:`models.rules.plasticity_step`, the one of the discrete rules.
    """
    batch = presynaptic[0].shape[0]
    errors = [np.broadcast_to(e, (batch, w.shape[0])) for e, w in zip(scaled_errors, spec.network.weights)]
    return plasticity_step(errors, presynaptic, spec.network.weights)
