"""Durations in seconds, converted once (circuit.units.to_seconds); brian2 only where it is used."""

import subprocess
import sys

import pytest

import models
from circuit.units import to_seconds


def test_floats_and_brian2_quantities_become_seconds():
    from brian2 import ms, second, us

    assert to_seconds(0.01, "tau") == 0.01
    assert to_seconds(10 * ms, "tau") == pytest.approx(0.01, rel=1e-15)
    assert to_seconds(250 * us, "dt") == pytest.approx(2.5e-4, rel=1e-15)
    assert to_seconds(2 * second, "duration") == 2.0
    assert to_seconds(0, "average_from", allow_zero=True) == 0.0


@pytest.mark.parametrize("value, got", [(0, "got 0"), (-0.001, "got -0.001"), (float("inf"), "got inf"),
                                        (float("nan"), "got nan"), ("10 ms", "got str '10 ms'"),
                                        (True, "got bool True"), (None, "got NoneType None")])
def test_a_bad_duration_names_the_argument_the_range_and_the_value(value, got):
    with pytest.raises(models.ValidationError,
                       match=rf"dt: expected a duration > 0 \(seconds, or a Brian2 quantity such as 0.1\*ms\), {got}"):
        to_seconds(value, "dt")


def test_a_quantity_must_be_one_time():
    import numpy as np
    from brian2 import ms, mV

    with pytest.raises(models.ValidationError, match=r"tau: .*got 5. \* mvolt, which is not a time"):
        to_seconds(5 * mV, "tau")
    with pytest.raises(models.ValidationError, match="duration: .*got an array of 2 durations"):
        to_seconds(np.array([1.0, 2.0]) * ms, "duration")
    with pytest.raises(models.ValidationError, match=r"max_time: expected a duration > 0 .*got -1. \* msecond"):
        to_seconds(-1 * ms, "max_time")


def test_the_spec_and_the_fast_engine_do_not_import_brian2():
    code = ("import sys, numpy as np, circuit, models\n"
            "net = models.init_network([4, 4, 3], seed=0)\n"
            "engine = circuit.make_engine(circuit.build_circuit(net, 0.1, tau=0.02), 'fast')\n"
            "x = np.ones((2, 4))\n"
            "engine.simulate(x, net.forward(x).rates[-1], duration=0.1, n_points=3)\n"
            "assert 'brian2' not in sys.modules, 'brian2 imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
