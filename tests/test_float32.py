"""float32 training: float64 stays pinned to its bits, float32 updates keep float32 precision, runs keep their dtype."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import models
import tests.tolerances as tol
from experiments.__main__ import main
from models.errors import CheckpointError, SingularWeightsError, ValidationError
from models.network import Network
from models.training import (
    TrainConfig,
    blas_libraries,
    blas_start_threads,
    build_model,
    make_update,
    read_checkpoint,
    train,
    train_epoch,
    with_defaults,
)
from tests import test_training
from tests.helpers import relative_error
from tests.test_training import tiny_config

#: The training tests' fixture: 600 + 200 embedded images shrunk to 7 x 7 pixels.
tiny = test_training.tiny

# ---------------------------------------------------------------- float64: the bits of the code before float32


def blas_fingerprint() -> str:
    """What float64 rounding depends on: each BLAS library's file, version and kernels, and its starting threads."""
    libraries = ";".join(f"{b['library']}:{b['version']}:{b['architecture']}" for b in blas_libraries())
    return f"{libraries};start_threads={blas_start_threads()}"


def run_digest(widths, rule, feedback, batches, batch, threads=2) -> str:
    """SHA-256 of the weights, biases, Adam moments (and learned feedback) after two epochs of ``batches`` batches
    of ``rule`` at its paper settings (learning rate, regulariser, gamma 1e-3; published Adam), on seeded data,
    with the LU factorisations and the regulariser on ``threads`` threads."""
    rng = np.random.default_rng(7)
    n = batches * batch
    x, y = rng.random((n, widths[0])), rng.integers(0, 10, n)
    cfg = TrainConfig(rule=rule, widths=list(widths), feedback=feedback, allow_narrow_input=True).resolved()
    net, opt = build_model(cfg)
    update = make_update(cfg, net, SimpleNamespace(train_x=x, train_y=y, test_x=x, test_y=y), None)
    with threadpool_limits(1, user_api="blas"):
        for epoch in (1, 2):
            train_epoch(net, opt, x, y, rule=rule, seed=0, epoch=epoch, batch=batch, gamma=cfg.gamma,
                        regulariser=cfg.regulariser, inverse=models.DirectInverse(threads), update=update,
                        regulariser_threads=threads)
    arrays = net.weights + net.biases + opt.m + opt.v + (update.hook.feedback.matrices[1:] if update else [])
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


#: (widths, rule, feedback, batches per epoch, batch): every rule, learned feedback, and GAIT and BP 784 wide.
PINNED_RUNS = [((100,) * 6, rule, "exact", 4, 20) for rule in ("bp", "tp", "itp", "gait")] + [
    ((100,) * 6, "gait", "learned", 4, 20), ((784,) * 6, "gait", "exact", 2, 60), ((784,) * 6, "bp", "exact", 2, 60)]
_HASWELL = [
    "f1aaf6f4a2014c59a03e909b753ace6658049c693795882e832b6fb4f0639163",
    "5827fe374824d3d5e84adb743a985400a64913ddfcf2b7ad318c775beee11929",
    "70e49ae06fe45622d8a9a304dc954c028429d55b73e3eab7d6c73b1a8dc14fe1",
    "ba990cbbb360a1539d1b7df97d47d25f32cbb0580403e24dd79326603d566043",
    "994bd3227af64dfaeb8dee9a8b97a9bd552fbb4954d198cea6fd257ee4b60879",
    "028420433bf1b9e45ee88c00cfd5ef39dfa82d5a9fc4d389ca8125e7fd9f822a",
    "a087159321aac8d661ee9b912923853fc162c28539cc79991c7d9c95ed5a337b",
]
_LIBRARIES = "libscipy_openblas64_-fdde5778.so:0.3.30:Haswell;libscipy_openblas-b75cc656.so:0.3.29.dev:Haswell"
#: The digests of PINNED_RUNS computed by the code of the commit before float32 training existed (5de4135), per
#: BLAS fingerprint: numpy 2.3.5's and SciPy 1.16.3's OpenBLAS with Haswell kernels (the specification of
#: docs/performance.md, on which the long training runs are resumed), OpenBLAS started with one or two threads.
PINNED_DIGESTS = {f"{_LIBRARIES};start_threads=[1, 1]": _HASWELL, f"{_LIBRARIES};start_threads=[2, 2]": _HASWELL}


