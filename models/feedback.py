"""Feedback weights that are not the exact inverse: given, perturbed, transposed or learned.

The target rules (TP, ITP, GAIT-prop) propagate a target down through the layer inverse
``g_l(u) = W_l^-1 (u - b_l)``.  Here the inverse is replaced by feedback matrices ``Q_l``
(``docs/imperfect_inverses.md`` derives what changes; ``rho_l = (Q_{l+1} W_{l+1} - I) y_l``
is the reconstruction error of the forward pass).  Two readings of Alg. 1 differ once
``Q_l W_l != I``:

``form="difference"``
    ``t_l = y_l + Q_{l+1} (f^-1(t~_{l+1}) - f^-1(y_{l+1}))`` with ``t~ = y + eps (t - y)``:
    the feedback acts on the increment only (difference target propagation, Lee, Zhang,
    Fischer & Bengio 2015).  This is :func:`models.compute_targets` with
    ``inverse=FeedbackWeights(...)``; the reconstruction error cancels, and the update's
    error is first order in the inverse's error and independent of gamma.
``form="absolute"``
    ``t_l = Q_{l+1} (f^-1(t~_{l+1}) - b_{l+1})``: Alg. 1 as written, and what the circuit's
    steady state computes (its feedback drive is ``Q (u - b)``).  The deviation gains
    ``rho_l``, which does not shrink with gamma, so its share of the scaled deviation
    ``S_l (t_l - y_l)`` grows like ``prod_{j>l} 1/gamma_j``.

With every ``Q_l`` the exact inverse (``None`` entries) both forms are the exact rules,
and the difference form is bit-identical to the default :class:`~models.network.DirectInverse`.

:class:`LearnedFeedback` learns the ``Q_l`` from the network's own activity with a local
denoising rule and plugs into training as an ``update(net, x, target, fwd)`` hook.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .deprecation import renamed_getattr
from .errors import NonFiniteError, ValidationError
from .network import DirectInverse, ForwardPass, Network
from .rules import compute_targets, layer_gammas, updates_from_targets
from .validation import check_array, check_choice, check_positive, float_dtype, layer_scales

__all__ = ["FORMS", "RECONSTRUCTIONS", "FeedbackWeights", "exact_inverses", "perturbed_inverses",
           "transposed_weights", "inverse_errors", "reconstruction_errors", "feedback_targets", "updates_with_feedback",
           "LearnedFeedback", "TransposedFeedback"]

#: How a target rule reads the feedback (module docstring).
FORMS = ("difference", "absolute")
#: What :class:`LearnedFeedback` reconstructs: the corrupted rates, or the corruption alone.
RECONSTRUCTIONS = ("rates", "perturbation")

#: Former names -> new names; the old ones warn until 0.3.0 (see :mod:`models.rules`).
RENAMED = {"feedback_updates": "updates_with_feedback"}
__getattr__ = renamed_getattr(__name__, RENAMED)


def _check_square(name: str, value, hint: str) -> np.ndarray:
    shape = np.shape(value)
    n = shape[0] if len(shape) == 2 else None
    return check_array(name, value, (n, n), hint=hint, dtype=float_dtype(value))


class FeedbackWeights:
    """Applies feedback matrices ``Q_l`` where the target rules apply ``W_l^-1``.

    Implements the ``inverse`` contract of :func:`models.compute_targets`:
    ``solve(i, w, u)`` returns ``u @ Q_i.T`` (each row ``Q_i u``) for ``w = weights[i]``.

    Parameters
    ----------
    matrices : sequence of L entries, [i] an ndarray of shape (n_{i+1}, n_{i+1}) or None
        ``Q`` of layer ``i+1`` (the feedback from layer i+1 to the first n_{i+1} units of
        layer i).  ``None`` applies the exact inverse there (``exact.solve``).  The target
        rules never use ``matrices[0]`` (no target is propagated below layer 1).  The arrays
        are held, not copied: changing them in place (as :class:`LearnedFeedback` does)
        changes the feedback.
    exact : DirectInverse, optional
        Solves the layers whose entry is None (default ``DirectInverse()``).
    """

    def __init__(self, matrices: Sequence[np.ndarray | None], exact: DirectInverse | None = None):
        if isinstance(matrices, np.ndarray) or len(matrices) == 0:
            raise ValidationError("matrices: expected a list with one feedback matrix (or None) per layer, "
                                  f"got {type(matrices).__name__} of length {len(matrices)}")
        self.matrices = [None if q is None else _check_square(
            f"feedback[{i}]", q, f"layer {i + 1}'s feedback is a square (n_{i + 1}, n_{i + 1}) matrix")
            for i, q in enumerate(matrices)]
        self.exact = exact or DirectInverse()

    @property
    def depth(self) -> int:
        return len(self.matrices)

    def check(self, net: Network) -> "FeedbackWeights":
        """Raise a ValidationError unless there is one entry per layer of ``net``, shaped like its weights."""
        if self.depth != net.depth:
            raise ValidationError(f"feedback: expected {net.depth} entries (one per layer of the network), "
                                  f"got {self.depth}")
        for i, (q, w) in enumerate(zip(self.matrices, net.weights)):
            self._check_layer(i, q, w)
        return self

    @staticmethod
    def _check_layer(index: int, q, w) -> None:
        if q is not None and q.shape != w.shape:
            raise ValidationError(f"feedback[{index}] (layer {index + 1}): expected shape {w.shape} like "
                                  f"weights[{index}], got {q.shape}")

    def solve(self, index: int, w: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``u @ Q_index.T``: the feedback of layer ``index + 1`` applied to each row of ``u``."""
        if not 0 <= index < self.depth:
            raise ValidationError(f"feedback: expected a matrix for layer {index + 1}, got {self.depth} "
                                  "entries (one per layer)")
        q = self.matrices[index]
        if q is None:
            return self.exact.solve(index, w, u)
        self._check_layer(index, q, w)
        return u @ q.T

    def prepare(self, weights: Sequence[np.ndarray], indices) -> None:
        """Start the exact inverses' factorisations (layers whose entry is None), as DirectInverse does."""
        self.exact.prepare(weights, [i for i in indices if self.matrices[i] is None])

    def discard(self) -> None:
        self.exact.discard()

    def copy(self) -> "FeedbackWeights":
        return FeedbackWeights([None if q is None else q.copy() for q in self.matrices], self.exact)


