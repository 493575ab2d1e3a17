"""Training of the discrete reference as a library: the step, the loop, checkpoints and run directories.

The step (:func:`train_step`, :func:`apply_update`) and one pass over the data
(:func:`train_epoch`) hold the maths; :func:`train` runs a whole configuration
(:class:`TrainConfig`) and returns its history in memory (:class:`TrainResult`).  Given an
output directory it also checkpoints every epoch and can resume a killed run to results
identical to an uninterrupted one.

The source of the updates is pluggable: ``update(net, x, target, fwd) -> (dW, db)``
replaces the rule's descent directions (the circuit's local rule is one:
:func:`circuit.learning.train` supplies it for ``engine="circuit"``; the rule with learned
or transposed feedback weights another: :class:`FeedbackUpdate`, for ``feedback="learned"``
or ``"transpose"``).  An update that has ``state()`` and ``load_state(state)`` has its state
saved in every checkpoint and restored on resume; one that has ``evaluation_rows(net, epoch,
step)`` adds those rows to the history after every evaluation (epoch 0 included).

Data
----
Any object with four array attributes (e.g. ``experiments.datasets.Dataset``), or a mapping
with these four keys:

``train_x`` : ndarray, shape (n_train, n_0)
    Training inputs (float), ``n_0 = config.widths[0]``.
``train_y`` : ndarray of int, shape (n_train,)
    Training labels in ``0 .. config.n_out - 1``.
``test_x``, ``test_y`` : ndarray, shapes (n_test, n_0) and (n_test,)
    The test set, same conventions.

Run directory (``out``)
-----------------------
``checkpoint.npz`` (the state after the last finished epoch, with a SHA-256 checksum of
its content and a digest of the data), ``checkpoint.prev.npz`` (the epoch before, kept in
case the last one is damaged), ``metrics.csv`` (tidy rows: epoch, step, split, metric,
value) and ``.lock`` (held while a process writes the directory).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Protocol

import numpy as np

from .errors import CheckpointError, RunDirBusyError, RunExistsError, ValidationError
from .feedback import LearnedFeedback, TransposedFeedback
from .losses import LOSSES, constructed_target, loss_value
from .network import DirectInverse, Network, init_network
from .optimizers import Adam
from .regulariser import PendingGradients, start_orthogonality_gradients
from .rules import RULES, forward_factorising, rule_updates
from .validation import DTYPES, check_choice, check_count, check_dtype, check_gamma, check_positive, layer_scales

__all__ = [
    "train_step", "apply_update", "step_flops", "evaluate", "epoch_order", "train_epoch",
    "TrainConfig", "TrainResult", "TrainingData", "train", "build_model", "with_defaults", "RULE_DEFAULTS",
    "FEEDBACKS", "FeedbackUpdate", "make_update", "read_update_state",
    "as_training_data",
    "data_digest", "check_training_data", "save_checkpoint", "read_checkpoint", "check_run_dir", "run_dir_lock",
    "holds_run", "write_metrics", "read_metrics", "summarise", "lu_inverse", "default_lu_threads", "blas_threads",
    "blas_libraries", "blas_start_threads", "DEFAULT_BLAS_THREADS", "CHECKPOINT", "PREVIOUS_CHECKPOINT",
    "METRICS", "LOCK_FILE", "DTYPES", "FLOAT32_MAX_SCALE",
]

#: Learning rate and regulariser lambda per rule when the configuration leaves them unset (the paper's values).
RULE_DEFAULTS = {"bp": {"lr": 1e-4, "regulariser": 0.0}, "gait": {"lr": 1e-4, "regulariser": 0.1},
                 "itp": {"lr": 1e-4, "regulariser": 0.1}, "tp": {"lr": 1e-5, "regulariser": 1000.0}}
#: Training samples of the per-epoch evaluation on the training set (a fixed random subset).
EVAL_TRAIN_SAMPLES = 5000
#: BLAS threads during training steps.  At batch 60 each product is ~1 ms of work; on a
#: 2-core machine, waking a second BLAS thread for every product made GAIT steps ~2x
#: slower (``python -m experiments bench`` shows both settings).
DEFAULT_BLAS_THREADS = 1
ENGINES = ("discrete", "circuit")
#: The feedback of the target rules: the exact layer inverses, weights learned by a local rule, or W^T.
FEEDBACKS = ("exact", "learned", "transpose")
#: Training samples of the per-epoch probe of the feedback (inverse error, cosine with BP): a fixed random subset.
FEEDBACK_PROBE_SAMPLES = 1000
ACTIVATIONS = {"leaky_relu": "leaky_relu", "linear": "identity"}
INITS = ("orthogonal", "xavier")
ADAMS = ("published", "standard")
CHECKPOINT, PREVIOUS_CHECKPOINT, METRICS, LOCK_FILE = "checkpoint.npz", "checkpoint.prev.npz", "metrics.csv", ".lock"
#: Format of the checkpoints written now: 2 adds a checksum and the data's digest (format 1 had neither).
CHECKPOINT_FORMAT = 2
#: The largest deviation scale S_1 = prod_{l>=2} 1/gamma_l that float32 target rules accept: the
#: scaled deviations are O(1) and S_l multiplies the increments back up, so S_l itself must be a
#: finite float32 (largest 3.4e38) with room for a factor 1e8 (gamma 1e-3 on up to 11 layers).
FLOAT32_MAX_SCALE = 1e30
#: Settings that a resumed run may change: how long it runs, and a permission that changes no result.
RESUMABLE_CHANGES = ("epochs", "allow_narrow_input")


def train_step(net: Network, optimizer: Adam, x, target, rule: str, gamma=1e-3,
               regulariser: float = 0.0, inverse=None):
    """Update ``net`` in place by one Adam step along the rule's descent direction.

    ``regulariser`` is lambda of the orthogonality regulariser (Eq. 23), whose
    gradient is subtracted from the weight directions.  Returns the forward pass
    (computed before the update).
    """
    dW, db, fwd = rule_updates(net, x, target, rule, gamma, inverse)
    apply_update(net, optimizer, dW, db, regulariser)
    return fwd


def apply_update(net: Network, optimizer: Adam, dW: list, db: list, regulariser: float = 0.0,
                 pending: PendingGradients | None = None) -> None:
    """Subtract the regulariser's gradient from ``dW`` (in place) and take one Adam step.

    ``pending``: the gradients already started for these weights (:func:`start_orthogonality_gradients`,
    e.g. on threads before the rule's updates); the same bits as computing them here.
    """
    if regulariser:
        (pending or start_orthogonality_gradients(net.weights, regulariser)).subtract_from(dW)
    optimizer.step(net.weights + net.biases, dW + db)


def step_flops(widths, batch: int, rule: str, regulariser: bool = False,
               inverse: str = "lu") -> float:
    """Floating-point operations of one :func:`train_step` (matrix products only).

    Counts 2*m*n*k per (m, k) @ (k, n) product; LU factorisation 2/3 n^3 and the
    two triangular solves 2 n^2 per right-hand side.  Element-wise work (activation,
    Adam) is O(n^2) and left out: it is bounded by memory traffic, not flops.
    """
    ns = [int(n) for n in widths[1:]]
    flops = sum(2.0 * batch * n * n for n in ns)          # forward pass
    flops += sum(2.0 * batch * n * n for n in ns)         # weight updates e^T y
    if rule == "bp":
        flops += sum(2.0 * batch * n * n for n in ns[1:])  # signals through W^T
    else:
        for n in ns[1:]:                                   # one solve with W_{l+1} per layer below
            flops += (2.0 / 3.0 * n**3 if inverse == "lu" else 0.0) + 2.0 * batch * n * n
    if regulariser:
        flops += sum(3.0 * n**3 for n in ns)               # W^T W (syrk, n^3) and W O (symm, 2 n^3)
    return flops


def count_correct(output: np.ndarray, labels, n_out: int) -> int:
    """How many samples' largest task output is their label."""
    return int(np.sum(np.argmax(output[:, :n_out], axis=1) == labels))


def evaluate(net: Network, x, labels, loss: str = "quadratic", batch: int = 2000) -> tuple[float, float]:
    """(mean loss, accuracy) of ``net`` on a dataset; prediction = argmax over task outputs."""
    total, correct = 0.0, 0
    n = len(labels)
    for start in range(0, n, batch):
        xb, yb = x[start: start + batch], labels[start: start + batch]
        out = net.forward(xb).rates[-1]
        total += loss_value(loss, out, yb, net.n_out) * len(yb)
        correct += count_correct(out, yb, net.n_out)
    return total / n, correct / n


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of ``epoch``: a function of (seed, epoch) only, so resumed runs repeat it."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def train_epoch(net: Network, optimizer: Adam, x, labels, *, rule: str, seed: int, epoch: int, batch: int = 60,
                gamma=1e-3, regulariser: float = 0.0, loss: str = "quadratic", inverse=None, update=None,
                on_batch=None, regulariser_threads: int = 1) -> dict:
    """One pass over (x, labels) in the order :func:`epoch_order` gives; returns running statistics.

    ``update(net, x, target, fwd)``, if given, replaces the rule's descent directions (e.g.
    the circuit's local rule) and returns (dW, db); if it also has a method
    ``epoch_statistics()`` (counts since its last call, e.g. the circuit's unsettled samples),
    those counts join the statistics returned.  ``on_batch(i, n_batches, running_loss)`` is
    called after every batch (progress display).  ``regulariser_threads`` > 1 computes the
    regulariser's matrices side by side on that many threads, started before each batch's
    updates so that the two overlap (the same bits as one thread).
    """
    counts = getattr(update, "epoch_statistics", None)
    if counts is not None:
        counts()  # start this epoch's counts at zero
    order = epoch_order(len(labels), seed, epoch)
    n_batches = len(order) // batch
    total_loss, correct = 0.0, 0
    try:
        for i in range(n_batches):
            idx = order[i * batch: (i + 1) * batch]
            xb, yb = x[idx], labels[idx]
            pending = (start_orthogonality_gradients(net.weights, regulariser, regulariser_threads)
                       if regulariser and regulariser_threads > 1 else None)
            # the layers' factorisations (TP, ITP, GAIT) overlap the forward pass; compute_targets discards them
            fwd = forward_factorising(net, xb, rule, inverse) if update is None else net.forward(xb)
            target = constructed_target(loss, fwd.rates[-1], yb, net.n_out)
            if update is None:
                dW, db, _ = rule_updates(net, xb, target, rule, gamma, inverse, fwd=fwd)
            else:
                dW, db = update(net, xb, target, fwd)
            out = fwd.rates[-1]
            total_loss += loss_value(loss, out, yb, net.n_out)
            correct += count_correct(out, yb, net.n_out)
            apply_update(net, optimizer, dW, db, regulariser, pending)
            if on_batch is not None:
                on_batch(i, n_batches, total_loss / (i + 1))
    finally:  # no factors of weights that change in place may outlive a failed step
        getattr(inverse, "discard", lambda: None)()
    seen = n_batches * batch
    stats = {"running_loss": total_loss / max(n_batches, 1), "running_accuracy": correct / max(seen, 1)}
    return {**stats, **(counts() if counts is not None else {})}


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's results (saved with every checkpoint).

    ``lr`` and ``regulariser`` (lambda of the orthogonality regulariser, Eq. 23) left as
    None take the rule's paper values (:data:`RULE_DEFAULTS`; see :meth:`resolved`).
    ``engine="circuit"`` takes every update from the circuit's steady state (then ``rule``
    is the coupling mode, "gait" or "itp", ``gamma`` the output layer's coupling,
    ``schedule`` the couplings below it and ``noise`` the white noise in its rate
    dynamics); run it with :func:`circuit.learning.train`.  ``feedback`` (target rules,
    discrete engine): "exact" (the layer inverses), "learned" (feedback weights learned
    alongside by :class:`models.feedback.LearnedFeedback` at learning rate ``feedback_lr``)
    or "transpose" (``Q = W^T``), both read in the difference form (:class:`FeedbackUpdate`).  ``widths[1] < widths[0]``
    means the first layer sees only the first ``widths[1]`` inputs: refused unless
    ``allow_narrow_input``.  ``eval_every`` (the published protocol): evaluate on the whole
    training and test sets every that many batches (counted over the run) and at the end of
    every epoch; None (default): once per epoch, on a fixed subset of
    :data:`EVAL_TRAIN_SAMPLES` training samples and the test set.  It changes the records,
    never the weights.  ``dtype``: "float64" (the default) or "float32", the type of the
    weights, the forward pass, the layer inverses' LU factors and solves, the targets (in
    their scaled-deviation form), the updates, the regulariser and Adam's moments (Adam
    forms each step in float64 and rounds the new values to float32); see
    :data:`FLOAT32_MAX_SCALE`.  Every value is checked on creation (:class:`ValidationError`).
    """

    dataset: str = "fashion_mnist"
    rule: str = "gait"
    widths: list = field(default_factory=lambda: [784] * 6)
    activation: str = "leaky_relu"
    epochs: int = 5
    batch: int = 60
    lr: float | None = None
    regulariser: float | None = None
    gamma: float = 1e-3
    loss: str = "quadratic"
    seed: int = 0
    init: str = "orthogonal"
    adam: str = "published"
    dtype: str = "float64"      # floating-point type of the network, the rules and Adam's moments (DTYPES)
    n_out: int = 10
    engine: str = "discrete"
    schedule: str = "uniform"   # circuit engine: layer-wise coupling schedule (gamma is the output's)
    noise: float = 0.0          # circuit engine: white-noise strength in the rate dynamics
    allow_narrow_input: bool = False
    feedback: str = "exact"     # target rules: "exact" inverses, "learned" or "transpose" feedback weights
    feedback_lr: float = 0.05   # feedback "learned": learning rate of the feedback rule
    eval_every: int | None = None  # evaluate on the whole training and test sets every N batches (None: per epoch)

    def __post_init__(self):
        widths = self.widths
        if isinstance(widths, (str, bytes)) or not hasattr(widths, "__len__"):
            raise ValidationError(f"widths: expected a sequence of layer widths such as [784, 784, 10], got {widths!r}")
        object.__setattr__(self, "widths", [check_count(f"widths[{i}]", w) for i, w in enumerate(widths)])
        object.__setattr__(self, "dtype", check_dtype("dtype", self.dtype).name)
        self.validate()

    def validate(self) -> None:
        """Check every setting; raise :class:`ValidationError` naming the first bad one."""
        if not isinstance(self.dataset, str):
            raise ValidationError(f"dataset: expected a name (str), got {self.dataset!r}")
        check_choice("rule", self.rule, RULES)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("loss", self.loss, LOSSES)
        check_choice("init", self.init, INITS)
        check_choice("adam", self.adam, ADAMS)
        check_choice("engine", self.engine, ENGINES)
        check_dtype("dtype", self.dtype)
        w = self.widths
        if len(w) < 2:
            raise ValidationError(f"widths: expected at least two widths (input and output), got {w}")
        if any(b > a for a, b in zip(w, w[1:])):
            raise ValidationError(f"widths: expected non-increasing widths (n_0 >= n_1 >= ... >= n_L), got {w}")
        if w[1] < w[0] and not self.allow_narrow_input:
            raise ValidationError(
                f"widths: the first layer ({w[1]} units) is narrower than the input ({w[0]}), so the network would "
                f"see only the first {w[1]} of its {w[0]} inputs; give the first layer {w[0]} units, or set "
                "allow_narrow_input (CLI: --allow-narrow-input) if that is intended")
        check_count("epochs", self.epochs)
        check_count("batch", self.batch)
        check_count("seed", self.seed, minimum=0)
        check_count("n_out", self.n_out)
        if self.n_out > w[-1]:
            raise ValidationError(f"n_out: expected at most the {w[-1]} output units (widths[-1]), got {self.n_out}")
        if self.lr is not None:
            check_positive("lr", self.lr)
        if self.regulariser is not None:
            check_positive("regulariser", self.regulariser, allow_zero=True)
        check_positive("noise", self.noise, allow_zero=True)
        check_choice("feedback", self.feedback, FEEDBACKS)
        check_positive("feedback_lr", self.feedback_lr)
        if self.eval_every is not None:
            check_count("eval_every", self.eval_every, hint="None evaluates once per epoch")
        if self.feedback != "exact" and (self.rule == "bp" or self.engine != "discrete"):
            raise ValidationError(f"feedback: expected 'exact' with rule {self.rule!r} and engine {self.engine!r} "
                                  f"(feedback weights replace the inverses of the target rules tp, itp and gait with "
                                  f"engine 'discrete'), got {self.feedback!r}")
        if self.feedback != "learned" and self.feedback_lr != 0.05:
            raise ValidationError(f"feedback_lr: expected the default 0.05 with feedback {self.feedback!r} (only "
                                  f"learned feedback has a learning rate), got {self.feedback_lr!r}")
        if self.engine == "circuit" and self.dtype != "float64":
            raise ValidationError(f"dtype: expected 'float64' with engine 'circuit' (the circuit engines compute in "
                                  f"float64), got {self.dtype!r}; use engine 'discrete' for float32 training "
                                  "(CLI: train --update discrete)")
        if self.engine == "circuit":
            check_positive("gamma", self.gamma)  # one number: the output's coupling (the schedule sets the rest)
            check_gamma(self.gamma, 1)
        else:
            check_gamma(self.gamma, len(w) - 1, allow_one=True)
            if self.schedule != "uniform" or self.noise != 0:
                raise ValidationError(
                    f"schedule and noise: expected the defaults ('uniform', 0) with engine 'discrete' (the discrete "
                    f"rules have neither), got {self.schedule!r} and {self.noise!r}; use engine 'circuit' "
                    "(CLI: train --update circuit)")
            self._check_float32_scales()

    def _check_float32_scales(self) -> None:
        """float32 target rules: the largest deviation scale S_1 = prod_{l >= 2} 1/gamma_l must fit float32."""
        if self.dtype != "float32" or self.rule not in ("itp", "gait") or len(self.widths) < 3:
            return
        largest = float(layer_scales(check_gamma(self.gamma, len(self.widths) - 1, allow_one=True))[1])
        if not largest <= FLOAT32_MAX_SCALE:
            raise ValidationError(
                f"dtype: expected 'float64' for rule {self.rule!r} with gamma {self.gamma!r} on "
                f"{len(self.widths) - 1} layers: its deviation scale 1/gamma^(L-1) = {largest:.1e} exceeds "
                f"{FLOAT32_MAX_SCALE:.0e}, what float32 holds with room (largest 3.4e38), got 'float32'")

    def resolved(self) -> "TrainConfig":
        """This configuration with ``lr`` and ``regulariser`` filled from the rule's paper values."""
        d = RULE_DEFAULTS[self.rule]
        return dataclasses.replace(self, lr=d["lr"] if self.lr is None else self.lr,
                                   regulariser=d["regulariser"] if self.regulariser is None else self.regulariser)


