"""The knee experiment's figures: PSNR/SSIM per block, example images with error maps, the batch-size bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from convexrecon.io import atomic_path  # noqa: E402


def save_figure(fig: Any, path: Path) -> None:
    """A PNG written atomically; the figure is closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_psnr_vs_layers(masks: dict[str, Any], path: Path) -> None:
    """Validation PSNR/SSIM after each block; end-to-end, zero-filled and CS as lines."""
    fig, axes = plt.subplots(len(masks), 2, figsize=(10, 3.6 * len(masks)), squeeze=False)
    for row, (mask, entry) in enumerate(masks.items()):
        for col, metric in enumerate(("psnr", "ssim")):
            ax = axes[row, col]
            for method, key, style in (("layerwise_convex", "blocks", "o-"), ("layerwise_adam", "blocks", "s--"),
                                       ("layerwise_convex_relu", "blocks", "^-"),
                                       ("unrolled_convex", "stages", "D-"), ("unrolled_layerwise_adam", "stages", "v--")):
                if method not in entry:
                    continue
                values = [b[metric] for b in entry[method][key]]
                ax.plot(range(1, len(values) + 1), values, style, label=method.replace("_", " "))
            for method, color in (("end_to_end", "k"), ("unrolled_end_to_end", "tab:red"),
                                  ("cs_l1_wavelet", "tab:green"), ("zero_filled", "tab:gray")):
                if method in entry:
                    ax.axhline(entry[method][f"{metric}_mean"], color=color, ls=":", label=method.replace("_", " "))
            ax.set_xlabel("blocks / unrolled stages")
            ax.set_ylabel(f"validation {metric.upper()}")
            ax.set_title(f"{mask} 4×")
            depth = max(len(entry["layerwise_convex"]["blocks"]), len(entry.get("unrolled_convex", {}).get("stages", [])))
            ax.set_xticks(range(1, depth + 1))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def plot_examples(images: dict[str, Any], path: Path) -> None:
    """Target, zero-filled, CS, end-to-end, layer-wise (convex and Adam) and error maps, per mask."""
    order = tuple(name for name in ("target", "zero_filled", "cs_l1_wavelet", "end_to_end", "layerwise_adam",
                                    "layerwise_convex", "layerwise_convex_relu", "unrolled_end_to_end",
                                    "unrolled_convex") if all(name in imgs for imgs in images.values()))
    fig, axes = plt.subplots(2 * len(images), len(order), figsize=(2.3 * len(order), 4.8 * len(images)),
                             squeeze=False)
    for m, (mask, imgs) in enumerate(images.items()):
        mags = {}
        for name in order:
            x = np.asarray(imgs[name].detach().numpy() if hasattr(imgs[name], "detach") else imgs[name])
            mags[name] = np.abs(x[0] + 1j * x[1]) if not np.iscomplexobj(x) and x.ndim == 3 else np.abs(x)
        vmax = mags["target"].max()
        for j, name in enumerate(order):
            # nearest: the pixels as reconstructed (no display smoothing); the PNG is 2.5x smaller
            axes[2 * m, j].imshow(mags[name], cmap="gray", vmin=0, vmax=vmax, interpolation="nearest")
            axes[2 * m, j].set_title(f"{name.replace('_', ' ')}\n({mask})", fontsize=8)
            err = np.abs(mags[name] - mags["target"])
            axes[2 * m + 1, j].imshow(err, cmap="magma", vmin=0, vmax=0.2 * vmax, interpolation="nearest")
            axes[2 * m + 1, j].set_title("|error| (×5)", fontsize=8)
        for ax in axes[2 * m:2 * m + 2].ravel():
            ax.axis("off")
    save_figure(fig, path)


def plot_batch_size(memory: dict[str, Any], path: Path) -> None:
    """Largest batch in 12 GiB: end-to-end against each layer-wise block (the paper's full architecture)."""
    names = ["end-to-end"] + [f"block {b['block']}" for b in memory["layerwise"]["blocks"]]
    values = [memory["end_to_end"]["max_batch_12gb"]] + [b["max_batch_12gb"] for b in memory["layerwise"]["blocks"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, values, color=["k"] + ["tab:blue"] * (len(names) - 1))
    ax.bar_label(bars)
    ax.set_ylabel("max batch in 12 GiB")
    arch = memory["architecture"]
    ax.set_title(f"{len(arch['widths']) + 1} conv layers, {arch['widths'][0]} ch, "
                 f"{arch['kernel_size']}×{arch['kernel_size']}, {arch['size']}²", fontsize=9)
    save_figure(fig, path)


def plot_training_curves(masks: dict[str, Any], path: Path) -> None:
    """Held-out loss of every Adam-trained method's chosen run against its wall time, one axis per mask; the convex
    methods' wall times as vertical lines (their solves have no held-out curve)."""
    fig, axes = plt.subplots(1, len(masks), figsize=(6 * len(masks), 4), squeeze=False)
    for ax, (mask, entry) in zip(axes[0], masks.items()):
        for name, e in entry.items():
            if isinstance(e, dict) and e.get("curve"):
                points = np.asarray(e["curve"], dtype=float)
                ax.plot(points[:, 0], points[:, 1], label=f"{name.replace('_', ' ')} (Adam, held-out loss)")
        for name, color in (("layerwise_convex", "tab:blue"), ("layerwise_convex_relu", "tab:purple"),
                            ("unrolled_convex", "tab:red")):
            if name in entry:
                ax.axvline(entry[name]["train_seconds"], color=color, ls="--", label=f"{name.replace('_', ' ')} time")
        ax.set_xlabel("wall time of the chosen run (s)")
        ax.set_ylabel("held-out training-volume loss (per pixel)")
        ax.set_yscale("log")
        ax.set_title(f"{mask} 4×")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
