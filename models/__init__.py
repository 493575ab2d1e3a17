"""The exact discrete reference: invertible networks and the BP, TP, ITP and GAIT-prop rules.

Pure numpy/scipy; never imports circuit/.  The public entry point is
:func:`models.updates`; see README.md.  The other functions that return updates are named
after where the updates come from (:mod:`models.rules`); their former names warn
until 0.3.0.
"""

from . import errors, feedback, io, rules, validation
from .activations import Activation, Identity, LeakyReLU, get_activation
from .deprecation import renamed_getattr
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
    inverse_errors,
    perturbed_inverses,
    reconstruction_errors,
    transposed_weights,
    updates_with_feedback,
)
from .io import load_network, save_network
from .losses import LOSSES, constructed_target, loss_gradient, loss_value, one_hot
from .network import DirectInverse, ForwardPass, Network, init_network, orthogonal, xavier_normal
from .optimizers import Adam
from .regulariser import orthogonality_gradient, orthogonality_penalty
from .rules import (
    RULES,
    Targets,
    backprop,
    bp_error_signals,
    compute_targets,
    error_signals,
    layer_gammas,
    plasticity_step,
    rule_updates,
    updates,
    updates_from_signals,
    updates_from_targets,
)
from .validation import check_gamma, layer_scales

__all__ = [
    "Activation", "Identity", "LeakyReLU", "get_activation",
    "LOSSES", "constructed_target", "loss_gradient", "loss_value", "one_hot",
    "errors", "io", "validation", "GaitCircuitError", "ValidationError", "NonFiniteError", "CheckpointError",
    "ConvergenceError", "DivergenceError", "DataFormatError", "save_network", "load_network",
    "DirectInverse", "ForwardPass", "Network", "SingularWeightsError", "init_network",
    "orthogonal", "xavier_normal", "Adam", "orthogonality_gradient", "orthogonality_penalty",
    "RULES", "Targets", "backprop", "plasticity_step", "bp_error_signals", "compute_targets", "error_signals",
    "updates_from_signals", "rule_updates", "layer_gammas", "updates_from_targets", "updates", "check_gamma",
    "layer_scales", "FeedbackWeights", "LearnedFeedback", "exact_inverses", "feedback_targets",
    "updates_with_feedback", "inverse_errors", "perturbed_inverses", "reconstruction_errors", "transposed_weights",
    "TransposedFeedback",
]

# The former names this package exported warn until 0.3.0 (models.rules, models.feedback).
__getattr__ = renamed_getattr(__name__, {old: new for old, new in {**rules.RENAMED, **feedback.RENAMED}.items()
                                         if new in __all__})
