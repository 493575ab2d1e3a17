"""Every exception the library raises, in one place.

Each subclasses the built-in exception a caller would already catch (``ValueError`` for
bad arguments, ``RuntimeError`` for a run that cannot go on), so ``except ValueError``
keeps working.  Messages name the argument, what was expected and what was got.
``circuit`` and ``experiments`` re-export the classes that concern them.
"""

from __future__ import annotations

__all__ = [
    "GaitCircuitError", "ValidationError", "SingularWeightsError", "NonFiniteError",
    "CircuitError", "DivergenceError", "ConvergenceError",
    "DataFormatError", "DataNotFoundError",
    "RunDirBusyError", "RunExistsError", "CheckpointError",
]


class GaitCircuitError(Exception):
    """Base class of every exception raised by this project (catch it to catch them all)."""


class ValidationError(GaitCircuitError, ValueError):
    """An argument has the wrong type, shape or value."""


class SingularWeightsError(ValidationError):
    """A weight matrix cannot be inverted reliably (singular or badly conditioned)."""


class NonFiniteError(GaitCircuitError, FloatingPointError):
    """A computation produced NaN or infinite values (e.g. overflow from huge inputs)."""


class CircuitError(GaitCircuitError, RuntimeError):
    """Base class of run-time failures of a circuit."""


class DivergenceError(CircuitError):
    """The dynamics diverge (an eigenvalue of the linearised system has positive real part)."""


class ConvergenceError(CircuitError):
    """A settle did not reach its tolerance; ``residuals`` holds the per-sample residuals."""

    def __init__(self, message, residuals=None):
        super().__init__(message)
        self.residuals = residuals


class DataFormatError(ValidationError):
    """A data file is corrupt or not of the expected format."""


class DataNotFoundError(GaitCircuitError, FileNotFoundError):
    """A dataset's files are not where they were looked for."""


class RunDirBusyError(GaitCircuitError, RuntimeError):
    """Another process is writing to the same output directory."""


class RunExistsError(GaitCircuitError, FileExistsError):
    """The output directory already holds a run, and neither resuming nor overwriting was asked."""


class CheckpointError(GaitCircuitError, ValueError):
    """A checkpoint file is unreadable (truncated, corrupt) or belongs to another run."""
