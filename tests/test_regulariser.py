"""The orthogonality regulariser: the same bits as its dsyrk/dsymm transcription, on any number of threads."""

import numpy as np
import pytest
from scipy.linalg.blas import dsymm, dsyrk
from threadpoolctl import threadpool_limits

import models
import tests.tolerances as tol
from analysis.metrics import relative_error
from models.errors import ValidationError
from models.regularizer import orthogonality_gradient, start_orthogonality_gradients, subtract_orthogonality_gradients


def dsymm_transcription(w, lam):
    """The gradient as long training runs compute it: ``4 lam W O`` by dsyrk and dsymm, float64."""
    w = np.asarray(w, dtype=float)
    m = dsyrk(1.0, w, trans=1)
    np.fill_diagonal(m, 0.0)
    return dsymm(4.0 * lam, m, w, side=1, lower=0)


def near_orthogonal(n, rng, noise=0.05):
    """An orthogonal matrix plus noise: what trained weights under the regulariser look like."""
    return models.orthogonal(n, rng) + noise * rng.standard_normal((n, n)) / np.sqrt(n)


def test_gradient_against_the_formula():
    """``4 lam W (W^T W - diag(W^T W))`` written out with numpy products."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((50, 50)) / np.sqrt(50)
    m = w.T @ w
    expected = 4 * 0.3 * w @ (m - np.diag(np.diag(m)))
    assert relative_error(orthogonality_gradient(w, 0.3), expected) < tol.IDENTITY_RTOL


def test_float32_weights_are_computed_in_float32():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((784, 784)) / np.sqrt(784)
    w32 = w.astype(np.float32)
    g32 = orthogonality_gradient(w32, 0.1)
    assert g32.dtype == np.float32
    assert relative_error(g32, orthogonality_gradient(w32.astype(float), 0.1)) < tol.REGULARISER_FLOAT32_RTOL
    assert np.isclose(models.orthogonality_penalty(w32, 0.1), models.orthogonality_penalty(w32.astype(float), 0.1),
                      rtol=tol.REGULARISER_FLOAT32_RTOL)
    assert orthogonality_gradient(w.astype(np.float16), 0.1).dtype == np.float64
    assert orthogonality_gradient(w.tolist(), 0.1).dtype == np.float64


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matrices_on_threads_give_the_same_bits(threads):
    rng = np.random.default_rng(2)
    weights = [near_orthogonal(n, rng) for n in (200, 151, 151, 100, 60)]
    directions = [rng.standard_normal(w.shape) for w in weights]
    with threadpool_limits(1, user_api="blas"):
        expected = [d - dsymm_transcription(w, 0.1) for d, w in zip(directions, weights)]
        subtract_orthogonality_gradients(directions, weights, 0.1, threads=threads)
    assert all(np.array_equal(a, b) for a, b in zip(directions, expected))


@pytest.mark.slow
@pytest.mark.parametrize("threads", [1, 2])
def test_paper_setting_steps_give_the_same_bits(threads):
    """Three regularised GAIT steps of the paper's network (784 wide, 4 hidden layers; the output layer has 10
    task rows and 774 auxiliary ones), the gradients started before the rule's updates and subtracted after:
    the same bits as the dsyrk/dsymm transcription subtracted after the updates."""
    rng = np.random.default_rng(3)
    nets = [models.init_network([784] * 6, "orthogonal", seed=0, n_out=10) for _ in range(2)]
    optimizers = [models.Adam.published(lr=1e-4) for _ in nets]
    x = rng.random((60, 784))
    with threadpool_limits(1, user_api="blas"):
        for _ in range(3):
            target = models.constructed_target("quadratic", nets[0].forward(x).rates[-1], rng.integers(0, 10, 60), 10)
            pending = start_orthogonality_gradients(nets[0].weights, 0.1, threads)
            steps = [models.compute_updates(net, x, target, "gait", 1e-3)[:2] for net in nets]
            pending.subtract_from(steps[0][0])
            for d, w in zip(steps[1][0], nets[1].weights):
                d -= dsymm_transcription(w, 0.1)
            for net, opt, (dW, db) in zip(nets, optimizers, steps):
                opt.step(net.weights + net.biases, dW + db)
    for a, b in zip(nets[0].weights + nets[0].biases, nets[1].weights + nets[1].biases):
        assert np.array_equal(a, b)


def test_bad_input_names_the_argument():
    w = [np.eye(3)]
    with pytest.raises(ValidationError, match="threads: expected an integer >= 1, got 0"):
        subtract_orthogonality_gradients([np.zeros((3, 3))], w, 0.1, threads=0)
    with pytest.raises(ValidationError, match=r"directions: expected 1 arrays \(one per weight matrix\), got 2"):
        subtract_orthogonality_gradients([np.zeros((3, 3))] * 2, w, 0.1)