def with_defaults(config: dict) -> dict:
    """A saved configuration with the settings added to TrainConfig after it was written, at their defaults."""
    return {**asdict(TrainConfig()), **config}


def build_model(config: TrainConfig) -> tuple[Network, Adam]:
    """The initial network and optimiser of ``config`` (resolved: ``lr`` set)."""
    net = init_network(config.widths, config.init, seed=config.seed, activation=ACTIVATIONS[config.activation],
                       n_out=config.n_out, dtype=config.dtype)
    lr = config.resolved().lr
    opt = Adam.published(lr) if config.adam == "published" else Adam(lr=lr)
    return net, opt


# --------------------------------------------------------------------------- feedback weights

class FeedbackUpdate:
    """The update of a configuration with ``feedback`` "learned" or "transpose", its state and its records.

    Wraps :class:`models.feedback.LearnedFeedback` (seeded by ``config.seed``, initialised to
    ``W_l^T`` of ``net``, learning rate ``config.feedback_lr``) or
    :class:`models.feedback.TransposedFeedback`, both in the difference form.  ``state()`` /
    ``load_state()`` carry the learned matrices, the rule's step count and its generator
    through a checkpoint (:func:`train` saves and restores them).  ``evaluation_rows`` records,
    on a fixed probe batch of training samples (split "feedback"): ``inverse_error_layer{l}``,
    ``||Q_l W_l - I||_2`` for l = 2..L; ``cosine_bp_layer{l}``, the cosine of the rule's
    direction with ``Q`` (before the regulariser) with BP's for l = 1..L; and
    ``exact_cosine_bp_layer{l}``, the same for the rule with exact inverses.
    """

    def __init__(self, config: TrainConfig, net: Network, probe_x, probe_y):
        self.config = config
        kind = check_choice("feedback", config.feedback, FEEDBACKS[1:])
        if kind == "learned":
            self.hook = LearnedFeedback(net, rule=config.rule, gamma=config.gamma, learning_rate=config.feedback_lr,
                                        seed=config.seed)
        else:
            self.hook = TransposedFeedback(rule=config.rule, gamma=config.gamma)
        self.probe_x, self.probe_y = probe_x, probe_y

    def __call__(self, net: Network, x, target, fwd):
        return self.hook(net, x, target, fwd)

    def state(self) -> dict | None:
        """The learned feedback's state (None for the transpose: nothing to keep)."""
        return self.hook.state() if isinstance(self.hook, LearnedFeedback) else None

    def load_state(self, state: dict | None) -> None:
        if isinstance(self.hook, LearnedFeedback):
            self.hook.load_state(state)

    def evaluation_rows(self, net: Network, epoch: int, step: int) -> list:
        """Inverse errors and cosines with BP per layer on the probe batch, as tidy rows (split "feedback")."""
        from .rules import backprop

        cfg = self.config
        fwd = net.forward(self.probe_x)
        target = constructed_target(cfg.loss, fwd.rates[-1], self.probe_y, net.n_out)
        bp, _ = backprop(net, fwd, target)
        ours, _ = self.hook.directions(net, fwd, target)
        exact, _, _ = rule_updates(net, self.probe_x, target, cfg.rule, cfg.gamma, fwd=fwd)
        errors = self.hook.inverse_errors(net)
        values = {f"inverse_error_layer{i + 1}": e for i, e in enumerate(errors) if e is not None}
        values.update({f"cosine_bp_layer{i + 1}": _cosine(d, b) for i, (d, b) in enumerate(zip(ours, bp))})
        values.update({f"exact_cosine_bp_layer{i + 1}": _cosine(d, b) for i, (d, b) in enumerate(zip(exact, bp))})
        return [{"epoch": epoch, "step": step, "split": "feedback", "metric": k, "value": float(v)}
                for k, v in values.items()]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def make_update(config: TrainConfig, net: Network, data, update: Callable | None) -> Callable | None:
    """``update``, or the :class:`FeedbackUpdate` of ``config.feedback`` (None for exact feedback)."""
    if config.feedback == "exact":
        return update
    if update is not None:
        raise ValidationError(f"update: expected None with feedback {config.feedback!r} (the feedback weights "
                              "supply the updates), got a callable; use feedback 'exact' with your own update")
    idx = np.random.default_rng([config.seed, 10**6 + 1]).choice(
        len(data.train_y), min(FEEDBACK_PROBE_SAMPLES, len(data.train_y)), replace=False)
    return FeedbackUpdate(config, net, data.train_x[idx], data.train_y[idx])


