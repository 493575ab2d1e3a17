"""Datasets: MNIST, Fashion-MNIST and KMNIST in their official formats, and an embedded subset.

``load_dataset(name, data_dir)`` reads the official files from ``data_dir`` (or
``data_dir/name``) when it is given, and fails with :class:`DataNotFoundError` naming the
directory and the files when they are not there.  Without ``data_dir`` it looks, in order,
in the directory named by the environment variable GAITCIRCUIT_DATA (or its subdirectory
``name``), in the Debian package's directory (Fashion-MNIST only), in the download cache
(``~/.cache/gaitcircuit/NAME`` on Linux, :func:`pooch.os_cache` elsewhere), and finally
downloads the official files with pooch (SHA-256 checked, one mirror after another) unless
``allow_download=False``.  A directory may hold the four IDX files (``.gz`` or raw) or, for
KMNIST, the four official ``.npz`` files.

The embedded subset (``experiments/data/fashion_mnist_subset.npz``) holds the
first 3000 training and first 1000 test images of the official Fashion-MNIST
files (Zalando SE, MIT/Expat licence, see ``experiments/data/LICENSE``); it ships
with the repository so that quick modes, demos and tests need no download.
Remake it with ``python -m experiments.datasets`` (reads the Debian package's files).
"""

from __future__ import annotations

import gzip
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.errors import DataFormatError, DataNotFoundError
from models.validation import check_choice

__all__ = ["Dataset", "DataFormatError", "DataNotFoundError", "DATASETS", "SOURCES", "read_idx", "load_dataset",
           "load_embedded", "load_idx_dataset", "load_npz_dataset", "download", "cache_dir", "check_data_dir",
           "DEBIAN_FASHION_MNIST", "ENV_DATA_DIR"]

EMBEDDED = Path(__file__).with_name("data") / "fashion_mnist_subset.npz"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


KMNIST_NPZ = {"train_images": "kmnist-train-imgs.npz", "train_labels": "kmnist-train-labels.npz",
              "test_images": "kmnist-test-imgs.npz", "test_labels": "kmnist-test-labels.npz"}
#: Official downloads: mirrors and the SHA-256 of each gzip file as published upstream
#: (Fashion-MNIST's Debian package recompressed its files, so their checksums differ;
#: the package's files are found without a checksum, as any user directory is).
SOURCES = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"],
        "sha256": {
            "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion_mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        "sha256": {
            "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
    "kmnist": {  # KMNIST is published both as IDX gzip (downloaded) and as npz (read from a directory)
        "mirrors": ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"],
        "sha256": {
            "train-images-idx3-ubyte.gz": "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "train-labels-idx1-ubyte.gz": "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "t10k-images-idx3-ubyte.gz": "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "t10k-labels-idx1-ubyte.gz": "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        },
    },
}
DATASETS = ("embedded",) + tuple(SOURCES)
ENV_DATA_DIR = "GAITCIRCUIT_DATA"


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


def _from_arrays(name: str, arrays: dict, where) -> Dataset:
    """A Dataset from the four raw arrays (train/test images/labels), validated."""
    tx, ty = _images_labels(arrays["train_images"], arrays["train_labels"], f"{where} (train)")
    vx, vy = _images_labels(arrays["test_images"], arrays["test_labels"], f"{where} (test)")
    return Dataset(name, tx, ty, vx, vy)


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
            raise DataNotFoundError(f"{directory}: missing {stem}.gz (or {stem}); expected the four "
                                    f"official IDX files {sorted(IDX_FILES.values())}")
    return _from_arrays(name, arrays, directory)


def load_npz_dataset(directory, name: str = "kmnist") -> Dataset:
    """Load the four official KMNIST ``.npz`` files (arrays under ``arr_0``) from ``directory``."""
    directory = Path(directory)
    arrays = {}
    for key, filename in KMNIST_NPZ.items():
        path = directory / filename
        if not path.exists():
            raise DataNotFoundError(f"{directory}: missing {filename}; expected {sorted(KMNIST_NPZ.values())}")
        try:
            with np.load(path) as data:
                arrays[key] = data["arr_0"]
        except (OSError, ValueError, KeyError) as err:
            raise DataFormatError(f"{path}: not an npz file with an 'arr_0' array ({err})") from None
    return _from_arrays(name, arrays, directory)


def _files_in(directory: Path, name: str) -> Path | None:
    """``directory/name`` or ``directory``, whichever holds files of dataset ``name``; None if neither."""
    for candidate in (directory / name, directory):
        if any((candidate / (stem + ext)).exists() for stem in IDX_FILES.values() for ext in (".gz", "")):
            return candidate
        if name == "kmnist" and (candidate / KMNIST_NPZ["train_images"]).exists():
            return candidate
    return None


