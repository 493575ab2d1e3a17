"""Describe, save and load networks and circuit specifications."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import circuit
import models
from models.errors import DataFormatError
from tests.helpers import random_batch

ROOT = Path(__file__).resolve().parents[1]


def trained_network(activation="leaky_relu", negative_slope=0.37):
    """A variable-width network with auxiliary units, non-zero biases, a -0.0 and an unusual slope."""
    net = models.init_network([9, 8, 6, 5], "orthogonal", seed=2, n_out=3, activation=activation,
                              negative_slope=negative_slope)
    x, target = random_batch(net, batch=6)
    dW, db = models.updates(net.weights, net.biases, x, target, "gait", activation=activation,
                            negative_slope=negative_slope)
    models.Adam.published(1e-2).step(net.weights + net.biases, dW + db)
    net.biases[0][0] = -0.0
    return net


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def assert_same_network(got, want):
    assert got.widths == want.widths and got.n_out == want.n_out
    assert got.activation == want.activation and type(got.activation) is type(want.activation)
    assert len(got.weights) == len(want.weights)
    for a, b in zip(got.weights + got.biases, want.weights + want.biases):
        assert same_bits(a, b)


# ---------------------------------------------------------------- describe


def test_network_repr_is_short_and_describe_lists_layers():
    net = models.init_network([784, 500, 300, 10], seed=0, n_out=8)
    text = repr(net)
    assert text == "Network(widths=(784, 500, 300, 10), n_out=8, activation='leaky_relu', negative_slope=0.1)"
    assert str(net) == text and repr([net]) == f"[{text}]"  # no weight matrix dumped
    lines = net.describe().splitlines()
    n_params = sum(n * n + n for n in (500, 300, 10))  # square weights on the first n_l units, biases
    assert lines[0] == f"Network 784 -> 500 -> 300 -> 10: 3 weight layers, {n_params:,} parameters"
    assert "leaky ReLU (negative slope 0.1)" in lines[1]
    rows = {line.split()[0]: line.split() for line in lines[3:7]}
    # layer: units, task, auxiliary (input units beyond n_1, hidden units beyond n_{l+1}, outputs beyond n_out)
    assert rows["0"][2:] == ["784", "-", "284"]
    assert rows["1"][1:] == ["500", "-", "200"]
    assert rows["2"][1:] == ["300", "-", "290"]
    assert rows["3"][2:] == ["10", "8", "2"]
    assert repr(net.describe()) == str(net.describe())  # a notebook shows the text, not a quoted string
    assert "identity" in repr(models.init_network([3, 3], activation="linear"))


def test_spec_repr_and_describe_show_gamma_mode_tau_and_brian2_equations():
    net = models.init_network([12, 10, 6, 4], seed=0, n_out=3)
    spec = circuit.build_circuit(net, gamma=[0.5, 0.1, 1e-3], mode="gait", tau=0.01)
    assert repr(spec) == ("CircuitSpec(mode='gait', widths=(12, 10, 6, 4), n_out=3, gamma=[0.5, 0.1, 0.001], "
                          "tau=0.01 s, activation='leaky_relu', negative_slope=0.1)")
    uniform = circuit.build_circuit(net, gamma=1e-3, mode="itp", tau=0.002)
    assert "gamma=0.001, tau=0.002 s" in repr(uniform)
    text = spec.describe()
    lines = text.splitlines()
    assert lines[0].startswith("GAIT circuit 12 -> 10 -> 6 -> 4: 3 layers")
    assert "tau: 0.01 s (10 ms)" in text and "2 ms" in uniform.describe()
    assert "gamma_l * f'(h_l)^2" in text and "(coupling k_l = gamma_l)" in uniform.describe()
    rows = [line for line in lines if line.split()[0] in {"0", "1", "2", "3"}]
    assert rows[0].split()[2:6] == ["12", "-", "2", "-"] and rows[0].endswith("clamped to x")
    assert rows[1].split()[1:5] == ["10", "-", "4", "0.5"] and rows[1].endswith("from layer 2, on 6 units")
    assert rows[2].split()[1:5] == ["6", "-", "2", "0.1"]
    assert rows[3].split()[2:6] == ["4", "3", "1", "0.001"] and rows[3].endswith("the target, on 3 units")
    for line in circuit.brian.equations(spec).splitlines():
        assert "    " + line in lines
    assert repr(text) == str(text)


def test_describe_imports_no_brian2():
    code = ("import sys, models, circuit, circuit.brian\n"
            "spec = circuit.build_circuit(models.init_network([4, 4, 3]), 1e-3)\n"
            "assert 'dr/dt' in spec.describe()\n"
            "print('brian2' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_ipython_displays_the_description():
    pretty = pytest.importorskip("IPython.lib.pretty")
    net = models.init_network([5, 4, 3])
    spec = circuit.build_circuit(net, 1e-3)
    assert pretty.pretty(net) == net.describe()
    assert pretty.pretty(spec) == spec.describe()


# ---------------------------------------------------------------- save and load


@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
def test_network_round_trip_is_bit_for_bit(tmp_path, activation):
    net = trained_network(activation)
    path = models.save_network(tmp_path / "net.npz", net)
    assert path == tmp_path / "net.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]
    loaded = models.load_network(path)
    assert_same_network(loaded, net)
    x, target = random_batch(net, batch=4, seed=1)
    for a, b in zip(models.rule_updates(loaded, x, target, "gait")[:2],
                    models.rule_updates(net, x, target, "gait")[:2]):
        assert all(same_bits(u, v) for u, v in zip(a, b))
    # the file is an ordinary .npz: arrays and a JSON text with the format version
    with np.load(path) as raw:
        meta = json.loads(raw["metadata"].item())
        assert same_bits(raw["weights_1"], net.weights[1])
    assert meta["format"] == "gaitcircuit.Network" and meta["format_version"] == models.io.FORMAT_VERSION
    assert meta["network"]["widths"] == [9, 8, 6, 5] and meta["network"]["n_out"] == 3


@pytest.mark.parametrize("mode", circuit.MODES)
def test_spec_round_trip_is_bit_for_bit(tmp_path, mode):
    net = trained_network()
    spec = circuit.build_circuit(net, gamma=[1 / 3, 0.1 + 0.2, 1e-3], mode=mode, tau=0.0137)
    loaded = circuit.load_spec(circuit.save_spec(tmp_path / "spec.npz", spec))
    assert_same_network(loaded.network, net)
    assert same_bits(loaded.gamma, spec.gamma)
    assert loaded.mode == mode and loaded.tau == spec.tau and isinstance(loaded.tau, float)


def test_saving_overwrites_whole_and_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "net.npz"
    models.save_network(path, trained_network())
    other = models.init_network([4, 4, 2])
    models.save_network(path, other)
    assert_same_network(models.load_network(path), other)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    with pytest.raises(OSError, match="No space left"):
        models.save_network(tmp_path / "new.npz", other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]
    with pytest.raises(models.ValidationError, match="net: expected a models.Network, got CircuitSpec"):
        models.save_network(tmp_path / "x.npz", circuit.build_circuit(other, 1e-3))
    with pytest.raises(models.ValidationError, match="spec: expected a circuit.CircuitSpec, got Network"):
        circuit.save_spec(tmp_path / "x.npz", other)


def write_npz(path, metadata=None, **arrays):
    if metadata is not None:
        arrays["metadata"] = np.array(metadata if isinstance(metadata, str) else json.dumps(metadata))
    np.savez(path, **arrays)
    return path


def test_load_refuses_files_that_are_not_a_saved_network(tmp_path):
    net = trained_network()
    good = models.save_network(tmp_path / "good.npz", net)
    raw = good.read_bytes()
    meta = json.loads(np.load(good)["metadata"].item())
    arrays = {f"{k}_{i}": a for k in ("weights", "biases") for i, a in enumerate(getattr(net, k))}

    def refused(path, match):
        with pytest.raises(DataFormatError, match=match) as info:
            models.load_network(path)
        assert str(path) in str(info.value)

    text = tmp_path / "notes.txt"
    text.write_text("not a network\n")
    refused(text, "expected a network saved by models.save_network, got a file that is not a readable .npz")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    refused(empty, "not a readable .npz")
    single = tmp_path / "w.npy"
    np.save(single, net.weights[0])
    refused(single, "got a single-array .npy file")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(raw[: len(raw) // 2])
    refused(truncated, "not a readable .npz archive")
    flipped = bytearray(raw)
    offset = raw.index(net.weights[1].tobytes()) + 17  # inside the weights of layer 2
    flipped[offset] ^= 0x10
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(flipped))
    refused(corrupt, "unreadable entry .*Bad CRC-32 for file 'weights_1.npy'.*corrupt or truncated")
    refused(write_npz(tmp_path / "bare.npz", None, **arrays), "without its 'metadata' text entry")
    refused(write_npz(tmp_path / "json.npz", "{widths: [9", **arrays), "metadata: expected JSON text")
    spec_file = circuit.save_spec(tmp_path / "spec.npz", circuit.build_circuit(net, 1e-3))
    refused(spec_file, r"got a circuit specification \(load it with circuit.load_spec\)")
    refused(write_npz(tmp_path / "other.npz", {"format": "something.else"}, **arrays), "got format 'something.else'")
    newer = {**meta, "format_version": models.io.FORMAT_VERSION + 1}
    refused(write_npz(tmp_path / "newer.npz", newer, **arrays),
            f"format version {models.io.FORMAT_VERSION + 1} by a newer version of gaitcircuit; this version "
            f"reads format versions up to {models.io.FORMAT_VERSION}")
    refused(write_npz(tmp_path / "version.npz", {**meta, "format_version": "1"}, **arrays),
            "format_version: expected a positive integer, got '1'")
    missing = {k: v for k, v in arrays.items() if k != "biases_2"}
    refused(write_npz(tmp_path / "missing.npz", meta, **missing), "got no biases_2")
    wrong = {**meta, "network": {**meta["network"], "widths": [9, 8, 6, 6]}}
    refused(write_npz(tmp_path / "widths.npz", wrong, **arrays), r"widths: the metadata says \[9, 8, 6, 6\]")
    swapped = {**arrays, "weights_1": net.weights[2], "weights_2": net.weights[1]}
    refused(write_npz(tmp_path / "shapes.npz", meta, **swapped), r"weights\[1\]|biases\[1\]: expected shape")
    for activation, match in [({"name": "tanh"}, "activation: expected 'leaky_relu' or 'identity'"),
                              ({"name": "leaky_relu", "negative_slope": 0}, r"negative_slope: expected .* \(0, 1\]"),
                              ({"name": "leaky_relu"}, "expected the complete settings"),
                              ("leaky_relu", "metadata field 'activation': expected a JSON dict")]:
        bad = {**meta, "network": {**meta["network"], "activation": activation}}
        refused(write_npz(tmp_path / "act.npz", bad, **arrays), match)
    refused(write_npz(tmp_path / "nout.npz", {**meta, "network": {**meta["network"], "n_out": 9}}, **arrays),
            r"n_out: expected an integer in 1..5")
    with pytest.raises(FileNotFoundError):
        models.load_network(tmp_path / "absent.npz")


def test_load_spec_refuses_bad_coupling_settings(tmp_path):
    spec = circuit.build_circuit(trained_network(), 1e-3)
    path = circuit.save_spec(tmp_path / "spec.npz", spec)
    with np.load(path) as raw:
        arrays = {k: raw[k] for k in raw.files if k != "metadata"}
        meta = json.loads(raw["metadata"].item())

    def refused(name, match, meta=meta, **changes):
        bad = write_npz(tmp_path / name, meta, **{**arrays, **changes})
        with pytest.raises(DataFormatError, match=match) as info:
            circuit.load_spec(bad)
        assert str(bad) in str(info.value)

    refused("gamma.npz", r"gamma: expected values in \(0, 1\)", gamma=np.array([0.5, 1.0, 0.1]))
    refused("mode.npz", "mode: expected one of", meta={**meta, "mode": "bp"})
    refused("tau.npz", "tau", meta={**meta, "tau": -1.0})
    no_gamma = {k: v for k, v in arrays.items() if k != "gamma"}
    bad = write_npz(tmp_path / "nogamma.npz", meta, **no_gamma)
    with pytest.raises(DataFormatError, match="expected an array 'gamma'"):
        circuit.load_spec(bad)
    with pytest.raises(DataFormatError, match=r"got a network \(load it with models.load_network\)"):
        circuit.load_spec(models.save_network(tmp_path / "net.npz", spec.network))
