"""The exact discrete reference: invertible networks and the BP, TP, ITP and GAIT-prop rules.

Pure numpy/scipy; never imports circuit/.  The public entry point is
:func:`models.updates`; see README.md.
"""

from . import errors, io, validation
from .activations import Activation, Identity, LeakyReLU, get_activation
from .errors import (
    CheckpointError,
    ConvergenceError,
    DataFormatError,
    DivergenceError,
    GaitCircuitError,
    NonFiniteError,
    SingularWeightsError,
    ValidationError,
)
from .feedback import (
    FeedbackWeights,
    LearnedFeedback,
    TransposedFeedback,
    exact_inverses,
    feedback_targets,
    feedback_updates,
    inverse_errors,
    perturbed_inverses,
    reconstruction_errors,
    transposed_weights,
)
from .io import load_network, save_network
from .losses import LOSSES, constructed_target, loss_gradient, loss_value, one_hot
from .network import DirectInverse, ForwardPass, Network, init_network, orthogonal, xavier_normal
from .optimizers import Adam
from .regularizer import orthogonality_gradient, orthogonality_penalty
from .rules import (
    RULES,
    Targets,
    backprop,
    batch_mean_updates,
    bp_error_signals,
    compute_targets,
    compute_updates,
    error_signals,
    layer_gammas,
    target_updates,
    updates,
    weight_updates,
)
from .validation import check_gamma, layer_scales

__all__ = [
    "Activation", "Identity", "LeakyReLU", "get_activation",
    "LOSSES", "constructed_target", "loss_gradient", "loss_value", "one_hot",
    "errors", "io", "validation", "GaitCircuitError", "ValidationError", "NonFiniteError", "CheckpointError",
    "ConvergenceError", "DivergenceError", "DataFormatError", "save_network", "load_network",
    "DirectInverse", "ForwardPass", "Network", "SingularWeightsError", "init_network",
    "orthogonal", "xavier_normal", "Adam", "orthogonality_gradient", "orthogonality_penalty",
    "RULES", "Targets", "backprop", "batch_mean_updates", "bp_error_signals", "compute_targets", "error_signals",
    "weight_updates", "compute_updates", "layer_gammas", "target_updates", "updates", "check_gamma", "layer_scales",
    "FeedbackWeights", "LearnedFeedback", "exact_inverses", "feedback_targets", "feedback_updates", "inverse_errors",
    "perturbed_inverses", "reconstruction_errors", "transposed_weights", "TransposedFeedback",
]
