"""Data loading: IDX files (gzip or raw), the embedded subset, and corrupt files."""

import gzip
import struct

import numpy as np
import pytest

from experiments import datasets


def write_idx(path, array, compress=False, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


def make_dataset(directory, n_train=5, n_test=3, compress=True):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_train, 28, 28)), compress)
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_train), compress)
    write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n_test, 28, 28)), compress)
    write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n_test), compress)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_dataset_roundtrip(tmp_path, compress):
    make_dataset(tmp_path, compress=compress)
    data = datasets.load_idx_dataset(tmp_path)
    assert data.train_x.shape == (5, 784) and data.test_x.shape == (3, 784)
    assert data.train_x.min() >= 0 and data.train_x.max() <= 1
    assert data.train_y.dtype == np.int64


def test_embedded_subset():
    data = datasets.load_embedded()
    assert data.train_x.shape == (3000, 784) and data.test_x.shape == (1000, 784)
    assert set(np.unique(data.train_y)) == set(range(10))


def test_corrupt_files_are_named_with_the_problem(tmp_path):
    make_dataset(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(bad, np.zeros((5, 28, 28)), compress=True, magic_type=0x0D)
    with pytest.raises(datasets.DataFormatError, match="train-images-idx3-ubyte.gz: bad magic number"):
        datasets.load_idx_dataset(tmp_path)
    raw = gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 5, 28, 28) + bytes(100))
    bad.write_bytes(raw)
    with pytest.raises(datasets.DataFormatError, match="truncated or padded"):
        datasets.load_idx_dataset(tmp_path)
    write_idx(bad, np.zeros((4, 28, 28)), compress=True)
    with pytest.raises(datasets.DataFormatError, match="4 images but 5 labels"):
        datasets.load_idx_dataset(tmp_path)
    write_idx(bad, np.zeros((5, 20, 20)), compress=True)
    with pytest.raises(datasets.DataFormatError, match=r"expected images of shape \(n, 28, 28\)"):
        datasets.load_idx_dataset(tmp_path)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match="missing train-images-idx3-ubyte.gz"):
        datasets.load_idx_dataset(tmp_path)
