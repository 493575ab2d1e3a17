"""The continuous-time GAIT/ITP circuit: one specification, several engines.

>>> spec = build_circuit(models.init_network([20] * 5), gamma=1e-3, mode="gait")
>>> engine = make_engine(spec, "fast")           # or "brian2"
>>> state = engine.settle_nudged(x, target)
>>> dW, db = engine.plasticity(state, x)
>>> result = train(TrainConfig(widths=[49, 49, 49, 10], engine="circuit"), data)  # learning by the circuit
"""

from . import learning
from .fast import FastEngine
from .learning import CircuitUpdate, train
from .results import SteadyState, Trajectory
from .spec import (
    MODES,
    SCHEDULES,
    CircuitError,
    CircuitSpec,
    ConvergenceError,
    DivergenceError,
    build_circuit,
    coupling_schedule,
)
from .stability import largest_real_eigenvalue

ENGINES = ("fast", "brian2")


def make_engine(spec: CircuitSpec, engine: str = "fast", **options):
    """An engine that runs ``spec``: "fast" (numpy/scipy) or "brian2"."""
    if engine == "fast":
        return FastEngine(spec, **options)
    if engine == "brian2":
        from .brian import Brian2Engine

        return Brian2Engine(spec, **options)
    raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")


__all__ = ["ENGINES", "MODES", "SCHEDULES", "CircuitError", "CircuitSpec", "ConvergenceError", "DivergenceError",
           "FastEngine", "SteadyState", "Trajectory", "build_circuit", "coupling_schedule", "largest_real_eigenvalue",
           "make_engine"]
__all__ += ["CircuitUpdate", "learning", "train"]  # learning by the circuit (circuit/learning.py)
