"""Fig. 1 (right) of the paper: alignment of TP, ITP and GAIT-prop updates with BP.

An untrained 784-wide network with 4 hidden layers (leaky ReLU, 10 task outputs,
774 auxiliary outputs), random (Xavier normal) or orthogonal initialisation; one
batch of Fashion-MNIST test images (embedded subset) with one-hot targets and the
quadratic loss.  The paper reports near-perfect alignment for GAIT-prop with
orthogonal weights only; TP does not align.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import models
from analysis.metrics import cosine
from analysis.plots import RULE_COLORS, cosine_by_layer, new_figure, rule_label, save_figure, scatter_updates
from models.errors import ValidationError
from models.regulariser import orthogonality_gradient
from models.validation import check_count, check_gamma

from .common import Progress, write_summary
from .datasets import load_embedded
from .options import given_or, quick_help

DESCRIPTION = __doc__


#: option -> (default, default with --quick)
QUICK = {"batch": (60, 20)}


def add_arguments(parser):
    parser.add_argument("--width", type=int, default=784, help="layer width (784: the input size)")
    parser.add_argument("--hidden", type=int, default=4, metavar="N", help="hidden layers")
    parser.add_argument("--batch", type=int, help=quick_help("test images", *QUICK["batch"]))
    parser.add_argument("--gamma", type=float, default=1e-3, help="ITP/GAIT increment, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="a training checkpoint (train's checkpoint.npz): measure alignment on its trained "
                             "weights instead of untrained ones (default: untrained weights)")


def validate(args) -> dict:
    """The study's settings (given options, --quick's defaults for the others); ValidationError if any is bad."""
    if check_count("--width", args.width) > 784:
        raise ValidationError(f"--width: expected at most 784 (the input size), got {args.width}")
    check_count("--hidden", args.hidden, 0)
    check_gamma(args.gamma, 1, allow_one=True, name="--gamma")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise ValidationError(f"--checkpoint: expected a training checkpoint file, got {args.checkpoint!r} "
                              "(no such file)")
    return {"batch": check_count("--batch", given_or(args, "batch", *QUICK["batch"]))}


def run(args, out):
    batch = validate(args)["batch"]
    if args.checkpoint:
        return run_checkpoint(args, out, batch)
    data = load_embedded()
    x = data.test_x[:batch]
    labels = data.test_y[:batch]
    widths = [784] + [args.width] * (args.hidden + 1)
    rules = ("tp", "itp", "gait")
    inits = ("random", "orthogonal")
    progress = Progress("alignment", len(inits) * (len(rules) + 1))
    rows, updates = [], {}
    for init in inits:
        net = models.init_network(widths, "xavier" if init == "random" else init, seed=args.seed, n_out=10)
        fwd = net.forward(x)
        target = models.constructed_target("quadratic", fwd.rates[-1], labels, 10)
        bp, _ = models.backprop(net, fwd, target)
        updates[init, "bp"] = bp
        progress.step(f"{init} bp")
        for rule in rules:
            targets = models.compute_targets(net, fwd, target, rule, args.gamma)
            dW, _ = models.updates_from_targets(net, targets)
            updates[init, rule] = dW
            for layer, (a, b) in enumerate(zip(dW, bp), start=1):
                rows.append({"init": init, "rule": rule, "layer": layer, "cosine": cosine(a, b)})
            progress.step(f"{init} {rule}")
    L = len(widths) - 1
    plot(updates, rows, inits, rules, L, args.gamma, out, max_points=1500 if args.quick else 4000)
    print(f"{'init':<11}{'rule':<6}" + "".join(f"layer {i:<4}" for i in range(1, L + 1)))
    for init in inits:
        for rule in rules:
            cos = [r["cosine"] for r in rows if r["init"] == init and r["rule"] == rule]
            print(f"{init:<11}{rule:<6}" + "".join(f"{c:<10.4f}" for c in cos))
    batch_rows = gait_cosine_by_batch(data, widths, args.seed, quick=args.quick)
    write_summary(out, "alignment", {**vars(args), "batch": batch, "widths": widths}, rows=rows,
                  gait_by_batch=batch_rows)


def plot(updates, rows, inits, rules, L, gamma, out, max_points=4000):
    """Per initialisation, every rule's update against BP's entry by entry (rows: rules, columns: layers); and the
    cosine with BP per layer for every rule and initialisation.  Returns the figures."""
    figures = []
    for init in inits:
        fig, axes = new_figure(len(rules), L, figsize=(2.7 * L, 2.5 * len(rules) + 0.4))
        for r, rule in enumerate(rules):
            for i in range(L):
                scatter_updates(axes[r, i], updates[init, "bp"][i], updates[init, rule][i], max_points=max_points,
                                seed=i, xlabel="BP", ylabel=rule_label(rule),
                                title=f"layer {i + 1}" + (" (out)" if i == L - 1 else ""), color=RULE_COLORS[rule])
        fig.suptitle(f"Each rule's weight update against BP's, entry by entry ({init} initialisation, "
                     f"gamma = {gamma:g}; dashed: equal)")
        save_figure(fig, out / f"alignment_{init}.png")
        figures.append(fig)
    fig, axes = new_figure(figsize=(6.5, 3.6))
    cosine_by_layer(axes[0, 0], rows)
    axes[0, 0].set_title(f"Alignment with BP in an untrained network ({L - 1} hidden layers)", fontsize=10)
    save_figure(fig, out / "alignment_cosines.png")
    return figures + [fig]


def gait_cosine_by_batch(data, widths, seed, quick=False):
    """Orthogonal init: the smallest per-layer cosine of GAIT with BP, by batch size and gamma.

    With a piecewise-linear f, GAIT = BP (orthogonal W) except where an increment crosses
    a kink, with probability O(gamma) per unit; each crossing costs O(1) for its sample,
    so a batch update's cosine falls as the batch grows.
    """
    net = models.init_network(widths, "orthogonal", seed=seed, n_out=10)
    sizes = (60, 1000) if not quick else (60, 300)
    rows = []
    print("\nGAIT vs BP with orthogonal weights: smallest per-layer cosine, by batch size")
    print(f"{'gamma':>8}" + "".join(f"{'batch ' + str(b):>14}" for b in sizes))
    for gamma in (1e-2, 1e-3, 1e-4):
        cells = []
        for b in sizes:
            x, labels = data.test_x[:b], data.test_y[:b]
            fwd = net.forward(x)
            target = models.constructed_target("quadratic", fwd.rates[-1], labels, 10)
            bp, _ = models.backprop(net, fwd, target)
            gait, _ = models.updates_from_targets(net, models.compute_targets(net, fwd, target, "gait", gamma))
            worst = min(cosine(a, c) for a, c in zip(gait, bp))
            rows.append({"gamma": gamma, "batch": b, "min_cosine": worst})
            cells.append(worst)
        print(f"{gamma:>8.0e}" + "".join(f"{c:>14.5f}" for c in cells))
    return rows


def run_checkpoint(args, out, batch: int):
    """Alignment with BP and orthogonality of a trained network (why does GAIT follow BP, or not?)."""
    import json

    from models.training import TrainConfig, with_defaults
    from models.training import build_model as build

    with np.load(args.checkpoint) as ckpt:
        meta = json.loads(str(ckpt["meta"]))
        cfg = TrainConfig(**with_defaults(meta["config"]))
        net, opt = build(cfg)
        for i in range(net.depth):
            net.weights[i][...] = ckpt[f"w{i}"]
            net.biases[i][...] = ckpt[f"b{i}"]
        # Adam's step per unit lr, |m| / (sqrt(v) + eps), bias correction left out (~1 after training)
        steps = [np.abs(ckpt[f"m{i}"]) / (np.sqrt(ckpt[f"v{i}"]) + opt.eps) for i in range(net.depth)]
    data = load_embedded()
    x, labels = data.test_x[:batch], data.test_y[:batch]
    fwd = net.forward(x)
    # the trained network's own loss and task units (the probe batch is always embedded Fashion-MNIST images)
    target = models.constructed_target(cfg.loss, fwd.rates[-1], labels, net.n_out)
    bp, _ = models.backprop(net, fwd, target)
    updates = {"bp": bp}
    rows = []
    for rule in ("tp", "itp", "gait"):
        dW, _ = models.updates_from_targets(net, models.compute_targets(net, fwd, target, rule, cfg.gamma))
        updates[rule] = dW
        for layer, (a, b) in enumerate(zip(dW, bp), start=1):
            rows.append({"init": f"trained ({cfg.rule}, epoch {meta['epoch']})", "rule": rule, "layer": layer,
                         "cosine": cosine(a, b)})
    ortho = [float(np.linalg.norm(w.T @ w - np.eye(w.shape[0])) / np.sqrt(w.shape[0])) for w in net.weights]
    print(f"checkpoint {args.checkpoint}: {cfg.rule} after epoch {meta['epoch']}")
    print("orthogonality error |W^T W - I|_F / sqrt(n) per layer: " + ", ".join(f"{o:.3f}" for o in ortho))
    for rule in ("tp", "itp", "gait"):
        print(f"cos({rule.upper()}, BP) per layer: "
              + ", ".join(f"{r['cosine']:.4f}" for r in rows if r["rule"] == rule))
    # What the regulariser adds to each weight's update, against the task's own update on this batch
    task = updates[cfg.rule]
    n_out = net.n_out
    reg_share = [float(np.linalg.norm(orthogonality_gradient(w, cfg.regulariser)[sel]) / np.linalg.norm(t[sel]))
                 for w, t, sel in zip(net.weights, task, [slice(None)] * (net.depth - 1) + [slice(0, n_out)])]
    adam_step = [float(np.median(s)) for s in steps[: net.depth - 1]]
    adam_out = {"task_rows": float(np.median(steps[-1][:n_out])),
                "auxiliary_rows": float(np.median(steps[-1][n_out:])) if steps[-1].shape[0] > n_out else None}
    print(f"regulariser (lambda {cfg.regulariser:g}) / task update, Frobenius norms per layer (output: task rows): "
          + ", ".join(f"{r:.3f}" for r in reg_share))
    print("Adam's last step per unit lr, median |m| / (sqrt(v) + eps): hidden layers "
          + ", ".join(f"{a:.3f}" for a in adam_step)
          + f"; output task rows {adam_out['task_rows']:.3f}"
          + (f", auxiliary rows {adam_out['auxiliary_rows']:.3f}" if adam_out["auxiliary_rows"] is not None else ""))
    write_summary(out, "alignment", {**vars(args), "batch": batch, "trained_config": meta["config"]}, rows=rows,
                  orthogonality_error=ortho, regulariser_over_task=reg_share, adam_step_hidden=adam_step,
                  adam_step_output=adam_out)