# --------------------------------------------------------------------------- data

class TrainingData(Protocol):
    """What :func:`train` reads from its data (see the module's docstring for shapes)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def as_training_data(data) -> TrainingData:
    """``data`` itself, or a mapping's four entries as attributes (``{"train_x": ..., ...}``)."""
    if isinstance(data, Mapping):
        return SimpleNamespace(**{k: data[k] for k in ("train_x", "train_y", "test_x", "test_y") if k in data})
    return data


def check_training_data(data, config: TrainConfig) -> None:
    """Check ``data`` against ``config`` without copying it (:class:`ValidationError` otherwise)."""
    data = as_training_data(data)
    missing = [a for a in ("train_x", "train_y", "test_x", "test_y") if not hasattr(data, a)]
    if missing:
        raise ValidationError(f"data: expected an object with arrays train_x, train_y, test_x and test_y (e.g. "
                              f"experiments.datasets.Dataset), got a {type(data).__name__} without "
                              + ", ".join(missing))
    n_in = config.widths[0]
    for split in ("train", "test"):
        x, y = np.asarray(getattr(data, f"{split}_x")), np.asarray(getattr(data, f"{split}_y"))
        if x.ndim != 2 or x.shape[1] != n_in or x.shape[0] == 0:
            raise ValidationError(f"data.{split}_x: expected shape (n > 0, {n_in}) (widths[0] = {n_in} inputs), "
                                  f"got {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise ValidationError(f"data.{split}_x: expected finite numbers, got dtype {x.dtype} with non-finite "
                                  "or non-numeric entries")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValidationError(f"data.{split}_y: expected {x.shape[0]} integer labels (one per row of "
                                  f"{split}_x), got dtype {y.dtype}, shape {y.shape}")
        if y.min() < 0 or y.max() >= config.n_out:
            raise ValidationError(f"data.{split}_y: expected labels in 0..{config.n_out - 1} (n_out = "
                                  f"{config.n_out}), got {y.min()}..{y.max()}")
    n_train = len(data.train_y)
    if config.batch > n_train:
        raise ValidationError(f"batch: expected at most the {n_train} training samples, got {config.batch}")


