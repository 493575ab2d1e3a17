"""Plots.  Each function draws on a matplotlib ``ax`` from arrays; none simulates."""

from __future__ import annotations

import numpy as np

from .metrics import cosine

__all__ = ["use_agg", "scatter_updates", "cosine_by_layer"]


def use_agg():
    """Select the non-interactive backend and return pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_updates(ax, reference, estimate, max_points: int = 4000, seed: int = 0,
                    xlabel: str = "BP", ylabel: str = "rule") -> None:
    """Scatter of matching entries of two updates (subsampled), with the identity line and cosine."""
    ref, est = np.ravel(reference), np.ravel(estimate)
    if ref.size > max_points:
        idx = np.random.default_rng(seed).choice(ref.size, max_points, replace=False)
        ref, est = ref[idx], est[idx]
    ax.scatter(ref, est, s=2, alpha=0.4, rasterized=True)
    lim = max(np.max(np.abs(ref)), 1e-300)
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.6, ls="--")
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"cos = {cosine(reference, estimate):.4f}", fontsize=8)
    ax.ticklabel_format(style="sci", scilimits=(-2, 2))


def cosine_by_layer(ax, rows: list, group_keys=("init", "rule")) -> None:
    """Cosine with BP against layer, one line per group of ``rows`` (dicts with 'layer', 'cosine')."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in group_keys), []).append((r["layer"], r["cosine"]))
    for key, pts in sorted(groups.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=" / ".join(map(str, key)))
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine with BP")
    ax.axhline(1.0, color="k", lw=0.5)
    ax.legend(fontsize=7)
