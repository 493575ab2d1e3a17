"""Learning by the circuit: every weight update from the circuit's steady state and its local rule.

:func:`train` runs a :class:`models.training.TrainConfig` honouring ``config.engine``:
"discrete" trains with the discrete rules (:func:`models.training.train`), "circuit" takes
each batch's update from the fast engine (:class:`CircuitUpdate`): the circuit settles with
the input clamped and the output nudged toward the constructed target, and the local rule
(somatic minus basal potential, times the presynaptic rate) gives (dW, db).

>>> from models.training import TrainConfig
>>> result = train(TrainConfig(rule="gait", widths=[49, 49, 49, 10], engine="circuit", gamma=1e-3), data)
>>> epochs, accuracy = result.series("test", "accuracy")

With ``noise > 0`` the rate dynamics carry white noise and the readout is the time
average of an Euler-Maruyama run (see :data:`NOISY_DURATION`).  Written against the
engine API whose durations are in seconds (multiples of ``spec.tau``).
"""

from __future__ import annotations

import zlib

import numpy as np

from models.errors import ValidationError
from models.training import TrainConfig, TrainResult, lu_inverse
from models.training import train as train_discrete
from models.validation import check_choice, check_gamma

from .fast import FastEngine
from .spec import MODES, SCHEDULES, build_circuit, coupling_schedule

__all__ = ["CircuitUpdate", "train", "check_config", "NOISY_DT", "NOISY_DURATION", "NOISY_AVERAGE_FROM"]

#: Noisy circuit training, in units of tau: Euler-Maruyama steps of NOISY_DT for NOISY_DURATION from the free
#: phase; the readout is the average after NOISY_AVERAGE_FROM.  The Euler fixed point is the steady state itself,
#: so the step only shapes the noise, not the mean; Euler is stable for the circuit's eigenvalues in
#: [-2, 0)/tau up to 1 tau.
NOISY_DT, NOISY_DURATION, NOISY_AVERAGE_FROM = 0.25, 120.0, 20.0


def check_config(config: TrainConfig) -> TrainConfig:
    """Check the circuit settings of ``config`` (engine "circuit"); :class:`ValidationError` otherwise."""
    if config.rule not in MODES:
        raise ValidationError(f"rule: expected 'gait' or 'itp' with engine 'circuit' (the coupling mode), "
                              f"got {config.rule!r}")
    check_choice("schedule", config.schedule, SCHEDULES)
    check_gamma(coupling_schedule(config.schedule, config.gamma, len(config.widths) - 1), len(config.widths) - 1,
                name="gamma (per layer, from the schedule)")
    return config


class CircuitUpdate:
    """An ``update`` for :func:`models.training.train_epoch`: the circuit's local rule at steady state.

    Called as ``update(net, x, target, fwd) -> (dW, db)``.  A sample whose settle does not
    reach the engine's tolerance within its time budget keeps the state it reached (as a
    circuit read out at that time would; divergence still raises); :meth:`epoch_statistics`
    counts them (``"unsettled_samples"``).  ``lu_threads`` (default
    :func:`models.training.default_lu_threads`): threads factorising the circuit's layers
    (same results for any).
    """

    def __init__(self, config: TrainConfig, lu_threads: int | None = None):
        self.config = check_config(config)
        self.gammas = coupling_schedule(config.schedule, config.gamma, len(config.widths) - 1)
        self.inverse = lu_inverse(lu_threads)
        self.unsettled = 0

    def __call__(self, net, x, target, fwd):
        cfg = self.config
        spec = build_circuit(net, self.gammas, cfg.rule)
        engine = FastEngine(spec, inverse=self.inverse)
        if cfg.noise > 0:  # the noise seed follows the batch's content, so a resumed run stays bit-identical
            seed = [cfg.seed, zlib.crc32(np.ascontiguousarray(x).tobytes())]
            state = engine.settle_noisy(x, target, cfg.noise, duration=NOISY_DURATION * spec.tau,
                                        average_from=NOISY_AVERAGE_FROM * spec.tau, dt=NOISY_DT * spec.tau,
                                        seed=seed, forward=fwd, on_failure="mask")
        else:
            state = engine.settle_nudged(x, target, on_failure="mask", forward=fwd)
        self.unsettled += int(np.sum(~np.asarray(state.converged)))
        return engine.plasticity(state, x)

    def epoch_statistics(self) -> dict:
        """Samples that did not settle since the last call; resets the count.

        Noise-free: the settle missed its tolerance within its time budget; noisy: the time-averaged
        state's residual is above the engine's ``settle_noisy`` tolerance.
        """
        counts = {"unsettled_samples": self.unsettled}
        self.unsettled = 0
        return counts


def train(config: TrainConfig, data, out=None, *, lu_threads: int | None = None, **options) -> TrainResult:
    """Train per ``config``, with the circuit's updates if ``config.engine == "circuit"``.

    The same arguments and result as :func:`models.training.train` (``out``, ``resume``,
    ``overwrite``, ``on_batch``, ``progress``, ``label``); the history in memory, files only
    if ``out`` is given.  With the circuit engine, the rows also count per epoch the samples
    that did not settle (split "train_running", metric "unsettled_samples").
    """
    if config.engine == "circuit":
        options["update"] = CircuitUpdate(config, lu_threads)
    return train_discrete(config, data, out, lu_threads=lu_threads, **options)