def data_digest(data) -> str:
    """SHA-256 over the four arrays (dtype, shape and bytes): the same digest means the same data."""
    h = hashlib.sha256()
    for name in ("train_x", "train_y", "test_x", "test_y"):
        a = np.ascontiguousarray(getattr(data, name))
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# --------------------------------------------------------------------------- threads

def blas_libraries() -> list:
    """Each loaded BLAS: library, version, the CPU kernels it chose at run time and its threads.

    Runs whose floating-point results differ between machines (LU factorisations,
    products) usually differ here: OpenBLAS picks its kernels by CPU.
    """
    from threadpoolctl import threadpool_info

    return [{"library": Path(i["filepath"]).name, "version": i.get("version"),
             "architecture": i.get("architecture"), "threads": i.get("num_threads")}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def blas_start_threads() -> list:
    """Each BLAS library's thread count outside any limit (for OpenBLAS: what it started with).

    OpenBLAS started with one thread rounds differently from one started with more and limited
    to one, so a run's bits depend on it (``python -m experiments train`` starts it with one).
    """
    return [b["threads"] for b in blas_libraries()]


def blas_threads(n: int | None):
    """Context manager limiting BLAS threads to ``n`` (None: leave as is)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_lu_threads() -> int:
    """The cores this process may use, at most 2 (measured: a third LU thread gains nothing at 784 wide)."""
    return min(2, available_cores())


def lu_inverse(lu_threads: int | None = None) -> DirectInverse:
    """The exact layer inverses on ``lu_threads`` threads (None: :func:`default_lu_threads`); same results for any."""
    return DirectInverse(default_lu_threads() if lu_threads is None else check_count("lu_threads", lu_threads))


# --------------------------------------------------------------------------- run directory

_HELD_LOCKS: dict = {}  # run directories this process holds: resolved path -> nesting depth


@contextlib.contextmanager
def run_dir_lock(out):
    """Hold the exclusive lock of the run directory ``out`` (``out/.lock``, a :mod:`filelock` lock).

    Two processes writing one directory would overwrite each other's checkpoints and
    records: the second gets :class:`RunDirBusyError` naming the holder's process id.
    The lock is released by the operating system if the process dies.  A process that
    already holds the lock may take it again (nested studies, e.g. a study that trains).
    """
    from filelock import FileLock, Timeout

    out = Path(out).resolve()
    if out in _HELD_LOCKS:
        _HELD_LOCKS[out] += 1
        try:
            yield out
        finally:
            _HELD_LOCKS[out] -= 1
        return
    lock, owner = FileLock(str(out / LOCK_FILE), timeout=0), out / (LOCK_FILE + ".pid")
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = f"process {owner.read_text().strip()}"
        except OSError:
            holder = "another process"
        raise RunDirBusyError(
            f"{out}: expected no other process writing to this directory, but {holder} holds its lock "
            f"({LOCK_FILE}); wait for it to finish (a training run: then resume it) or use another output "
            "directory (--out)") from None
    _HELD_LOCKS[out] = 1
    try:
        owner.write_text(f"{os.getpid()}\n")
        yield out
    finally:
        del _HELD_LOCKS[out]
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()


def holds_run(out) -> list:
    """The training-run files present in ``out`` (checkpoints, metrics): empty if it holds no run."""
    out = Path(out)
    return [name for name in (CHECKPOINT, PREVIOUS_CHECKPOINT, METRICS) if (out / name).exists()]


def check_run_dir(out, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (:class:`RunExistsError`) to start a new run in a directory that holds one.

    ``resume`` continues the run there; ``overwrite`` replaces it (its files are removed
    when training starts).  Reads only; changes nothing.
    """
    if resume and overwrite:
        raise ValidationError("resume and overwrite: expected at most one (continue the run, or replace it), "
                              "got both")
    found = holds_run(out)
    if found and not (resume or overwrite):
        raise RunExistsError(
            f"{out}: already holds a training run ({', '.join(found)}); continue it with --resume (resume=True), "
            "replace it with --overwrite (overwrite=True), or use another output directory")


def _start_run_dir(out: Path, overwrite: bool) -> None:
    """Under the lock: remove the temporary files of a killed writer and, with ``overwrite``, the old run."""
    names = [CHECKPOINT + ".tmp", METRICS + ".tmp"] + (holds_run(out) if overwrite else [])
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


# --------------------------------------------------------------------------- checkpoints

def _checksum(meta_json: str, arrays: dict) -> str:
    h = hashlib.sha256(meta_json.encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _replace_durably(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    with contextlib.suppress(OSError, AttributeError):  # the rename itself reaches the disk (POSIX)
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(path, config: TrainConfig, net: Network, opt: Adam, epoch: int, history: list, times: list,
                    blas_threads_at_start=None, digest: str | None = None, update_state: dict | None = None) -> None:
    """Write the state after ``epoch`` to ``path`` atomically; the file it replaces becomes ``*.prev.npz``.

    The new file is written beside it and fsynced first, so a failed write (disk full) leaves
    the old checkpoint in place and no temporary file behind.  ``update_state``: the state of
    the run's update (e.g. learned feedback weights), a dict whose values are arrays, lists
    of arrays or JSON values; arrays go to entries ``update_<key>_<i>``, the rest to the
    metadata (``"update_state"``); :func:`read_update_state` reads it back.
    """
    path = Path(path)
    arrays = {f"w{i}": w for i, w in enumerate(net.weights)}
    arrays.update({f"b{i}": b for i, b in enumerate(net.biases)})
    arrays.update({f"m{i}": m for i, m in enumerate(opt.m)})
    arrays.update({f"v{i}": v for i, v in enumerate(opt.v)})
    extra = {}
    if update_state is not None:
        described, state_arrays = _split_state(update_state)
        arrays.update(state_arrays)
        extra["update_state"] = described
    meta = json.dumps({"format": CHECKPOINT_FORMAT, "config": asdict(config), "epoch": epoch,
                       "adam_steps": opt.step_count, "history": history, "times": times,
                       "blas_start_threads": blas_threads_at_start, "data_digest": digest, **extra})
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(meta), checksum=np.array(_checksum(meta, arrays)), **arrays)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if path.exists():
        _replace_durably(path, path.with_suffix(".prev.npz"))
    _replace_durably(tmp, path)


def _split_state(state: dict) -> tuple[dict, dict]:
    """(JSON description, arrays) of an update's state: arrays and lists of arrays become named entries."""
    described, arrays = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[f"update_{key}"] = value
            described[key] = {"array": f"update_{key}"}
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, np.ndarray) for v in value):
            names = [f"update_{key}_{i}" for i in range(len(value))]
            arrays.update(zip(names, value))
            described[key] = {"arrays": names}
        else:
            described[key] = {"value": value}
    return described, arrays