def _inverse(index: int, w: np.ndarray) -> np.ndarray:
    """``W^-1`` by the checked LU factorisation of the target rules (SingularWeightsError if badly conditioned)."""
    return DirectInverse().solve(index, w, np.eye(w.shape[0])).T


def exact_inverses(net: Network) -> FeedbackWeights:
    """Explicit matrices ``Q_l = W_l^-1`` for layers 2..L (layer 1's entry is None: never used)."""
    return FeedbackWeights([None] + [_inverse(i, w) for i, w in enumerate(net.weights) if i > 0])


def perturbed_inverses(net: Network, eps: float, seed: int = 0) -> FeedbackWeights:
    """``Q_l = W_l^-1 (I + eps E_l)`` for layers 2..L, ``E_l`` Gaussian scaled to spectral norm 1.

    The spectral norm makes ``eps`` the exact worst-case relative error of the feedback:
    ``Q_l`` is the exact inverse of ``u + eps E_l u``, and ``|eps E_l u| <= eps |u|`` for
    every ``u`` with equality along ``E_l``'s top singular vector (``||W_l Q_l - I||_2 = eps``),
    whatever the width (a Frobenius-normalised ``E`` would shrink like 1/sqrt(n) on a typical
    ``u``).  ``E_l`` comes from ``numpy.random.default_rng([seed, l])``.
    """
    eps = check_positive("eps", eps, allow_zero=True)
    matrices = [None]
    for i, w in enumerate(net.weights[1:], start=1):
        g = np.random.default_rng([seed, i + 1]).standard_normal(w.shape)
        e = g / np.linalg.norm(g, 2)
        inv = _inverse(i, w)
        matrices.append(inv + eps * (inv @ e))
    return FeedbackWeights(matrices)


