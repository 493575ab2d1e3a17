"""The circuit specification: plain, validated data that every engine runs.

A circuit is built from a :class:`models.Network` plus coupling settings.  Layer l
(1..L) is a population of ``n_l`` rate neurons with rates ``r_l``; layer 0 is the
clamped input.  Each neuron has

- a basal (forward) potential  ``h_l = W_l r_{l-1}[:n_l] + b_l``  and drive ``phi_l = f(h_l)``,
- a somatic potential          ``u_l = f^-1(r_l)``,
- a feedback drive             ``psi_l[:n_{l+1}] = W_{l+1}^-1 (u_{l+1} - b_{l+1})``
  (the exact layer inverse, or given feedback weights ``Q_{l+1}`` in its place; auxiliary
  units get none),

and obeys ::

    tau dr_l/dt = -r_l + (1 - k_l) phi_l + k_l psi_l          0 < l < L
    tau dr_L/dt = -r_L + (1 - k_L) phi_L + k_L t_L            (output nudged toward t_L)

with per-unit couplings ``k_l = gamma_l * kappa_l``: ``kappa = 1`` ("itp" mode) or
``kappa = f'(h_l)^2`` of the free-phase state, held ("gait" mode); ``kappa = 0`` on
auxiliary units and on output units without a task target.  See docs/derivation.md;
with feedback weights ``Q_l != W_l^-1`` the free phase is no longer the forward pass and the
local rule reads the absolute form of the targets (docs/imperfect_inverses.md, section 3).
Durations are in seconds (a float, or a Brian2 quantity such as ``10*ms``; see
:mod:`circuit.units`).  This module imports neither brian2 nor scipy.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import models
from models.errors import CircuitError, ConvergenceError, DataFormatError, DivergenceError, ValidationError
from models.feedback import FeedbackWeights, inverse_errors
from models.network import Description, activation_arguments, layer_table
from models.validation import check_array, check_gamma

from .units import to_seconds

__all__ = ["MODES", "SCHEDULES", "CircuitSpec", "CircuitError", "DivergenceError", "ConvergenceError", "build_circuit",
           "coupling_schedule", "save_spec", "load_spec"]

MODES = ("gait", "itp")
SCHEDULES = ("uniform", "output", "geometric")


@dataclass(frozen=True)
class CircuitSpec:
    """A validated circuit: network, per-layer coupling strengths, mode, time constant.

    Attributes
    ----------
    network : models.Network
    gamma : ndarray of shape (L,)
        Coupling strength gamma_l of layer l = 1..L, each in (0, 1).
    mode : {"gait", "itp"}
    tau : float
        Membrane time constant in seconds (build_circuit also takes a Brian2 quantity, ``10*ms``).
    feedback : tuple of L entries, or None
        The feedback weights: [i] (i >= 1) is ``Q_{i+1}``, of the shape of ``weights[i]``
        (read-only), applied in place of ``W_{i+1}^-1``, or None for the exact inverse
        there; [0] is always None (layer 1 feeds nothing back).  None: the exact inverse
        everywhere.
    """

    network: models.Network
    gamma: np.ndarray
    mode: str = "gait"
    tau: float = 0.01
    feedback: tuple | None = None

    @property
    def depth(self) -> int:
        return self.network.depth

    @property
    def widths(self) -> tuple:
        return self.network.widths

    def feedback_matrix(self, index: int) -> np.ndarray | None:
        """``Q`` of ``weights[index]`` (feedback from layer index+1 into layer index); None: the exact inverse."""
        return None if self.feedback is None else self.feedback[index]

    @property
    def feedback_weights(self) -> FeedbackWeights:
        """The feedback as :class:`models.FeedbackWeights` (None entries: exact), for the discrete rules."""
        return FeedbackWeights([self.feedback_matrix(i) for i in range(self.depth)])

    def feedback_mask(self, layer: int) -> np.ndarray:
        """Boolean mask (n_layer,) of the units of ``layer`` (1..L) that receive feedback or the nudge."""
        n = self.widths[layer]
        mask = np.zeros(n, dtype=bool)
        if layer == self.depth:
            mask[: self.network.n_out] = True
        else:
            mask[: self.widths[layer + 1]] = True
        return mask

    def relative_couplings(self, derivatives: list, nudged: bool = True) -> list:
        """``kappa_l = k_l / gamma_l`` per sample and unit: [i] of shape (batch, n_{i+1}).

        ``derivatives`` are the free-phase ``f'(h_l)`` (used in "gait" mode).  ``nudged=False``
        (the free phase): no nudge at the output, kappa_L = 0.
        """
        out = []
        for i, a in enumerate(derivatives):
            mask = self.feedback_mask(i + 1)
            kappa = a**2 if self.mode == "gait" else np.ones_like(a)
            out.append(np.where(mask, kappa, 0.0))
        if not nudged:
            out[-1] = np.zeros_like(out[-1])
        return out

    def couplings(self, derivatives: list, nudged: bool = True) -> list:
        """Per-unit couplings ``k_l = gamma_l kappa_l``: [i] of shape (batch, n_{i+1})."""
        return [g * kappa for g, kappa in zip(self.gamma, self.relative_couplings(derivatives, nudged))]

    # ------------------------------------------------------------ description

    def __repr__(self) -> str:
        g = self.gamma
        gamma = f"{g[0]:g}" if np.all(g == g[0]) else "[" + ", ".join(f"{v:g}" for v in g) + "]"
        feedback = "" if self.feedback is None else \
            f", feedback=Q on layers {[i + 1 for i, q in enumerate(self.feedback) if q is not None]}"
        return (f"CircuitSpec(mode={self.mode!r}, widths={self.widths}, n_out={self.network.n_out}, "
                f"gamma={gamma}, tau={self.tau:g} s, {activation_arguments(self.network.activation)}{feedback})")

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython/Jupyter display: the description
        printer.text(repr(self) if cycle else self.describe())

    def describe(self) -> Description:
        """A readable multi-line description: layers, couplings, mode, tau and the Brian2 equations.

        ``print(spec.describe())``; in a notebook the returned text also displays as it is.
        """
        from .brian import equations  # a pure string function: imports no brian2

        L, widths, tau = self.depth, self.widths, self.tau
        coupling = ("k_l = gamma_l * f'(h_l)^2, with f' of the free phase held" if self.mode == "gait"
                    else "k_l = gamma_l")
        errors = [None] * L if self.feedback is None else inverse_errors(self.network, self.feedback_weights)
        feedback = ["clamped to x"] + [f"from layer {l + 1}, on {widths[l + 1]} units" + (
            "" if errors[l] is None else f" through Q_{l + 1} (||Q W - I||_2 = {errors[l]:.2g})") for l in range(1, L)]
        feedback.append(f"the target, on {self.network.n_out} units")
        weights = ("exact layer inverses, psi_l = W_{l+1}^-1 (u_{l+1} - b_{l+1})" if self.feedback is None else
                   "weights Q_{l+1} in place of W_{l+1}^-1 (where the table names one), psi_l = Q_{l+1} "
                   "(u_{l+1} - b_{l+1}): see docs/imperfect_inverses.md")
        lines = [
            f"{self.mode.upper()} circuit {' -> '.join(map(str, widths))}: {L} layer{'s' * (L > 1)} of rate "
            "neurons above the clamped input (layer 0)",
            f"  mode: {self.mode} (coupling {coupling})",
            f"  feedback: {weights}",
            f"  tau: {tau:g} s ({tau * 1e3:g} ms)",
            f"  activation: {self.network.activation.label()}",
            *layer_table(self.network, {"gamma": ["-"] + [f"{g:g}" for g in self.gamma],
                                        "feedback": feedback}),
            "  Brian2 equations of each layer (one NeuronGroup per layer, tau in seconds):",
            *("    " + line for line in equations(self).splitlines()),
            "  r: rate, h: basal potential (forward input), phi = f(h): forward drive, u = f^-1(r): somatic",
            "  potential, psi: feedback drive (the target at the output), k: coupling",
        ]
        return Description("\n".join(lines))


def build_circuit(network: models.Network, gamma=1e-3, mode: str = "gait", tau=0.01, feedback=None) -> CircuitSpec:
    """Validate and build a :class:`CircuitSpec` from a network and coupling settings.

    ``gamma`` is one coupling for every layer or a sequence of L per-layer values in (0, 1).
    ``tau`` is the membrane time constant in seconds, or a Brian2 quantity (``10*ms``); a tau
    above 1 s draws a UserWarning (``tau=10`` is ten seconds, not ten milliseconds).

    ``feedback``: the feedback weights ``Q_l`` applied in place of the exact inverses
    ``W_l^-1`` of the layers that feed back (l = 2..L): a sequence of L - 1 entries
    ``[Q_2, ..., Q_L]``, each an (n_l, n_l) array or None (the exact inverse there), or a
    :class:`models.FeedbackWeights` (its entry for layer 1 is not used), e.g.
    ``models.perturbed_inverses(network, 1e-3)``.  The matrices are copied.  None (the
    default): the exact inverses, as without the argument, bit for bit.  Layers with a
    ``Q`` need no invertible weights.
    """
    if not isinstance(network, models.Network):
        raise TypeError(f"network: expected a models.Network, got {type(network).__name__}; "
                        "build one with models.init_network(widths) or models.Network(weights, biases, n_0)")
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    L = network.depth
    g = check_gamma(gamma, L)
    tau = to_seconds(tau, "tau")
    if tau > 1.0:
        warnings.warn(f"tau: {tau:g} s is longer than one second; durations are in seconds (tau=10 is ten "
                      "seconds): for 10 ms pass tau=0.01 or tau=10*brian2.ms", UserWarning, stacklevel=2)
    return CircuitSpec(network, g, mode, tau, _feedback_entries(network, feedback))


def _feedback_entries(network: models.Network, feedback) -> tuple | None:
    """The spec's ``feedback`` field from build_circuit's argument: L entries ([0] None), or None if all exact."""
    L = network.depth
    if feedback is None:
        return None
    expected = (f"a models.FeedbackWeights or a sequence of L - 1 = {L - 1} feedback matrices [Q_2, ..., Q_L] "
                "(None for the exact inverse)")
    if isinstance(feedback, FeedbackWeights):
        entries = list(feedback.check(network).matrices[1:])
    elif isinstance(feedback, (list, tuple)):
        if len(feedback) != L - 1:
            raise ValidationError(f"feedback: expected {expected}, got a {type(feedback).__name__} of "
                                  f"{len(feedback)} entries")
        entries = list(feedback)
    else:
        raise ValidationError(f"feedback: expected {expected}, got {type(feedback).__name__}")
    out = [None]
    for i, (q, w) in enumerate(zip(entries, network.weights[1:]), start=1):
        if q is not None:
            q = check_array(f"feedback[{i - 1}]", q, w.shape,
                            hint=f"Q_{i + 1}, the feedback from layer {i + 1} into layer {i}, has the shape of "
                                 f"weights[{i}]").copy()
            q.setflags(write=False)
        out.append(q)
    return None if all(q is None for q in out) else tuple(out)


def coupling_schedule(kind: str, gamma: float, depth: int, strong: float = 0.9, ratio: float = 4.0) -> np.ndarray:
    """Per-layer couplings gamma_1..gamma_L of a named schedule.

    - "uniform": gamma on every layer (the paper's choice);
    - "output": gamma at the output only, strong inversion (``strong``) below: the paper's
      discussion of "a single incremental variable on the output layer";
    - "geometric": gamma at the output, growing by ``ratio`` per layer downwards (capped at
      ``strong``), so that the deviations of deep layers shrink less fast.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {kind!r}")
    below = np.arange(depth - 1, -1, -1)  # L - l for l = 1..L
    if kind == "uniform":
        g = np.full(depth, float(gamma))
    elif kind == "output":
        g = np.where(below == 0, float(gamma), float(strong))
    else:
        g = np.minimum(float(gamma) * float(ratio) ** below, float(strong))
    return g


# ------------------------------------------------------------ save and load


def save_spec(path: str | os.PathLike, spec: CircuitSpec) -> Path:
    """Write ``spec`` (its network, gamma per layer, mode, tau, feedback weights) to one ``.npz`` file at ``path``.

    The format is that of :func:`models.save_network` with the coupling settings added; the file is
    written whole or not at all.  Returns the path written; read it back with :func:`load_spec`.
    """
    if not isinstance(spec, CircuitSpec):
        raise ValidationError(f"spec: expected a circuit.CircuitSpec, got {type(spec).__name__}")
    metadata, arrays = models.io.network_contents(spec.network)
    metadata.update(mode=spec.mode, tau=float(spec.tau))
    feedback = models.io.feedback_contents(spec.feedback)
    return models.io.write_archive(path, "gaitcircuit.CircuitSpec", metadata,
                                   {**arrays, "gamma": spec.gamma, **feedback})


def load_spec(path: str | os.PathLike) -> CircuitSpec:
    """The :class:`CircuitSpec` saved by :func:`save_spec` at ``path``, bit for bit.

    Raises ``OSError`` if the file cannot be opened and :class:`models.errors.DataFormatError`
    (naming the file and what is wrong) if it is not a saved circuit specification, is corrupt,
    or was written by a newer version of the library.
    """
    metadata, arrays = models.io.read_archive(path, "gaitcircuit.CircuitSpec")
    network = models.io.network_from_contents(path, metadata, arrays)
    if "gamma" not in arrays:
        raise DataFormatError(f"{path}: expected an array 'gamma' (the coupling of each layer), got none")
    feedback = models.io.feedback_from_contents(path, network, arrays)
    try:
        return build_circuit(network, arrays["gamma"], metadata.get("mode"), metadata.get("tau"), feedback)
    except (ValueError, TypeError) as err:
        raise DataFormatError(f"{path}: {err}") from None
