"""Learning rules of the paper: BP (Eq. 3), TP (Eq. 4-5), ITP (Eq. 12-13), GAIT-prop (Alg. 1, Eq. 16-18).

All rules return *descent directions* (the change per unit learning rate),
averaged over the batch: ``dW[i]`` for ``weights[i]`` (layer i+1).

Scaled target deviations
------------------------
Alg. 1 computes the targets ``t_l`` and then the errors ``gamma^-(L-l) (t_l - y_l)``.
The deviation ``t_l - y_l`` shrinks like ``gamma^(L-l)``; formed as a difference
of absolute activities it is lost to float64 rounding in deep networks (already
with 5 hidden layers at gamma = 1e-3).  We propagate the *scaled* deviation

    delta_l = S_l (t_l - y_l),        S_l = prod_{j=l+1..L} 1/gamma_j   (S_L = 1)

which is O(1), through the exact recursion (f^-1 increments evaluated piecewise,
see :mod:`models.activations`)::

    delta_l[:n_{l+1}] = W_{l+1}^-1 [ S_l (f^-1(y_{l+1} + eps_{l+1} D_{l+1}) - f^-1(y_{l+1})) ]
    delta_l[n_{l+1}:] = 0                                      (auxiliary units)

with ``D_{l+1} = delta_{l+1} / S_{l+1}`` and ``eps = gamma A^2`` (GAIT), ``gamma``
(ITP), or 1 with all scales 1 (TP, t_{l-1} = g^-1(t_l)).  This is Alg. 1 rewritten
without approximation: only the order of floating-point operations changes.
The weight update is then ``A_l delta_l y_{l-1}^T`` (batch mean).

Names of the updates
--------------------
Every function that returns updates ``(dW, db)`` says where they come from:

- :func:`updates`: the entry point for users, from plain arrays (weights, biases, a batch,
  its target and a rule name);
- :func:`rule_updates`: the updates of a rule on a :class:`~models.network.Network` (also
  returns the forward pass); :func:`circuit.plasticity.steady_state_updates` is the circuit's
  counterpart, from the errors at its nudged steady state;
- ``updates_from_<input>`` from a result the caller already holds:
  :func:`updates_from_targets` (layer-wise :class:`Targets`), :func:`updates_from_signals`
  (per-sample error signals at a forward pass); ``updates_with_<part>`` for a rule with a
  part replaced: :func:`models.feedback.updates_with_feedback` (feedback weights in place
  of the inverses);
- :func:`plasticity_step`: the local rule all of them end in, error times presynaptic
  rate, batch mean.

The former names (:data:`RENAMED`) still work and warn until 0.3.0
(:mod:`models.deprecation`).

Precision
---------
Every rule computes in its network's dtype (``Network(dtype="float32")``: the forward
pass, the LU factors and solves, the scaled deviations and the updates in float32).
The scaled deviations are O(1) numbers in either type, so a float32 target deviation
``t_l - y_l = delta_l / S_l`` keeps a relative error of about float32 rounding times the
weights' conditioning, however large ``S_l`` (S_1 = 1e12 at gamma 1e-3 and 4 hidden layers),
not ``S_l`` times it as the absolute targets ``t_l`` would (``Targets.targets`` forms
them, lossy in either type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .activations import get_activation
from .deprecation import renamed_getattr
from .errors import ValidationError
from .network import DirectInverse, ForwardPass, Network, check_finite_result
from .validation import check_array, check_choice, check_gamma, layer_scales

__all__ = ["RULES", "Targets", "layer_gammas", "compute_targets", "error_signals", "bp_error_signals",
           "plasticity_step", "updates_from_signals", "updates_from_targets", "backprop", "rule_updates", "updates"]

RULES = ("bp", "tp", "itp", "gait")

#: Former names -> new names; the old ones warn until 0.3.0 (module docstring).
RENAMED = {"compute_updates": "rule_updates", "weight_updates": "updates_from_signals",
           "target_updates": "updates_from_targets", "batch_mean_updates": "plasticity_step",
           "check_updates_finite": "check_finite_updates"}
__getattr__ = renamed_getattr(__name__, RENAMED)


def layer_gammas(gamma, depth: int) -> np.ndarray:
    """Per-layer increments gamma_1..gamma_L of the discrete rules, each in (0, 1].

    gamma_l is the increment applied at layer l: the discrete rules use gamma_2..gamma_L
    (layer 1's target is never propagated further down); the circuit uses all of them.
    """
    return check_gamma(gamma, depth, allow_one=True)


@dataclass
class Targets:
    """Layer-wise targets of a target-propagation rule, kept as scaled deviations.

    Attributes
    ----------
    rule : str
    forward : ForwardPass
    scaled_deviations : list of ndarray, [i] of shape (batch, n_{i+1})
        ``S_l (t_l - y_l)`` for layer l = i+1; O(1) numbers.
    scales : ndarray of shape (L,)
        ``S_l``; the error of layer l in Alg. 1 is ``S_l (y_l - t_l)``.
    """

    rule: str
    forward: ForwardPass
    scaled_deviations: list
    scales: np.ndarray

    @property
    def deviations(self) -> list:
        """``t_l - y_l`` (accurate to relative float64 precision, however small)."""
        return [d / s for d, s in zip(self.scaled_deviations, self.scales)]

    @property
    def targets(self) -> list:
        """The absolute targets ``t_l`` (l = 1..L).  Lossy: ``y_l + (t_l - y_l)`` rounds."""
        return [y + d for y, d in zip(self.forward.rates[1:], self.deviations)]


def _check_target(net: Network, target, batch: int) -> np.ndarray:
    return check_array("target", target, (batch, net.widths[-1]),
                       hint=f"pass the full output target of all {net.widths[-1]} output units "
                            "(auxiliary outputs carry their forward values)", dtype=net.dtype)


def compute_targets(net: Network, fwd: ForwardPass, target, rule: str, gamma=1e-3,
                    inverse=None) -> Targets:
    """Layer-wise targets for rule "tp", "itp" or "gait" (see the module docstring).

    ``inverse`` applies W^-1 (default :class:`~models.network.DirectInverse`).
    """
    if rule not in ("tp", "itp", "gait"):
        raise ValidationError(f"rule: expected 'tp', 'itp' or 'gait' for layer-wise targets, got {rule!r}")
    inverse = inverse or DirectInverse()
    L = net.depth
    y, A = fwd.rates, fwd.derivatives
    target = _check_target(net, target, y[0].shape[0])
    gammas = np.ones(L) if rule == "tp" else layer_gammas(gamma, L)
    act = net.activation
    scales = np.ones(L)  # S_l of the discrete rule: prod_{j=l+1..L} 1/gamma_j (S_L = 1)
    scales[:-1] = layer_scales(gammas)[1:]
    deltas = [None] * L
    prepared = prepare_inverses(net, rule, inverse)
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported once, below
            deltas[L - 1] = target - y[L]
            for i in range(L - 2, -1, -1):  # layer l = i+1 receives from layer l+1 = i+2 via weights[i+1]
                upper = deltas[i + 1]
                increment = upper * A[i + 1] ** 2 if rule == "gait" else upper
                u = act.inverse_increment(y[i + 2], increment, scales[i])
                w = net.weights[i + 1]
                d = np.zeros_like(y[i + 1])
                d[:, : w.shape[0]] = inverse.solve(i + 1, w, u)
                deltas[i] = d
    finally:
        if prepared:
            inverse.discard()
    check_finite_result(f"targets of rule {rule!r}",
                        [(f"the scaled target deviations of layer {i + 1}", d) for i, d in enumerate(deltas)],
                        lambda: overflow_hint(fwd, target))
    return Targets(rule, fwd, deltas, scales)


def overflow_hint(fwd: ForwardPass, target) -> str:
    """What to do when a rule's result overflowed its floating-point type (built on the error path only)."""
    return (f"{fwd.rates[-1].dtype.name} overflowed (largest |x| = {np.max(np.abs(fwd.rates[0])):.3g}, "
            f"largest output rate {np.max(np.abs(fwd.rates[-1])):.3g}, "
            f"largest |target| = {np.max(np.abs(target)):.3g}): "
            "scale the inputs (and targets) to O(1), e.g. x / x.std()")


def prepare_inverses(net: Network, rule: str, inverse) -> bool:
    """Start factorising the layers a target rule inverts (top layer first) where ``inverse`` can.

    Returns whether it did; the caller then owes ``inverse.discard()``.  Calling it again for
    the same weights keeps the factorisations under way (:meth:`DirectInverse.prepare`).
    """
    prepare = getattr(inverse, "prepare", None)
    if rule not in ("tp", "itp", "gait") or prepare is None:
        return False
    prepare(net.weights, range(net.depth - 1, 0, -1))
    return True


def forward_factorising(net: Network, x, rule: str, inverse) -> ForwardPass:
    """``net.forward(x)``, with the factorisations of :func:`prepare_inverses` started first to overlap it.

    The caller goes on to :func:`compute_targets` (which discards them) with the same weights.
    """
    prepared = prepare_inverses(net, rule, inverse)
    try:
        return net.forward(x)
    except BaseException:
        if prepared:
            inverse.discard()
        raise


def error_signals(targets: Targets) -> list:
    """Per-sample error signals ``A_l S_l (t_l - y_l)`` of a target rule, [i] of shape (batch, n_{i+1})."""
    return [a * d for a, d in zip(targets.forward.derivatives, targets.scaled_deviations)]


def bp_error_signals(net: Network, fwd: ForwardPass, target) -> list:
    """Per-sample BP error signals ``-dLoss/dh_l`` (quadratic loss on ``target``), as in Eq. 3."""
    y, A = fwd.rates, fwd.derivatives
    target = _check_target(net, target, y[0].shape[0])
    L = net.depth
    signals = [None] * L
    g = A[L - 1] * (target - y[L])
    for i in range(L - 1, -1, -1):
        signals[i] = g
        if i > 0:
            n = net.weights[i].shape[0]
            back = signals[i] @ net.weights[i]
            if n == y[i].shape[1]:
                g = back
                g *= A[i - 1]
            else:  # auxiliary units of layer i get no error
                g = np.zeros_like(y[i])
                g[:, :n] = A[i - 1][:, :n] * back
    return signals


def plasticity_step(signals: list, presynaptic: list, weights: list) -> tuple[list, list]:
    """The local plasticity rule of every rule and engine: batch means of error times presynaptic rate.

    ``dW_l = e_l^T r_{l-1}[:, :n_l] / batch`` and ``db_l = mean(e_l)``, from per-sample error
    signals [i] (batch, n_{i+1}) and presynaptic rates [i] (batch, n_i) of layers 1..L.
    Returns the changes per unit learning rate; it does not apply them.
    """
    batch = presynaptic[0].shape[0]
    # Scale the (batch, n) signal rather than the (n, n) product: one pass less over n^2.
    dW = [(e / batch).T @ r[:, : w.shape[0]] for e, r, w in zip(signals, presynaptic, weights)]
    db = [e.mean(axis=0) for e in signals]
    return dW, db


def updates_from_signals(net: Network, fwd: ForwardPass, signals: list) -> tuple[list, list]:
    """Updates from per-sample error signals ``e_l`` at the forward pass ``fwd`` (:func:`plasticity_step`).

    Batch means ``dW_l = e_l^T y_{l-1}[:, :n_l] / batch`` and ``db_l = mean(e_l)``.
    """
    return plasticity_step(signals, fwd.rates, net.weights)


def updates_from_targets(net: Network, targets: Targets) -> tuple[list, list]:
    """Descent directions of a target rule from its layer-wise targets (Eq. 4, 13, 18).

    ``dW_l = A_l S_l (t_l - y_l) y_{l-1}^T`` (batch mean), through :func:`updates_from_signals`.
    """
    return updates_from_signals(net, targets.forward, error_signals(targets))


def backprop(net: Network, fwd: ForwardPass, target) -> tuple[list, list]:
    """BP descent directions (Eq. 3) for the quadratic loss 1/2 |y_L - t|^2 (batch mean).

    For any other loss pass the constructed target ``t = y_L - dL/dy_L`` (section 5).
    """
    return updates_from_signals(net, fwd, bp_error_signals(net, fwd, target))


def rule_updates(net: Network, x, target, rule: str, gamma=1e-3, inverse=None, fwd: ForwardPass | None = None):
    """Descent directions (dW, db) of ``rule`` for a batch; also returns the forward pass.

    Pass ``fwd`` (``net.forward(x)``) if it is already computed, e.g. to build the target.
    Raises :class:`~models.errors.NonFiniteError` if the forward pass, the targets or the
    updates overflow float64 (each result is checked once, at the end of its computation).
    """
    check_choice("rule", rule, RULES)
    fwd = forward_factorising(net, x, rule, inverse) if fwd is None else fwd
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported once, below
        # backprop() and updates_from_targets() written out, to check the error signals on the way
        if rule == "bp":
            signals = bp_error_signals(net, fwd, target)
        else:
            signals = error_signals(compute_targets(net, fwd, target, rule, gamma, inverse))
        dW, db = updates_from_signals(net, fwd, signals)
    check_finite_updates(net, rule, fwd, target, signals, dW, db)
    return dW, db, fwd


#: Error signals e and presynaptic rates r with max|e| * max(max|r|, batch) below this cannot
#: overflow float64 (largest 1.8e308) in the batch means: every partial sum of
#: ``(e / batch)^T r`` is at most max|e| max|r|, and of ``sum(e)`` at most batch max|e|.
SAFE_PRODUCT = 1e300


def check_finite_updates(net: Network, rule: str, fwd: ForwardPass, target, signals: list, dW: list,
                         db: list) -> None:
    """Raise NonFiniteError if the error signals or the updates of a batch overflowed float64.

    Reads the (batch, n) signals and rates; an (n, n) ``dW`` only when the bound
    :data:`SAFE_PRODUCT` does not already guarantee that it is finite.
    """
    what = f"updates of rule {rule!r}"

    def hint():
        return overflow_hint(fwd, target)

    check_finite_result(what, [(f"the error signals of layer {i + 1}", e) for i, e in enumerate(signals)], hint)
    batch = fwd.rates[0].shape[0]
    for i, (e, r, w) in enumerate(zip(signals, fwd.rates, net.weights)):
        # Python floats: an overflowing bound is inf, without a warning
        bound = float(np.max(np.abs(e))) * max(float(np.max(np.abs(r[:, : w.shape[0]]))), batch)
        if not bound < SAFE_PRODUCT:  # (NaN included) the products may have overflowed: look at them
            check_finite_result(what, [(f"dW[{i}] (layer {i + 1})", dW[i]), (f"db[{i}] (layer {i + 1})", db[i])],
                                hint)


def updates(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray], x, target, rule: str,
            gamma=1e-3, activation: str = "leaky_relu", negative_slope: float = 0.1):
    """Weight and bias changes per unit learning rate of BP, TP, ITP or GAIT-prop.

    Parameters
    ----------
    weights : list of ndarray, weights[i] of shape (n_{i+1}, n_{i+1})
        Maps the first n_{i+1} units of layer i to layer i+1: ``h = r[:, :n] @ W.T + b``.
    biases : list of ndarray, biases[i] of shape (n_{i+1},)
    x : ndarray of shape (batch, n_0)
    target : ndarray of shape (batch, n_L)
        Full output target; auxiliary outputs carry their forward values.  For a
        loss other than the quadratic one use ``models.losses.constructed_target``.
    rule : {"bp", "tp", "itp", "gait"}
    gamma : float or sequence of L floats
        Increment (per layer allowed) for "itp" and "gait".
    activation : {"leaky_relu", "identity"}
    negative_slope : float
        Slope of the leaky ReLU for h <= 0, in (0, 1] (f must be invertible).

    Returns
    -------
    dW, db : lists of ndarray
        Batch means of the descent direction; GAIT/ITP errors at layer l are scaled
        by gamma^-(L-l) as in Alg. 1.

    Raises
    ------
    models.errors.ValidationError
        Bad input (an empty batch, wrong shapes, NaN or infinite values, a gamma or
        negative_slope out of range); the message names the argument.
    models.errors.NonFiniteError
        Finite inputs so large that the forward pass, the targets or the updates
        overflow float64; the message names which.
    models.errors.SingularWeightsError
        TP, ITP or GAIT-prop with a weight matrix that cannot be inverted reliably.
    """
    if len(weights) == 0:
        raise ValidationError("weights: expected at least one layer, got an empty list")
    n1 = np.shape(weights[0])[0]
    x = check_array("x", x, (None, None), hint=f"pass a batch (batch, n_0) with n_0 >= {n1}")
    if x.shape[1] < n1:
        raise ValidationError(f"x: expected shape (batch, n_0) with n_0 >= {n1} (weights[0] acts on the "
                              f"first {n1} input units), got {x.shape}")
    n0 = x.shape[1]
    net = Network(list(weights), list(biases), n0, activation=get_activation(activation, negative_slope))
    dW, db, _ = rule_updates(net, x, target, rule, gamma)
    return dW, db