def read_update_state(meta: dict, arrays: dict) -> dict | None:
    """The update's state saved by :func:`save_checkpoint` (None if the checkpoint holds none)."""
    described = meta.get("update_state")
    if described is None:
        return None
    state = {}
    for key, entry in described.items():
        if "array" in entry:
            state[key] = arrays[entry["array"]]
        elif "arrays" in entry:
            state[key] = [arrays[name] for name in entry["arrays"]]
        else:
            state[key] = entry["value"]
    return state


def read_checkpoint(path) -> tuple[dict, dict]:
    """(meta, arrays) of a checkpoint, its checksum verified; :class:`CheckpointError` naming the file otherwise.

    Checkpoints of format 1 (no checksum, no data digest) are read as they are.
    """
    path = Path(path)
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
        meta_json = str(arrays.pop("meta"))
        meta = json.loads(meta_json)
        stored = arrays.pop("checksum", None)
        for key in ("config", "epoch", "adam_steps", "history", "times"):
            meta[key]  # noqa: B018  (a KeyError names the missing entry)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: expected a checkpoint file, found none") from None
    except Exception as err:  # noqa: BLE001  (truncated, zeroed or damaged files fail in many ways)
        raise CheckpointError(f"{path}: expected a readable checkpoint, but it is damaged ({type(err).__name__}: "
                              f"{err}){_previous_hint(path)}") from err
    if stored is not None and str(stored) != _checksum(meta_json, arrays):
        raise CheckpointError(f"{path}: expected the checksum stored in the checkpoint, but its content differs "
                              f"(the file is damaged){_previous_hint(path)}")
    return meta, arrays