def _load_directory(directory: Path, name: str) -> Dataset:
    """Load ``name`` from a directory that :func:`_files_in` found (IDX files, or KMNIST's npz)."""
    if name == "kmnist" and (directory / KMNIST_NPZ["train_images"]).exists():
        return load_npz_dataset(directory, name)
    return load_idx_dataset(directory, name)


def expected_files(name: str) -> str:
    """The files a directory must hold for dataset ``name``, in words."""
    idx = ", ".join(f"{stem}.gz" for stem in IDX_FILES.values())
    text = f"the four official IDX files {idx} (or uncompressed)"
    if name == "kmnist":
        text += " or the four official npz files " + ", ".join(KMNIST_NPZ.values())
    return text


def check_data_dir(data_dir, names, argument: str = "data_dir") -> dict:
    """Where each dataset in ``names`` is in the user's ``data_dir`` ("embedded" needs none).

    Returns {name: directory}.  Raises :class:`DataNotFoundError` naming ``argument``, the
    directory, its subdirectory ``name`` and the files looked for when a dataset is not
    there: a directory the user gave is never silently replaced by another copy.
    """
    directory = Path(data_dir).expanduser()
    found = {}
    for name in names:
        if name == "embedded":
            continue
        check_choice("dataset", name, DATASETS)
        where = _files_in(directory, name) if directory.is_dir() else None
        if where is None:
            state = "is not a directory" if not directory.is_dir() else f"holds no {name} files"
            raise DataNotFoundError(
                f"{argument}: {directory} {state}; looked in {directory / name} and {directory} for "
                f"{expected_files(name)}")
        found[name] = where
    return found


def cache_dir() -> Path:
    """The download cache: ``$XDG_CACHE_HOME/gaitcircuit`` (``~/.cache/gaitcircuit``) on Linux."""
    import pooch  # imported when needed: reading local files needs no network stack

    return Path(pooch.os_cache("gaitcircuit"))


def download(name: str, directory: Path, timeout: float = 60.0) -> Path:
    """Download the official files of ``name`` into ``directory`` with pooch, checking SHA-256; return it.

    Files already present with the right checksum are kept.  Each mirror of ``SOURCES[name]``
    is tried in turn; pooch writes a file under a temporary name and keeps it only once its
    checksum matches.  Raises :class:`DataNotFoundError` listing every mirror's failure.
    """
    import pooch

    downloader = pooch.HTTPDownloader(timeout=timeout, progressbar=sys.stderr.isatty())
    source = SOURCES[name]
    for filename, sha256 in source["sha256"].items():
        errors = []
        for mirror in source["mirrors"]:
            url = mirror + filename
            try:
                pooch.retrieve(url, known_hash=f"sha256:{sha256}", fname=filename, path=directory,
                               downloader=downloader)
                break
            except (OSError, ValueError) as err:  # requests' OSErrors (refused, HTTP 404, ...); a wrong checksum
                errors.append(f"{url}: {err}")
        else:
            raise DataNotFoundError(f"{name}: could not download {filename}: " + "; ".join(errors))
    return Path(directory)


def load_dataset(name: str, data_dir=None, allow_download: bool = True) -> Dataset:
    """Find (or download) dataset ``name``: "embedded", "mnist", "fashion_mnist" or "kmnist".

    ``data_dir`` given: the files must be there (see :func:`check_data_dir`).  Otherwise the
    first of $GAITCIRCUIT_DATA, the Debian package, the cache and a download that has them.
    """
    if name == "embedded":
        return load_embedded()
    check_choice("dataset", name, DATASETS)
    if data_dir is not None:
        return _load_directory(check_data_dir(data_dir, [name])[name], name)
    searched = []
    env_dir = os.environ.get(ENV_DATA_DIR)
    if env_dir:
        found = _files_in(Path(env_dir).expanduser(), name)
        if found is not None:
            return _load_directory(found, name)
        searched.append(f"{env_dir} (${ENV_DATA_DIR})")
    if name == "fashion_mnist" and DEBIAN_FASHION_MNIST.exists():
        return load_idx_dataset(DEBIAN_FASHION_MNIST, name)
    searched.append(f"{DEBIAN_FASHION_MNIST} (Debian package dataset-fashion-mnist)" if name == "fashion_mnist"
                    else "no system package for this dataset")
    cached = cache_dir() / name
    if all((cached / f).exists() for f in SOURCES[name]["sha256"]):
        return load_idx_dataset(cached, name)
    searched.append(str(cached))
    if not allow_download:
        raise DataNotFoundError(
            f"{name}: not found (looked in {'; '.join(searched)}); pass --data-dir DIR (or set {ENV_DATA_DIR}) "
            "to a directory with the official files, or allow the download")
    return load_idx_dataset(download(name, cached), name)


def load_embedded() -> Dataset:
    """The embedded Fashion-MNIST subset (3000 train, 1000 test images)."""
    with np.load(EMBEDDED) as data:
        return _from_arrays("fashion_mnist_subset", {k: data[k] for k in data.files}, EMBEDDED)


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
