"""Adam (Kingma & Ba) with bias correction, and the published GAIT-prop code's variant.

Parameters are updated in place along *descent directions* (the change per unit
learning rate, as returned by :mod:`models.rules`)::

    m <- beta1 m + (1 - beta1) d
    v <- beta2 v + (1 - beta2) d^2
    p <- p + lr * mhat / (sqrt(vhat) + eps)

``bias_correction=True`` (standard Adam): mhat = m / (1 - beta1^t), vhat = v / (1 - beta2^t).
``Adam.published()``: no bias correction, beta1 0.9, beta2 0.99, eps 1e-8 added to sqrt(v).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

__all__ = ["Adam"]


@dataclass
class Adam:
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    bias_correction: bool = True
    step_count: int = 0
    m: list = field(default_factory=list)
    v: list = field(default_factory=list)

    def __post_init__(self):
        if not (self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ValueError(
                f"Adam: expected lr > 0, 0 <= beta1, beta2 < 1 and eps > 0, got lr={self.lr}, "
                f"beta1={self.beta1}, beta2={self.beta2}, eps={self.eps}"
            )

    @classmethod
    def published(cls, lr: float = 1e-4) -> "Adam":
        """The variant of the published GAIT-prop code."""
        return cls(lr=lr, beta1=0.9, beta2=0.99, eps=1e-8, bias_correction=False)

    def step(self, params: list, directions: list) -> None:
        """Update every array in ``params`` in place along ``directions`` (same shapes)."""
        if len(params) != len(directions):
            raise ValueError(f"Adam.step: expected {len(params)} directions, got {len(directions)}")
        if not self.m:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.step_count += 1
        t = self.step_count
        c1 = 1.0 - self.beta1**t if self.bias_correction else 1.0
        c2 = 1.0 - self.beta2**t if self.bias_correction else 1.0
        # sqrt(vhat) + eps = (sqrt(v) + eps sqrt(c2)) / sqrt(c2): fold the corrections into two scalars.
        step_size = self.lr * np.sqrt(c2) / c1
        eps = self.eps * np.sqrt(c2)
        for p, d, m, v in zip(params, directions, self.m, self.v):
            if d.shape != p.shape:
                raise ValueError(f"Adam.step: direction of shape {d.shape} for a parameter of shape {p.shape}")
            if not p.flags.c_contiguous:
                raise ValueError("Adam.step: parameters must be C-contiguous arrays (updated in place); "
                                 "pass np.ascontiguousarray(p) when building the network")
            _adam_kernel(p.reshape(-1), np.ascontiguousarray(d).reshape(-1), m.reshape(-1), v.reshape(-1),
                         self.beta1, self.beta2, step_size, eps)


@numba.njit(parallel=True, cache=True)
def _adam_kernel(p, d, m, v, beta1, beta2, step_size, eps):  # pragma: no cover - compiled
    # One fused pass over memory: the step is memory-bound (numpy needs ~10 passes).
    for i in numba.prange(p.size):
        g = d[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        p[i] += step_size * mi / (np.sqrt(vi) + eps)