def _previous_hint(path: Path) -> str:
    prev = path.with_suffix(".prev.npz")
    if path.name.endswith(".prev.npz") or not prev.exists():
        return ""
    try:
        epoch = read_checkpoint(prev)[0]["epoch"]
    except CheckpointError:
        return f"; the previous checkpoint {prev} is damaged too"
    return (f"; the previous checkpoint {prev} (after epoch {epoch}) is intact: move it to {path} "
            "and resume again to continue from there")


def _restore(path: Path, meta: dict, arrays: dict, config: TrainConfig, net: Network, opt: Adam,
             digest: str | None, update=None) -> None:
    saved = {k: v for k, v in with_defaults(meta["config"]).items() if k not in RESUMABLE_CHANGES}
    wanted = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    if saved["dtype"] != wanted["dtype"]:
        raise CheckpointError(f"{path}: dtype: expected {saved['dtype']!r}, the type the checkpoint was trained in "
                              f"(its weights and Adam's moments), got {wanted['dtype']!r}; resume with dtype "
                              f"{saved['dtype']!r} (CLI: --dtype {saved['dtype']}), or train {wanted['dtype']} in "
                              "another output directory (the checkpoint is left as it is)")
    if saved != wanted:
        diff = {k: (saved.get(k), wanted.get(k)) for k in wanted if saved.get(k) != wanted.get(k)}
        raise CheckpointError(f"{path}: the checkpoint was made with another configuration (saved vs now: {diff}); "
                              "resume with the same settings or use another output directory")
    saved_digest = meta.get("data_digest")
    if saved_digest is not None and digest is not None and saved_digest != digest:
        raise CheckpointError(f"{path}: the checkpoint was trained on other data (data digest {saved_digest[:12]}... "
                              f"vs {digest[:12]}... now); resume with the same data (e.g. the same --data-dir) or "
                              "use another output directory")
    L = len(net.weights)
    try:
        for i in range(L):
            net.weights[i][...] = arrays[f"w{i}"]
            net.biases[i][...] = arrays[f"b{i}"]
        opt.m = [arrays[f"m{i}"].copy() for i in range(2 * L)]
        opt.v = [arrays[f"v{i}"].copy() for i in range(2 * L)]
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: expected the arrays of a network of widths {config.widths}, got "
                              f"{type(err).__name__}: {err}") from None
    opt.step_count = meta["adam_steps"]
    _restore_update(path, meta, arrays, update)


def _restore_update(path: Path, meta: dict, arrays: dict, update) -> None:
    """Give the run's update the state saved with it; refuse a checkpoint that has none for an update that keeps one."""
    keeps = callable(getattr(update, "state", None)) and update.state() is not None
    if "update_state" not in meta:
        if keeps:
            raise CheckpointError(f"{path}: expected the state of the run's update ({type(update).__name__}) in the "
                                  "checkpoint, got none: it was written by a run without it; use another output "
                                  "directory")
        return
    if not callable(getattr(update, "load_state", None)):
        raise CheckpointError(f"{path}: the checkpoint holds the state of an update ({sorted(meta['update_state'])}) "
                              "that this run does not have; resume with the same settings")
    try:
        update.load_state(read_update_state(meta, arrays))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: expected the saved state of the run's update, got {type(err).__name__}: "
                              f"{err}") from None


# --------------------------------------------------------------------------- records