def test_float64_training_gives_the_bits_of_the_code_before_float32():
    """float64 (the default) must give the bits long runs started before float32 existed are resumed with.

    Bits depend on the BLAS kernels, so the digests are pinned for the BLAS of the machines those runs use;
    elsewhere the test is skipped (the other tests compare float64 paths with each other on any machine)."""
    fingerprint = blas_fingerprint()
    if fingerprint not in PINNED_DIGESTS:
        pytest.skip(f"no pinned digests for this BLAS ({fingerprint})")
    got = [run_digest(*run) for run in PINNED_RUNS]
    assert got == PINNED_DIGESTS[fingerprint], [run[:3] for run, g, w in zip(PINNED_RUNS, got, PINNED_DIGESTS[
        fingerprint]) if g != w]


# ---------------------------------------------------------------- float32 updates against float64


def float32_and_reference(seed=0, width=64, hidden=4, batch=8, noise=0.3):
    """A float32 network (orthogonal weights plus noise, random biases) and its float64 copy, with an input batch
    and a target that float32 represents exactly: both types compute from the same numbers."""
    rng = np.random.default_rng(seed)
    net = models.init_network([width] * (hidden + 2), "orthogonal", seed=seed, n_out=10)
    for w, b in zip(net.weights, net.biases):
        w += noise * rng.standard_normal(w.shape) / np.sqrt(width)
        b += 0.1 * rng.standard_normal(b.shape)
    single = Network(net.weights, net.biases, width, net.activation, 10, dtype="float32")
    double = Network(single.weights, single.biases, width, net.activation, 10)
    x = rng.standard_normal((batch, width)).astype(np.float32).astype(float)
    target = double.forward(x).rates[-1]
    target[:, :10] = rng.standard_normal((batch, 10))
    return single, double, x, target.astype(np.float32).astype(float)


@pytest.mark.parametrize("gamma", [1e-1, 1e-3, 1e-5])
def test_float32_gait_updates_err_by_float32_rounding_times_the_conditioning(gamma):
    """With the targets as scaled deviations (S_1 = gamma^-4, up to 1e20 in this test) every layer's float32
    update is as accurate as float32 rounding amplified by the weights' conditioning allows, whatever gamma."""
    single, double, x, target = float32_and_reference()
    fwd = double.forward(x)
    assert min(np.abs(h).min() for h in fwd.preactivations) > tol.FLOAT32_KINK_MARGIN  # no slope differs
    want, _, _ = models.rule_updates(double, x, target, "gait", gamma, fwd=fwd)
    got, got_b, _ = models.rule_updates(single, x, target, "gait", gamma)
    assert all(d.dtype == np.float32 for d in got + got_b)
    width, depth = single.widths[1], single.depth
    cond = max(np.linalg.cond(w) for w in double.weights)
    bound = tol.FLOAT32_UPDATE_ERROR_FACTOR * tol.EPS32 * np.sqrt(width) * depth * cond
    errors = [relative_error(g.astype(float), w) for g, w in zip(got, want)]
    assert max(errors) < bound, (errors, bound)


def test_float32_runs_every_part_in_float32():
    """Forward pass, LU factors, targets, updates, regulariser and Adam's moments stay float32."""
    single, _, x, target = float32_and_reference()
    fwd = single.forward(x)
    assert all(a.dtype == np.float32 for a in fwd.rates[1:] + fwd.preactivations + fwd.derivatives)
    lu, _ = models.network.lu_checked(1, single.weights[1])
    assert lu.dtype == np.float32
    targets = models.compute_targets(single, fwd, target, "gait", 1e-3)
    assert all(d.dtype == np.float32 for d in targets.scaled_deviations)
    assert models.orthogonality_gradient(single.weights[0], 0.1).dtype == np.float32
    opt = models.Adam.published(1e-4)
    models.training.train_step(single, opt, x, target, "gait", 1e-3, 0.1)
    assert all(a.dtype == np.float32 for a in single.weights + single.biases + opt.m + opt.v)
    for hook in (models.LearnedFeedback(single), models.TransposedFeedback()):
        dW, db = hook(single, x, target, single.forward(x))
        assert all(d.dtype == np.float32 for d in dW + db)
    assert all(q.dtype == np.float32 for q in models.LearnedFeedback(single).feedback.matrices[1:])