def transposed_weights(net: Network) -> FeedbackWeights:
    """``Q_l = W_l^T`` for layers 2..L (exact only for orthogonal ``W_l``).

    The entries are views of the weights: they follow the weights as training changes them
    in place, so the feedback stays the transpose.
    """
    return FeedbackWeights([None] + [w.T for w in net.weights[1:]])


def inverse_errors(net: Network, feedback: FeedbackWeights, norm: str = "spectral") -> list:
    """``||Q_l W_l - I||`` per layer (None where the entry is None: the exact inverse).

    ``norm``: "spectral" (largest singular value; ``eps`` of :func:`perturbed_inverses`
    bounds it by ``eps cond(W_l)``) or "rms" (Frobenius norm / sqrt(n_l): the root mean square
    singular value, no SVD).
    """
    check_choice("norm", norm, ("spectral", "rms"))
    feedback.check(net)
    out = []
    for q, w in zip(feedback.matrices, net.weights):
        if q is None:
            out.append(None)
            continue
        m = q @ w
        m[np.diag_indices_from(m)] -= 1.0
        out.append(float(np.linalg.norm(m, 2) if norm == "spectral" else np.linalg.norm(m) / np.sqrt(len(m))))
    return out


def _target_scales(rule: str, gamma, depth: int) -> np.ndarray:
    """``S_l`` of the discrete rules (``prod_{j=l+1..L} 1/gamma_j``, S_L = 1), as compute_targets forms them."""
    gammas = np.ones(depth) if rule == "tp" else layer_gammas(gamma, depth)
    scales = np.ones(depth)
    scales[:-1] = layer_scales(gammas)[1:]
    return scales


def reconstruction_errors(net: Network, fwd: ForwardPass, feedback: FeedbackWeights) -> list:
    """``rho_l = Q_{l+1} W_{l+1} y_l - y_l`` on the units of layer l that receive feedback, 0 elsewhere.

    The feedback's reconstruction error of the forward pass, [i] of shape (batch, n_{i+1}) for
    layer l = i+1 (the output layer, which receives no feedback, gets zeros).  It is what the
    absolute form adds to the target deviation ``t_l - y_l`` and what moves the circuit's free
    phase off the forward pass (docs/imperfect_inverses.md, sections 2 and 3).
    """
    feedback.check(net)
    out = []
    for i in range(net.depth):
        rho = np.zeros_like(fwd.rates[i + 1])
        if i + 1 < net.depth:
            w = net.weights[i + 1]
            y = fwd.rates[i + 1][:, : w.shape[0]]
            rho[:, : w.shape[0]] = feedback.solve(i + 1, w, y @ w.T)
            rho[:, : w.shape[0]] -= y
        out.append(rho)
    return out


class _WithReconstructionError:
    """The absolute form through compute_targets' recursion: adds ``S_l rho_l`` to each solve."""

    def __init__(self, feedback: FeedbackWeights, residuals: list, scales: np.ndarray):
        self.feedback, self.residuals, self.scales = feedback, residuals, scales

    def solve(self, index: int, w: np.ndarray, u: np.ndarray) -> np.ndarray:
        x = self.feedback.solve(index, w, u)  # into layer `index` (weights[index - 1]), scale S = scales[index - 1]
        x += self.scales[index - 1] * self.residuals[index - 1][:, : w.shape[0]]
        return x