def write_metrics(path, history: list) -> None:
    """``history`` as tidy CSV (epoch, step, split, metric, value), replaced atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["epoch", "step", "split", "metric", "value"])
            writer.writeheader()
            writer.writerows(history)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)


def read_metrics(path) -> list:
    """The rows :func:`write_metrics` wrote: ``epoch`` and ``step`` as int, ``value`` as float."""
    with open(path, newline="") as fh:
        return [{**r, "epoch": int(r["epoch"]), "step": int(r["step"]), "value": float(r["value"])}
                for r in csv.DictReader(fh)]


def _series(history: list, split: str, metric: str) -> list:
    return [(r["epoch"], r["value"]) for r in history if r["split"] == split and r["metric"] == metric]


def summarise(history: list, times: list) -> dict:
    """Peak and final accuracies, seconds per epoch, the evaluations' cost and (circuit) unsettled samples.

    The peaks are taken over the evaluations after training started (every epoch, or every
    ``eval_every`` batches); ``peak_test_epoch`` and ``peak_test_step`` (batches trained)
    locate the first evaluation that reached the peak test accuracy.  ``evaluation_overhead``:
    evaluation seconds over training seconds; ``evaluation_share``: the evaluations' share of both.
    """
    test_acc, train_acc = _series(history, "test", "accuracy"), _series(history, "train", "accuracy")
    trained = [(r["epoch"], r["step"], r["value"]) for r in history
               if r["split"] == "test" and r["metric"] == "accuracy" and r["epoch"] > 0]
    peak = max(trained, key=lambda r: r[2]) if trained else (None, None, float("nan"))  # max: the first of equals
    train_s = sum(t["train_seconds"] for t in times)
    eval_s = sum(t["eval_seconds"] for t in times)
    result = {
        "peak_test_accuracy": peak[2],
        "peak_test_epoch": peak[0],
        "peak_test_step": peak[1],
        "final_test_accuracy": test_acc[-1][1],
        "peak_train_accuracy": max(v for e, v in train_acc if e > 0) if len(train_acc) > 1 else float("nan"),
        "final_train_accuracy": train_acc[-1][1],
        "evaluations": len(trained),
        "seconds_per_epoch": train_s / max(len(times), 1),
        "evaluation_overhead": eval_s / train_s if train_s else float("nan"),
        "evaluation_share": eval_s / (train_s + eval_s) if train_s + eval_s else float("nan"),
    }
    feedback = [r for r in history if r["split"] == "feedback"]
    if feedback:
        last = max(r["epoch"] for r in feedback)
        result["feedback_final"] = {r["metric"]: r["value"] for r in feedback if r["epoch"] == last}
    unsettled = _series(history, "train_running", "unsettled_samples")
    if unsettled:
        result["unsettled_samples"] = int(sum(v for _, v in unsettled))
        result["unsettled_samples_per_epoch"] = [int(v) for _, v in unsettled]
    return result


@dataclass
class TrainResult:
    """A finished :func:`train`: the trained network and optimiser, and the run's history in memory.

    ``rows``: one dict per (epoch, split, metric), as in metrics.csv: splits "train" (a fixed
    subset of up to 5000 training samples) and "test" evaluated after each epoch (epoch 0:
    before training; with ``config.eval_every``: the whole training set, also every that many
    batches, each row with its epoch and ``step``, the batches trained so far),
    "train_running" the running loss and accuracy during the epoch (and,
    for the circuit engine, "unsettled_samples": samples whose settle did not reach its
    tolerance).  ``epoch_times``: training and evaluation seconds per epoch.  ``summary``:
    :func:`summarise` of the rows.
    """

    config: TrainConfig
    network: Network
    optimizer: Adam
    rows: list
    epoch_times: list
    summary: dict

    def series(self, split: str, metric: str, by: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of one metric, e.g. ``series("test", "accuracy")``; ``by="step"``: (batches, values)."""
        check_choice("by", by, ("epoch", "step"))
        pts = [(r[by], r["value"]) for r in self.rows if r["split"] == split and r["metric"] == metric]
        return np.array([e for e, _ in pts], dtype=int), np.array([v for _, v in pts], dtype=float)


# --------------------------------------------------------------------------- the loop

def train(config: TrainConfig, data: TrainingData, out=None, *, resume: bool = False, overwrite: bool = False,
          update: Callable | None = None, lu_threads: int | None = None, on_batch: Callable | None = None,
          progress: bool = True, label: str = "") -> TrainResult:
    """Train per ``config`` on ``data``; return the history in memory (:class:`TrainResult`).

    Parameters
    ----------
    config : TrainConfig
        ``lr``/``regulariser`` left as None take the rule's paper values.  ``engine="circuit"``
        needs the circuit's update: run it with :func:`circuit.learning.train`.
    data : object with train_x (n, n_0), train_y (n,), test_x, test_y arrays
        See the module's docstring; checked against ``config`` before anything runs.
    out : path, optional
        Run directory: if given, a checkpoint and metrics.csv are written after every epoch
        (nothing is written otherwise).  A directory that already holds a run is refused
        (:class:`RunExistsError`) unless ``resume`` (continue it, bit-identically, after
        checking its configuration and data) or ``overwrite`` (replace it).  One process at
        a time (:class:`RunDirBusyError`).
    update : callable, optional
        ``update(net, x, target, fwd) -> (dW, db)`` replaces the rule's descent directions
        (see :func:`train_epoch`).
    lu_threads : int, optional
        Threads factorising the layers' inverses (default :func:`default_lu_threads`); changes
        speed, never results.
    on_batch : callable, optional
        ``on_batch(epoch, i, n_batches, running_loss)`` after every batch.
    progress : bool
        Show a progress bar with ETA (tqdm) and one line per epoch on stderr.
    label : str
        Prefix of the progress display.

    Returns
    -------
    TrainResult
        The trained network and optimiser, the per-epoch rows and their summary.

    Raises
    ------
    ValidationError
        A bad setting or data that do not fit the configuration (before anything is created).
    RunExistsError, RunDirBusyError, CheckpointError
        ``out`` holds a run (neither resume nor overwrite), is being written by another
        process, or its checkpoint is damaged or belongs to another configuration or data.
    """
    if config.engine == "circuit" and update is None:
        raise ValidationError("engine: 'circuit' takes its updates from the circuit; train it with "
                              "circuit.train (circuit.learning.train), which supplies them, or use engine 'discrete'")
    config.validate()
    cfg = config.resolved()
    data = as_training_data(data)
    check_training_data(data, cfg)
    if lu_threads is not None:
        check_count("lu_threads", lu_threads)
    if out is None:
        if resume or overwrite:
            raise ValidationError("out: expected the run directory to resume or overwrite, got None")
        return _train(cfg, data, None, False, update, lu_threads, on_batch, progress, label)
    out = Path(out)
    check_run_dir(out, resume, overwrite)  # before anything is created
    out.mkdir(parents=True, exist_ok=True)
    with run_dir_lock(out):
        check_run_dir(out, resume, overwrite)
        _start_run_dir(out, overwrite)
        return _train(cfg, data, out, resume, update, lu_threads, on_batch, progress, label)


