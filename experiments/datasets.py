"""Datasets: the official IDX files (gzip or raw) and the embedded Fashion-MNIST subset.

The embedded subset (``experiments/data/fashion_mnist_subset.npz``) holds the
first 3000 training and first 1000 test images of the official Fashion-MNIST
files (Zalando SE, MIT/Expat licence, see ``experiments/data/LICENSE``); it ships
with the repository so that quick modes, demos and tests need no download.
Remake it with ``python -m experiments.datasets`` (reads the Debian package's files).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "DataFormatError", "read_idx", "load_embedded", "load_idx_dataset", "DEBIAN_FASHION_MNIST"]

EMBEDDED = Path(__file__).with_name("data") / "fashion_mnist_subset.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataFormatError(ValueError):
    """A data file is corrupt or not of the expected format."""


@dataclass
class Dataset:
    """Images as float64 in [0, 1] of shape (n, 784) and integer labels of shape (n,)."""

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int = 10


def _open(path: Path):
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (uint8 data, optionally gzip-compressed) into an array."""
    path = Path(path)
    try:
        with _open(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataFormatError(f"{path}: cannot read as IDX (gzip or raw): {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataFormatError(
            f"{path}: bad magic number {raw[:4].hex() or '(empty file)'}; expected 0x000008NN "
            "(an IDX file of unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataFormatError(f"{path}: truncated header ({len(raw)} bytes, {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: truncated or padded: header says shape {shape} ({expected} bytes of data), "
            f"file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _images_labels(images: np.ndarray, labels: np.ndarray, where: str):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataFormatError(f"{where}: expected images of shape (n, 28, 28), got {images.shape}")
    if labels.ndim != 1:
        raise DataFormatError(f"{where}: expected a 1-d label array, got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(f"{where}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise DataFormatError(f"{where}: labels must be 0..9, got a maximum of {labels.max()}")
    return images.reshape(images.shape[0], -1) / 255.0, labels.astype(np.int64)


def load_idx_dataset(directory, name: str = "dataset") -> Dataset:
    """Load the four official IDX files (``.gz`` or raw) from ``directory``."""
    directory = Path(directory)
    arrays = {}
    for key, stem in IDX_FILES.items():
        for candidate in (directory / (stem + ".gz"), directory / stem):
            if candidate.exists():
                arrays[key] = read_idx(candidate)
                break
        else:
            raise FileNotFoundError(f"{directory}: missing {stem}.gz (or {stem}); expected the four "
                                    f"official IDX files {sorted(IDX_FILES.values())}")
    tx, ty = _images_labels(arrays["train_images"], arrays["train_labels"], f"{directory} (train)")
    vx, vy = _images_labels(arrays["test_images"], arrays["test_labels"], f"{directory} (test)")
    return Dataset(name, tx, ty, vx, vy)


def load_embedded() -> Dataset:
    """The embedded Fashion-MNIST subset (3000 train, 1000 test images)."""
    with np.load(EMBEDDED) as data:
        tx, ty = _images_labels(data["train_images"], data["train_labels"], str(EMBEDDED))
        vx, vy = _images_labels(data["test_images"], data["test_labels"], str(EMBEDDED))
    return Dataset("fashion_mnist_subset", tx, ty, vx, vy)


def write_embedded_subset(source=DEBIAN_FASHION_MNIST, n_train: int = 3000, n_test: int = 1000) -> Path:
    """Write the embedded subset from the official files in ``source``."""
    arrays = {key: read_idx(Path(source) / (stem + ".gz")) for key, stem in IDX_FILES.items()}
    np.savez_compressed(
        EMBEDDED,
        train_images=arrays["train_images"][:n_train], train_labels=arrays["train_labels"][:n_train],
        test_images=arrays["test_images"][:n_test], test_labels=arrays["test_labels"][:n_test],
    )
    return EMBEDDED


if __name__ == "__main__":
    print(f"wrote {write_embedded_subset(os.environ.get('FASHION_MNIST_DIR', DEBIAN_FASHION_MNIST))}")