def feedback_targets(net: Network, fwd: ForwardPass, target, rule: str, gamma, feedback: FeedbackWeights,
                     form: str = "difference"):
    """Targets of ``rule`` ("tp", "itp", "gait") with feedback ``Q_l`` in place of ``W_l^-1``.

    Returns :class:`models.Targets` (scaled deviations ``S_l (t_l - y_l)``); ``form`` is
    "difference" or "absolute" (module docstring).  The difference form is exactly
    ``compute_targets(net, fwd, target, rule, gamma, inverse=feedback)``.
    """
    check_choice("form", form, FORMS)
    feedback.check(net)
    if form == "difference":
        return compute_targets(net, fwd, target, rule, gamma, feedback)
    scales = _target_scales(check_choice("rule", rule, ("tp", "itp", "gait")), gamma, net.depth)
    residuals = reconstruction_errors(net, fwd, feedback)
    return compute_targets(net, fwd, target, rule, gamma, _WithReconstructionError(feedback, residuals, scales))


def updates_with_feedback(net: Network, fwd: ForwardPass, target, rule: str, gamma, feedback: FeedbackWeights,
                          form: str = "difference") -> tuple[list, list]:
    """Descent directions (dW, db) of ``rule`` with feedback ``Q_l`` in place of the inverses.

    The targets are :func:`feedback_targets`; the updates are those of the network's weights,
    computed with the feedback weights (the feedback weights themselves are learned by
    :class:`LearnedFeedback`).
    """
    return updates_from_targets(net, feedback_targets(net, fwd, target, rule, gamma, feedback, form))