def _say(progress: bool, message: str) -> None:
    if progress:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)


def _resume(out: Path, cfg, net, opt, digest, blas, progress, update=None):
    ckpt = out / CHECKPOINT
    if not ckpt.exists() and (out / PREVIOUS_CHECKPOINT).exists():
        ckpt = out / PREVIOUS_CHECKPOINT  # a writer stopped between the two renames of save_checkpoint
    if not ckpt.exists():
        return 1, [], []
    meta, arrays = read_checkpoint(ckpt)
    _restore(ckpt, meta, arrays, cfg, net, opt, digest, update)
    _say(progress, f"[train] resuming after epoch {meta['epoch']} from {ckpt}"
         + ("" if meta.get("data_digest") else " (a checkpoint without a data digest: the data are not checked)"))
    saved_blas = meta.get("blas_start_threads")
    if saved_blas is not None and saved_blas != blas:
        print(f"[train] warning: the checkpoint was written by a process whose BLAS started with {saved_blas} "
              f"thread(s), this one with {blas}: the run continues correctly, but its last bits will differ "
              "from an uninterrupted run (resume with `python -m experiments train`, which starts OpenBLAS "
              "with one thread, or set OPENBLAS_NUM_THREADS as the first process had it)", file=sys.stderr)
    return meta["epoch"] + 1, meta["history"], meta["times"]


def _train(cfg, data, out, resume, update, lu_threads, on_batch, progress, label) -> TrainResult:
    from tqdm import tqdm

    net, opt = build_model(cfg)
    update = make_update(cfg, net, data, update)
    history, first_epoch, times = [], 1, []
    blas = blas_start_threads()
    digest = data_digest(data) if out is not None else None
    if resume:
        first_epoch, history, times = _resume(out, cfg, net, opt, digest, blas, progress, update)
    eval_idx = None if cfg.eval_every is not None else np.random.default_rng([cfg.seed, 10**6]).choice(
        len(data.train_y), min(EVAL_TRAIN_SAMPLES, len(data.train_y)), replace=False)  # None: every sample
    batches_per_epoch = len(data.train_y) // cfg.batch
    inverse = lu_inverse(lu_threads)
    update_rows = getattr(update, "evaluation_rows", None)
    update_state = getattr(update, "state", None)
    if not history:
        history += evaluation_rows(net, cfg, data, eval_idx, epoch=0, step=0)
        if update_rows is not None:
            with blas_threads(DEFAULT_BLAS_THREADS):
                history += update_rows(net, 0, 0)
    for epoch in range(first_epoch, cfg.epochs + 1):
        bar = tqdm(total=batches_per_epoch, desc=f"[train] {label}epoch {epoch}/{cfg.epochs}", unit="batch",
                   file=sys.stderr, leave=False, disable=not progress,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s

        between = [0.0]  # seconds of this epoch's evaluations between its batches (eval_every)

        def hook(i, n, running_loss, epoch=epoch, bar=bar, between=between, history=history):
            bar.update(1)
            bar.set_postfix(loss=f"{running_loss:.4f}", refresh=False)
            step = (epoch - 1) * n + i + 1
            if cfg.eval_every is not None and step % cfg.eval_every == 0 and i + 1 < n:  # the epoch's end follows
                start = time.perf_counter()
                history.extend(evaluation_rows(net, cfg, data, eval_idx, epoch=epoch, step=step))
                between[0] += time.perf_counter() - start
            if on_batch is not None:
                on_batch(epoch, i, n, running_loss)

        t0 = time.perf_counter()
        try:
            with blas_threads(DEFAULT_BLAS_THREADS):
                stats = train_epoch(net, opt, data.train_x, data.train_y, rule=cfg.rule, seed=cfg.seed, epoch=epoch,
                                    batch=cfg.batch, gamma=cfg.gamma, regulariser=cfg.regulariser, loss=cfg.loss,
                                    update=update, on_batch=hook, inverse=inverse,
                                    regulariser_threads=inverse.threads)
                t1 = time.perf_counter()
                rows = evaluation_rows(net, cfg, data, eval_idx, epoch=epoch, step=epoch * batches_per_epoch)
                if update_rows is not None:
                    rows += update_rows(net, epoch, epoch * batches_per_epoch)
                t2 = time.perf_counter()
        finally:
            bar.close()
        rows += [{"epoch": epoch, "step": epoch * batches_per_epoch, "split": "train_running",
                  "metric": k.removeprefix("running_"),
                  "value": v} for k, v in stats.items()]
        history += rows
        train_s, eval_s = t1 - t0 - between[0], t2 - t1 + between[0]
        times.append({"epoch": epoch, "train_seconds": train_s, "eval_seconds": eval_s})
        test_acc = next(r["value"] for r in rows if r["split"] == "test" and r["metric"] == "accuracy")
        unsettled = stats.get("unsettled_samples")
        _say(progress, f"[train] {label}epoch {epoch}/{cfg.epochs}: {train_s:.1f} s training "
             f"({batches_per_epoch / train_s:.1f} batches/s), evaluation {eval_s:.1f} s "
             f"({100 * eval_s / train_s:.1f}%), test accuracy {test_acc:.4f}"
             + (f", {unsettled} samples did not settle" if unsettled else ""))
        if out is not None:
            save_checkpoint(out / CHECKPOINT, cfg, net, opt, epoch, history, times, blas, digest,
                            update_state() if update_state is not None else None)
            write_metrics(out / METRICS, history)
    return TrainResult(cfg, net, opt, history, times, summarise(history, times))


def evaluation_rows(net, cfg, data, eval_idx, epoch, step) -> list:
    """Loss and accuracy on the training samples ``eval_idx`` (None: all) and on the test set, as tidy rows."""
    rows = []
    train = (data.train_x, data.train_y) if eval_idx is None else (data.train_x[eval_idx], data.train_y[eval_idx])
    for split, (x, y) in {"train": train, "test": (data.test_x, data.test_y)}.items():
        loss, acc = evaluate(net, x, y, cfg.loss)
        rows += [{"epoch": epoch, "step": step, "split": split, "metric": "loss", "value": loss},
                 {"epoch": epoch, "step": step, "split": split, "metric": "accuracy", "value": acc}]
    return rows
