"""Save and load networks (and, through :mod:`circuit`, circuit specifications): one ``.npz`` file each.

A file is a NumPy ``.npz`` archive (readable without this library: ``numpy.load(path)``)
holding the arrays, bit for bit (float64, or float32 for a float32 network, which loads
as one), and one entry ``metadata``: a JSON text with the
format name, the format version and everything that is not an array::

    {"format": "gaitcircuit.Network", "format_version": 1,
     "network": {"widths": [784, 500, 10], "n_out": 10,
                 "activation": {"name": "leaky_relu", "negative_slope": 0.1}}}

    weights_0 (500, 500), biases_0 (500,), weights_1 (10, 10), biases_1 (10,)

A circuit specification (:func:`circuit.save_spec`) adds an array ``gamma`` (L,) and the
metadata fields ``"mode"`` and ``"tau"`` (seconds), with ``"format": "gaitcircuit.CircuitSpec"``;
if it has feedback weights, one array ``feedback_i`` (n_{i+1}, n_{i+1}) for each ``weights[i]``
whose feedback ``Q_{i+1}`` is given (no array: the exact inverse there).
Loading checks the format name and refuses a newer format version than this library reads.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .activations import get_activation
from .errors import DataFormatError, ValidationError
from .network import Network
from .validation import float_dtype

__all__ = ["FORMAT_VERSION", "save_network", "load_network", "write_archive", "read_archive",
           "network_contents", "network_from_contents", "feedback_contents", "feedback_from_contents"]

#: Version of the file layout written by this library; files of a higher version are refused.
FORMAT_VERSION = 1

#: What reading a damaged archive raises (zipfile takes flipped flag bits for encryption or an
#: unsupported compression: RuntimeError, NotImplementedError).
UNREADABLE = (ValueError, OSError, EOFError, RuntimeError, zipfile.BadZipFile)

#: What each format holds and the function that loads it (for the message when a file is given to the wrong one).
FORMATS = {
    "gaitcircuit.Network": ("a network", "models.load_network"),
    "gaitcircuit.CircuitSpec": ("a circuit specification", "circuit.load_spec"),
}


def save_network(path: str | os.PathLike, net: Network) -> Path:
    """Write ``net`` (weights, biases, widths, n_out, activation) to one ``.npz`` file at ``path``.

    The file is written whole or not at all (a temporary file beside it, then renamed).
    Returns the path written; read it back with :func:`load_network`.
    """
    metadata, arrays = network_contents(net)
    return write_archive(path, "gaitcircuit.Network", metadata, arrays)


def load_network(path: str | os.PathLike) -> Network:
    """The :class:`~models.network.Network` saved by :func:`save_network` at ``path``, bit for bit.

    Raises
    ------
    OSError
        No file at ``path`` (FileNotFoundError), or it cannot be opened.
    models.errors.DataFormatError
        The file is not a saved network (another format, corrupt, truncated, or written by a
        newer version of the library); the message names the file and what is wrong.
    """
    metadata, arrays = read_archive(path, "gaitcircuit.Network")
    return network_from_contents(path, metadata, arrays)


def network_contents(net: Network) -> tuple[dict, dict]:
    """``({"network": {...}}, {"weights_0": ..., "biases_0": ..., ...})``: what a file stores of ``net``."""
    if not isinstance(net, Network):
        raise ValidationError(f"net: expected a models.Network, got {type(net).__name__}")
    try:
        activation = net.activation.settings()
    except NotImplementedError as err:
        raise ValidationError(str(err)) from None
    metadata = {"network": {"widths": list(net.widths), "n_out": net.n_out, "activation": activation}}
    arrays = {}
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{i}"], arrays[f"biases_{i}"] = w, b
    return metadata, arrays


def network_from_contents(path, metadata: dict, arrays: dict) -> Network:
    """Rebuild the network of :func:`network_contents` read from the file ``path`` (named in errors)."""
    described = _field(path, metadata, "network", dict)
    widths = _field(path, described, "widths", list)
    activation = _field(path, described, "activation", dict)
    if len(widths) < 2 or not all(isinstance(n, int) and n >= 1 for n in widths):
        raise DataFormatError(f"{path}: network widths: expected at least two positive integers, got {widths!r}")
    depth = len(widths) - 1
    names = [f"{kind}_{i}" for i in range(depth) for kind in ("weights", "biases")]
    missing = [name for name in names if name not in arrays]
    if missing:
        raise DataFormatError(f"{path}: expected arrays {', '.join(names)} for the {depth} layers its metadata "
                              f"describes, got no {', '.join(missing)}")
    name = _field(path, activation, "name", str)
    try:
        act = get_activation(name, activation.get("negative_slope", 0.1))
        net = Network([arrays[f"weights_{i}"] for i in range(depth)], [arrays[f"biases_{i}"] for i in range(depth)],
                      widths[0], act, described.get("n_out"), float_dtype(arrays["weights_0"]))
    except ValidationError as err:
        raise DataFormatError(f"{path}: {err}") from None
    if act.settings() != activation:
        raise DataFormatError(f"{path}: metadata field 'activation': expected the complete settings "
                              f"{act.settings()}, got {activation}")
    if list(net.widths) != widths:
        raise DataFormatError(f"{path}: network widths: the metadata says {widths}, the arrays give {list(net.widths)}")
    return net


def feedback_contents(feedback) -> dict:
    """``{"feedback_i": Q}`` for each given matrix of a circuit spec's ``feedback`` entries (None: no arrays)."""
    if feedback is None:
        return {}
    return {f"feedback_{i}": q for i, q in enumerate(feedback) if q is not None}


