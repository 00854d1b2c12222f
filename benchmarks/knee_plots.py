"""Figures of ``run_knee.py``: the seed's Figs. 2 (PSNR vs layers), 3 (examples) and 4 (batch size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from convexrecon.io import atomic_path  # noqa: E402


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_psnr_vs_layers(masks: dict[str, Any], path: Path) -> None:
    """Validation PSNR/SSIM after each block; end-to-end, zero-filled and CS as lines."""
    fig, axes = plt.subplots(len(masks), 2, figsize=(10, 3.6 * len(masks)), squeeze=False)
    for row, (mask, entry) in enumerate(masks.items()):
        for col, metric in enumerate(("psnr", "ssim")):
            ax = axes[row, col]
            for method, style in (("layerwise_convex", "o-"), ("layerwise_adam", "s--")):
                values = [b[metric] for b in entry[method]["blocks"]]
                ax.plot(range(1, len(values) + 1), values, style, label=method.replace("_", " "))
            for method, color in (("end_to_end", "k"), ("cs_l1_wavelet", "tab:green"), ("zero_filled", "tab:gray")):
                ax.axhline(entry[method][f"{metric}_mean"], color=color, ls=":", label=method.replace("_", " "))
            ax.set_xlabel("blocks (layers − 1)")
            ax.set_ylabel(f"validation {metric.upper()}")
            ax.set_title(f"{mask} 4×")
            ax.set_xticks(range(1, len(entry["layerwise_convex"]["blocks"]) + 1))
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_examples(images: dict[str, Any], path: Path) -> None:
    """Target, zero-filled, CS, end-to-end, layer-wise (convex and Adam) and error maps, per mask."""
    order = ("target", "zero_filled", "cs_l1_wavelet", "end_to_end", "layerwise_adam", "layerwise_convex")
    fig, axes = plt.subplots(2 * len(images), len(order), figsize=(2.3 * len(order), 4.8 * len(images)),
                             squeeze=False)
    for m, (mask, imgs) in enumerate(images.items()):
        mags = {}
        for name in order:
            x = np.asarray(imgs[name].detach().numpy() if hasattr(imgs[name], "detach") else imgs[name])
            mags[name] = np.abs(x[0] + 1j * x[1]) if not np.iscomplexobj(x) and x.ndim == 3 else np.abs(x)
        vmax = mags["target"].max()
        for j, name in enumerate(order):
            axes[2 * m, j].imshow(mags[name], cmap="gray", vmin=0, vmax=vmax)
            axes[2 * m, j].set_title(f"{name.replace('_', ' ')}\n({mask})", fontsize=8)
            err = np.abs(mags[name] - mags["target"])
            axes[2 * m + 1, j].imshow(err, cmap="magma", vmin=0, vmax=0.2 * vmax)
            axes[2 * m + 1, j].set_title("|error| (×5)", fontsize=8)
        for ax in axes[2 * m:2 * m + 2].ravel():
            ax.axis("off")
    _save(fig, path)


def plot_batch_size(memory: dict[str, Any], path: Path) -> None:
    """Largest batch in 12 GiB: end-to-end against each layer-wise block (seed's full architecture)."""
    names = ["end-to-end"] + [f"block {b['block']}" for b in memory["layerwise"]["blocks"]]
    values = [memory["end_to_end"]["max_batch_12gb"]] + [b["max_batch_12gb"] for b in memory["layerwise"]["blocks"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(names, values, color=["k"] + ["tab:blue"] * (len(names) - 1))
    ax.bar_label(bars)
    ax.set_ylabel("max batch in 12 GiB")
    arch = memory["architecture"]
    ax.set_title(f"{len(arch['widths']) + 1} conv layers, {arch['widths'][0]} ch, "
                 f"{arch['kernel_size']}×{arch['kernel_size']}, {arch['size']}²", fontsize=9)
    _save(fig, path)