class LearnedFeedback:
    """Training with feedback weights learned by a local denoising rule; an ``update=`` hook.

    Each call (one batch) first takes one step of the feedback rule on the batch's forward
    pass (the free phase), then returns the rule's descent directions computed with the
    current ``Q_l`` (:func:`updates_with_feedback`).  For every layer l = 2..L::

        y~  = y_{l-1}[:, :n_l] + noise * xi           (xi standard normal, seeded)
        z   = y~ W_l^T                                 (layer l's potential minus its bias)
        rec = z Q_l^T                                  (reconstruction of layer l-1 through the feedback)
        Q_l <- Q_l + learning_rate / m * (x~ - rec)^T z / batch

    with ``x~ = y~`` (``reconstruct="rates"``: the denoising reconstruction of target
    propagation, Bengio 2014; Lee, Zhang, Fischer & Bengio 2015) or, with
    ``reconstruct="perturbation"``, ``y~ = x~ = noise * xi``: the reconstruction of the
    perturbation alone, which is the difference reconstruction loss of Meulemans et al. 2020
    for these linear reconstructions.  ``m`` is the mean square of ``z`` over the batch and the
    layer's units (one number per layer, a homeostatic normalisation that makes
    ``learning_rate`` dimensionless).

    Since ``y~ = W_l^-1 z`` exactly, ``x~ - rec = -(Q_l - W_l^-1) z`` (for both readings) and
    the step is ``Q_l - W_l^-1 <- (Q_l - W_l^-1)(I - learning_rate C / m)`` with ``C = z^T z /
    batch``: a least-squares (delta-rule) regression whose only fixed point is ``W_l^-1`` once
    the noise makes ``C`` full rank over batches, and which never increases
    ``||Q_l - W_l^-1||_2`` while ``learning_rate lambda_max(C) / m <= 2``
    (``docs/imperfect_inverses.md``, section 5).  For noise-dominated ``z`` that holds when
    ``learning_rate <= 2 / (1 + sqrt(n_l / batch))^2`` (0.093 at n = 784, batch 60); the
    rates' mean direction raises ``lambda_max`` (``reconstruct="rates"`` needs a smaller rate).

    Parameters
    ----------
    net : Network, optional
        The network to be trained; sets the shapes and the initial feedback.  Without it the
        first batch does (:meth:`initialise`), so that the hook can be made before the
        network, e.g. ``train(config, data, update=LearnedFeedback(gamma=config.gamma))``.
    rule : {"gait", "itp", "tp"}
    gamma : float or sequence of L floats
    form : {"difference", "absolute"}
    learning_rate : float > 0
    noise : float > 0
        Standard deviation of the corruption, in rate units.
    reconstruct : {"perturbation", "rates"}
    initial : {"transpose", "exact"} or FeedbackWeights
        Initial ``Q_l``: ``W_l^T`` (exact for orthogonal initial weights), ``W_l^-1`` (one
        factorisation at the start), or given matrices (copied).
    seed : int
        Seeds the corruption.

    Attributes
    ----------
    feedback : FeedbackWeights or None
        The learned ``Q_l`` (entry 0 is None: layer 1's feedback is never used); None until
        initialised.
    steps : int
        Feedback-rule steps taken.
    """

    def __init__(self, net: Network | None = None, *, rule: str = "gait", gamma=1e-3, form: str = "difference",
                 learning_rate: float = 0.05, noise: float = 1.0, reconstruct: str = "perturbation",
                 initial="transpose", seed: int = 0):
        self.rule = check_choice("rule", rule, ("gait", "itp", "tp"))
        if np.ndim(gamma) == 0 and rule != "tp":
            layer_gammas(gamma, 1)  # a bad number is refused now; a per-layer sequence once the depth is known
        self.gamma = gamma
        self.form = check_choice("form", form, FORMS)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.noise = check_positive("noise", noise, hint="the corruption's standard deviation in rate units")
        self.reconstruct = check_choice("reconstruct", reconstruct, RECONSTRUCTIONS)
        if not isinstance(initial, FeedbackWeights):
            check_choice("initial", initial, ("transpose", "exact"))
        self.initial = initial
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.steps = 0
        self.feedback = None
        if net is not None:
            self.initialise(net)

    def initialise(self, net: Network) -> None:
        """Set the initial ``Q_l`` from ``net`` (done by the first batch if no network was given)."""
        if self.rule != "tp":
            self.gamma = layer_gammas(self.gamma, net.depth)
        if isinstance(self.initial, FeedbackWeights):
            feedback = self.initial.copy().check(net)
            missing = [i + 1 for i, q in enumerate(feedback.matrices) if i > 0 and q is None]
            if missing:
                raise ValidationError("initial: expected a feedback matrix for every layer 2..L (the rule learns "
                                      f"them), got None at layers {missing}")
        elif self.initial == "exact":
            feedback = exact_inverses(net)
        else:
            feedback = FeedbackWeights([None] + [w.T.copy() for w in net.weights[1:]])
        feedback.matrices[0] = None
        self.feedback = feedback

    def __call__(self, net: Network, x, target, fwd: ForwardPass) -> tuple[list, list]:
        """The ``update(net, x, target, fwd) -> (dW, db)`` hook of :func:`models.training.train_epoch`."""
        self.learn(net, fwd)
        return self.directions(net, fwd, target)

    def directions(self, net: Network, fwd: ForwardPass, target) -> tuple[list, list]:
        """The rule's descent directions (dW, db) with the current ``Q_l``, without a step of the feedback rule."""
        if self.feedback is None:
            self.initialise(net)
        return updates_with_feedback(net, fwd, target, self.rule, self.gamma, self.feedback, self.form)

    def learn(self, net: Network, fwd: ForwardPass) -> list:
        """One step of the feedback rule on a forward pass; returns each layer's mean squared
        reconstruction error before the step ([0] is None)."""
        if self.feedback is None:
            self.initialise(net)
        errors = [None]
        for i in range(1, net.depth):
            w, q = net.weights[i], self.feedback.matrices[i]
            batch, n = fwd.rates[i].shape[0], w.shape[0]
            # drawn in float64 whatever the weights' type, so that the generator's stream is the same
            corrupted = (self.noise * self.rng.standard_normal((batch, n))).astype(w.dtype, copy=False)
            if self.reconstruct == "rates":
                corrupted += fwd.rates[i][:, :n]
            with np.errstate(over="ignore", invalid="ignore"):  # a diverging rule is reported below, once
                z = corrupted @ w.T
                error = corrupted - z @ q.T
                m = float(np.mean(z * z))
                q += (self.learning_rate / (m * batch)) * (error.T @ z)
                errors.append(float(np.mean(error * error)))
            if not np.all(np.isfinite(q)):
                raise NonFiniteError(
                    f"feedback[{i}] (layer {i + 1}): the feedback rule diverged at step {self.steps + 1}; "
                    f"expected learning_rate <= 2 / (1 + sqrt(n / batch))^2 = "
                    f"{2 / (1 + np.sqrt(n / batch)) ** 2:.3g} or smaller, got {self.learning_rate}")
        self.steps += 1
        return errors

    def inverse_errors(self, net: Network, norm: str = "spectral") -> list:
        """``||Q_l W_l - I||`` per layer ([0] is None): see :func:`inverse_errors`."""
        if self.feedback is None:
            self.initialise(net)
        return inverse_errors(net, self.feedback, norm)

    def state(self) -> dict:
        """Everything a resumed run needs: the matrices, the step count and the corruption's generator."""
        if self.feedback is None:
            raise ValidationError("state: the feedback is not initialised yet (give the network, call "
                                  "initialise(net), or run a batch first)")
        return {"matrices": [q.copy() for q in self.feedback.matrices[1:]], "steps": self.steps,
                "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        """Restore :meth:`state` (the same network shapes; initialises the feedback if it was not)."""
        matrices = list(state["matrices"])
        if self.feedback is None:
            self.feedback = FeedbackWeights([None] + [np.array(q, dtype=float_dtype(q)) for q in matrices])
            if self.rule != "tp":
                self.gamma = layer_gammas(self.gamma, self.feedback.depth)
        if len(matrices) != self.feedback.depth - 1:
            raise ValidationError(f"state: expected {self.feedback.depth - 1} feedback matrices (layers 2.."
                                  f"{self.feedback.depth}), got {len(matrices)}")
        for i, q in enumerate(matrices, start=1):
            own = self.feedback.matrices[i]
            own[...] = check_array(f"state['matrices'][{i - 1}]", q, own.shape, hint=f"layer {i + 1}'s feedback")
        self.steps = int(state["steps"])
        self.rng.bit_generator.state = state["rng"]


class TransposedFeedback:
    """Training with feedback ``Q_l = W_l^T`` (no inverse, nothing learned); an ``update=`` hook.

    Each call returns the rule's descent directions with the transposes of the current
    weights (:func:`transposed_weights`, :func:`updates_with_feedback`).  In the difference form
    (the default) GAIT with ``Q = W^T`` is BP, whatever the weights' orthogonality
    (docs/imperfect_inverses.md, section 2); in the absolute form it needs weights orthogonal
    to well below ``prod_{j>l} gamma_j``.  Same interface as :class:`LearnedFeedback`
    (``directions``, ``inverse_errors``; no state to checkpoint).
    """

    def __init__(self, *, rule: str = "gait", gamma=1e-3, form: str = "difference"):
        self.rule = check_choice("rule", rule, ("gait", "itp", "tp"))
        self.gamma = gamma
        self.form = check_choice("form", form, FORMS)

    def __call__(self, net: Network, x, target, fwd: ForwardPass) -> tuple[list, list]:
        """The ``update(net, x, target, fwd) -> (dW, db)`` hook of :func:`models.training.train_epoch`."""
        return self.directions(net, fwd, target)

    def directions(self, net: Network, fwd: ForwardPass, target) -> tuple[list, list]:
        return updates_with_feedback(net, fwd, target, self.rule, self.gamma, transposed_weights(net), self.form)

    def inverse_errors(self, net: Network, norm: str = "spectral") -> list:
        """``||W_l^T W_l - I||`` per layer ([0] is None): how far the weights are from orthogonal."""
        return inverse_errors(net, transposed_weights(net), norm)
