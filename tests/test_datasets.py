"""Data loading: IDX files (gzip or raw), the embedded subset, corrupt files, the search order and downloads."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import models.errors
from experiments import datasets

ROOT = Path(__file__).resolve().parents[1]


def write_idx(path, array, compress=False, magic_type=0x08):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as fh:  # closed: GzipFile buffers its writes
        fh.write(data)


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
    with pytest.raises(datasets.DataNotFoundError, match="missing train-images-idx3-ubyte.gz"):
        datasets.load_idx_dataset(tmp_path)


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on loopback serving tmp_path/served (stops after the test)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def fake_source(monkeypatch, served, url, tamper=None):
    import hashlib

    make_dataset(served)
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in served.glob("*.gz")}
    if tamper:
        sums[tamper] = "0" * 64
    monkeypatch.setitem(datasets.SOURCES, "mnist", {"mirrors": ["http://127.0.0.1:9/nothing/", url], "sha256": sums})


def test_download_checks_sha256_and_caches(tmp_path, monkeypatch, local_server):
    served, url = local_server
    fake_source(monkeypatch, served, url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.ENV_DATA_DIR, raising=False)
    with pytest.raises(datasets.DataNotFoundError, match="allow the download"):
        datasets.load_dataset("mnist", allow_download=False)
    data = datasets.load_dataset("mnist")  # first mirror refuses, second serves
    assert data.train_x.shape == (5, 784)
    assert sorted(p.name for p in (tmp_path / "cache" / "gaitcircuit" / "mnist").iterdir()) == sorted(
        datasets.SOURCES["mnist"]["sha256"])
    for p in served.iterdir():
        p.unlink()  # now only the cache can answer
    assert datasets.load_dataset("mnist", allow_download=False).test_x.shape == (3, 784)


def test_download_with_wrong_checksum_is_refused_and_not_kept(tmp_path, monkeypatch, local_server):
    served, url = local_server
    fake_source(monkeypatch, served, url, tamper="t10k-labels-idx1-ubyte.gz")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(datasets.DataNotFoundError,
                       match=r"could not download t10k-labels-idx1-ubyte.gz: .*does not match the known hash: "
                             r"expected sha256:0+ but got [0-9a-f]{64}"):
        datasets.load_dataset("mnist")
    cache = tmp_path / "cache" / "gaitcircuit" / "mnist"
    kept = {p.name for p in cache.iterdir()}  # good files only: no temporary file is left behind
    assert kept <= set(datasets.SOURCES["mnist"]["sha256"]) - {"t10k-labels-idx1-ubyte.gz"}


def test_user_directory_option_environment_and_kmnist_npz(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    kdir = tmp_path / "kmnist"
    kdir.mkdir()
    for key, name in datasets.KMNIST_NPZ.items():
        n = 4 if key.startswith("train") else 2
        arr = rng.integers(0, 256, (n, 28, 28)) if key.endswith("images") else rng.integers(0, 10, n)
        np.savez_compressed(kdir / name, arr_0=arr.astype(np.uint8))
    assert datasets.load_dataset("kmnist", data_dir=tmp_path).train_x.shape == (4, 784)  # DIR/kmnist
    monkeypatch.setenv(datasets.ENV_DATA_DIR, str(kdir))
    assert datasets.load_dataset("kmnist", allow_download=False).test_y.shape == (2,)
    (kdir / datasets.KMNIST_NPZ["test_labels"]).write_bytes(b"not a zip")
    with pytest.raises(datasets.DataFormatError, match="kmnist-test-labels.npz: not an npz file"):
        datasets.load_dataset("kmnist", allow_download=False)


def test_debian_fashion_mnist_is_found_when_installed():
    if not datasets.DEBIAN_FASHION_MNIST.exists():
        if os.environ.get("CI"):  # .ci/run installs it: missing there means the install step is broken
            pytest.fail("Debian package dataset-fashion-mnist not installed (.ci/run installs it)")
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    data = datasets.load_dataset("fashion_mnist", allow_download=False)
    assert data.train_x.shape == (60000, 784) and data.test_x.shape == (10000, 784)


def test_errors_are_the_library_exceptions():
    assert datasets.DataFormatError is models.errors.DataFormatError
    assert datasets.DataNotFoundError is models.errors.DataNotFoundError
    assert issubclass(datasets.DataNotFoundError, FileNotFoundError)


def test_data_dir_without_the_dataset_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    """The environment's directory has the dataset, but the directory the caller named does not: an error naming
    the directory and the files, never the copy from elsewhere."""
    elsewhere = tmp_path / "elsewhere" / "mnist"
    elsewhere.mkdir(parents=True)
    make_dataset(elsewhere)
    monkeypatch.setenv(datasets.ENV_DATA_DIR, str(elsewhere.parent))
    assert datasets.load_dataset("mnist", allow_download=False).train_x.shape == (5, 784)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(datasets.DataNotFoundError) as err:
        datasets.load_dataset("mnist", data_dir=empty)
    message = str(err.value)
    assert message.startswith(f"data_dir: {empty} holds no mnist files")
    assert str(empty / "mnist") in message and "train-images-idx3-ubyte.gz" in message
    with pytest.raises(datasets.DataNotFoundError, match=f"data_dir: {tmp_path / 'missing'} is not a directory"):
        datasets.load_dataset("mnist", data_dir=tmp_path / "missing")
    with pytest.raises(models.errors.ValidationError, match="dataset: expected one of .*got 'cifar'"):
        datasets.load_dataset("cifar", data_dir=empty)
    assert datasets.check_data_dir(elsewhere.parent, ["embedded", "mnist"]) == {"mnist": elsewhere}


def test_cli_data_dir_without_the_dataset_is_a_usage_error(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "train", "--dataset", "kmnist", "--data-dir", str(tmp_path),
         "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"python -m experiments train: error: --data-dir: {tmp_path} holds no kmnist files")
    assert "kmnist-train-imgs.npz" in last and "Traceback" not in result.stderr
    assert not out.exists()  # refused before anything was written