def feedback_from_contents(path, net: Network, arrays: dict) -> list | None:
    """The feedback entries ``[Q_2, ..., Q_L]`` (None: exact) stored by :func:`feedback_contents`, or None if none.

    Raises :class:`~models.errors.DataFormatError` naming the file for an array that matches no
    layer that feeds back.
    """
    names = {f"feedback_{i}" for i in range(1, net.depth)}
    odd = sorted(k for k in arrays if k.startswith("feedback_") and k not in names)
    if odd:
        raise DataFormatError(f"{path}: expected feedback arrays among {sorted(names) or 'none'} (layers 2.."
                              f"{net.depth} feed back), got {odd}")
    if not any(k in arrays for k in names):
        return None
    return [arrays.get(f"feedback_{i}") for i in range(1, net.depth)]


def write_archive(path: str | os.PathLike, kind: str, metadata: dict, arrays: dict) -> Path:
    """Write ``arrays`` and the JSON ``metadata`` (with format ``kind`` and version) to ``path``, atomically."""
    path = Path(path)
    text = json.dumps({"format": kind, "format_version": FORMAT_VERSION, **metadata}, indent=1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as handle:
            np.savez(handle, metadata=np.array(text), **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_archive(path: str | os.PathLike, kind: str) -> tuple[dict, dict]:
    """(metadata, arrays) of a file written by :func:`write_archive` with format ``kind``.

    Refuses (:class:`~models.errors.DataFormatError`, naming the file) anything else: not an
    ``.npz`` archive, corrupt entries, no or malformed metadata, another format, a newer version.
    """
    what, loader = FORMATS[kind]
    expected = f"expected {what} saved by {loader.replace('load', 'save')}"
    with open(path, "rb") as handle:  # a missing file or a directory raises the usual OSError
        try:
            archive = np.load(handle, allow_pickle=False)
        except UNREADABLE as err:
            raise DataFormatError(f"{path}: {expected}, got a file that is not a readable .npz archive "
                                  f"({type(err).__name__}: {err})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataFormatError(f"{path}: {expected}, got a single-array .npy file")
        try:
            arrays = {name: archive[name] for name in archive.files}
        except UNREADABLE as err:
            raise DataFormatError(f"{path}: {expected}, got an .npz archive with an unreadable entry "
                                  f"({type(err).__name__}: {err}): the file is corrupt or truncated") from None
    odd = [name for name, value in arrays.items() if not isinstance(value, np.ndarray)]
    if odd:
        raise DataFormatError(f"{path}: {expected}, got an .npz archive whose entries {odd} are not .npy arrays")
    entry = arrays.pop("metadata", None)
    if entry is None or entry.shape != () or entry.dtype.kind != "U":
        raise DataFormatError(f"{path}: {expected}, got an .npz archive without its 'metadata' text entry")
    try:
        metadata = json.loads(entry.item())
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}: metadata: expected JSON text, got a parse error ({err})") from None
    if not isinstance(metadata, dict):
        raise DataFormatError(f"{path}: metadata: expected a JSON object, got {type(metadata).__name__}")
    found = metadata.get("format")
    if found != kind:
        holds = FORMATS.get(found)
        got = f"{holds[0]} (load it with {holds[1]})" if holds else f"format {found!r}"
        raise DataFormatError(f"{path}: {expected}, got {got}")
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DataFormatError(f"{path}: format_version: expected a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise DataFormatError(f"{path}: written in format version {version} by a newer version of gaitcircuit; "
                              f"this version reads format versions up to {FORMAT_VERSION}: upgrade to load it")
    return metadata, arrays


def _field(path, mapping: dict, key: str, kind: type):
    """``mapping[key]`` if it is a ``kind``, else a DataFormatError naming the file and the field."""
    value = mapping.get(key)
    if not isinstance(value, kind):
        raise DataFormatError(f"{path}: metadata field {key!r}: expected a JSON {kind.__name__}, got {value!r}")
    return value
