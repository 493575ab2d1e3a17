"""The continuous-time GAIT/ITP circuit: one specification, several engines.

>>> spec = build_circuit(models.init_network([20] * 5), gamma=1e-3, mode="gait", tau=0.01)
>>> engine = make_engine(spec, "fast")           # or "brian2"
>>> state = engine.settle_nudged(x, target)
>>> dW, db = engine.plasticity(state, x)
>>> trajectory = engine.simulate(x, target, duration=0.3)   # seconds, or a Brian2 quantity (300*ms)
>>> result = train(TrainConfig(widths=[49, 49, 49, 10], engine="circuit"), data)  # learning by the circuit

Every engine implements :class:`Engine` (circuit/engine.py): the same verbs, options and
units.  Every duration is in seconds (a float or a Brian2 quantity, see
:func:`to_seconds`); every tolerance is ``rtol``.
"""

from . import learning
from .engine import Engine
from .fast import FastEngine
from .learning import CircuitUpdate, train
from .results import SteadyState, Trajectory, require_convergence
from .spec import (
    MODES,
    SCHEDULES,
    CircuitError,
    CircuitSpec,
    ConvergenceError,
    DivergenceError,
    build_circuit,
    coupling_schedule,
    load_spec,
    save_spec,
)
from .stability import largest_real_eigenvalue
from .units import to_seconds

ENGINES = ("fast", "brian2")


def make_engine(spec: CircuitSpec, engine: str = "fast", **options) -> Engine:
    """An engine that runs ``spec``: "fast" (numpy/scipy) or "brian2" (options: see each engine)."""
    if engine == "fast":
        return FastEngine(spec, **options)
    if engine == "brian2":
        from .brian import Brian2Engine

        return Brian2Engine(spec, **options)
    raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")


__all__ = ["ENGINES", "MODES", "SCHEDULES", "CircuitError", "CircuitSpec", "ConvergenceError", "DivergenceError",
           "Engine", "FastEngine", "SteadyState", "Trajectory", "build_circuit", "coupling_schedule",
           "largest_real_eigenvalue", "load_spec", "make_engine", "require_convergence", "save_spec", "to_seconds"]
__all__ += ["CircuitUpdate", "learning", "train"]  # learning by the circuit (circuit/learning.py)