def test_float32_inverses_refuse_what_float32_cannot_invert():
    """A matrix of condition ~1e7: float64 inverts it (limit 1e10), float32 refuses it (limit 1e5)."""
    w = np.diag([1.0, 1.0, 1e-7]) + 0.0
    assert models.network.lu_checked(0, w)[0].dtype == np.float64
    with pytest.raises(SingularWeightsError, match=r"weights\[0\].*< 1e-05"):
        models.network.lu_checked(0, w.astype(np.float32))


def test_a_float32_network_saves_and_loads_as_float32(tmp_path):
    single = float32_and_reference()[0]
    loaded = models.load_network(models.save_network(tmp_path / "net.npz", single))
    assert loaded.dtype == np.float32 and repr(loaded).endswith("dtype='float32')")
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(loaded.weights, single.weights))


# ---------------------------------------------------------------- float32 training runs


@pytest.mark.parametrize("rule, feedback", [("bp", "exact"), ("tp", "exact"), ("itp", "exact"), ("gait", "exact"),
                                            ("gait", "learned"), ("gait", "transpose")])
def test_float32_training_learns_what_float64_learns(tiny, rule, feedback):
    runs = {dtype: train(tiny_config(rule=rule, feedback=feedback, dtype=dtype), tiny, progress=False)
            for dtype in ("float64", "float32")}
    single = runs["float32"]
    assert all(a.dtype == np.float32 for a in single.network.weights + single.optimizer.m + single.optimizer.v)
    accuracy = {dtype: run.series("test", "accuracy")[1] for dtype, run in runs.items()}
    assert np.max(np.abs(accuracy["float32"] - accuracy["float64"])) <= tol.FLOAT32_TRAINING_ACCURACY, accuracy


def test_a_checkpoint_keeps_its_dtype_and_resumes_only_in_it(tiny, tmp_path):
    """float32 resumes to the bits of an uninterrupted run; another dtype is refused, and nothing is lost."""
    whole = train(tiny_config(dtype="float32", epochs=2), tiny, progress=False)
    train(tiny_config(dtype="float32", epochs=1), tiny, tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint.npz"
    meta, arrays = read_checkpoint(ckpt)
    assert meta["config"]["dtype"] == "float32" and arrays["w0"].dtype == arrays["v0"].dtype == np.float32
    before = ckpt.read_bytes()
    with pytest.raises(CheckpointError, match="dtype: expected 'float32'.*got 'float64'.*--dtype float32"):
        train(tiny_config(dtype="float64", epochs=2), tiny, tmp_path, resume=True, progress=False)
    assert ckpt.read_bytes() == before and (tmp_path / "metrics.csv").exists()
    resumed = train(tiny_config(dtype="float32", epochs=2), tiny, tmp_path, resume=True, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.network.weights + resumed.optimizer.m,
                                                    whole.network.weights + whole.optimizer.m))
    assert resumed.rows == whole.rows


def test_a_checkpoint_written_before_dtype_existed_is_float64():
    assert with_defaults({"rule": "gait"})["dtype"] == "float64"


@pytest.mark.parametrize("settings, message", [
    ({"dtype": "float16"}, r"^dtype: expected one of \('float64', 'float32'\), got 'float16'"),
    ({"dtype": "float32", "engine": "circuit"}, "^dtype: expected 'float64' with engine 'circuit'"),
    ({"dtype": "float32", "gamma": 1e-4, "widths": [49] * 11}, "^dtype: expected 'float64' for rule 'gait'"),
])
def test_the_dtype_is_checked(settings, message):
    with pytest.raises(ValidationError, match=message):
        tiny_config(**settings)


def test_the_dtype_is_spelled_out():
    assert tiny_config(dtype=np.float32).dtype == "float32" and tiny_config().dtype == "float64"
    with pytest.raises(ValidationError, match="^dtype: expected one of"):
        Network([np.eye(2)], [np.zeros(2)], 2, dtype="int32")


@pytest.mark.parametrize("argv", [["--dtype", "float16"], ["--dtype", "float32", "--update", "circuit"]])
def test_a_bad_dtype_is_a_usage_error_naming_the_option(argv, tmp_path, capsys):
    out = tmp_path / "new"
    assert main(["train", "--out", str(out), *argv], prog="gaitcircuit") == 2
    err = capsys.readouterr().err
    assert err.startswith("gaitcircuit train: error: ") and "--dtype" in err and len(err.splitlines()) == 1
    assert not out.exists()
