"""Interpretability figures of a layer-wise convex network (``convexrecon.analysis.explain``).

Writes under ``--out`` (default ``benchmarks/results/explain``):

* ``regions.png``: the validation slice, and for every block the map of its
  linear regions (pixels with the same activation pattern share a colour; the
  title gives the number of distinct regions);
* ``filters.png``: at three chosen pixels (edge: largest target gradient;
  flat tissue: smallest local variation inside the object; background: the
  strongest aliasing outside the object) the whole network's effective filter (exact Jacobian row: its learned
  part, i.e. minus the skip's identity, real ← real channel; and the log
  magnitude summed over channels, skip included), around the pixel;
* ``psf.png``: the network's point-spread function at the same pixels (Jacobian
  column: how a point perturbation there spreads over the output);
* ``explain.json``: region counts, pixels and the check that the network output at
  each pixel equals its effective filter applied to the input (the network has
  no biases, so it is positively homogeneous and ``f(x) = J(x) x`` exactly).

By default a small network is trained on the synthetic knee-like slices
(Poisson 4×, a few minutes on 2 cores); ``--model DIR`` explains a saved model
(``ReconNet.save``, e.g. from ``run_knee.py``) on ``--data`` instead.

    python -m benchmarks.run_explain
    python -m benchmarks.run_explain --model benchmarks/results/knee/models/poisson/layerwise_convex
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.kit.runinfo import command  # noqa: E402
from convexrecon.analysis import explain  # noqa: E402
from convexrecon.data import SliceDataset, make_synthetic  # noqa: E402
from convexrecon.io import write_text  # noqa: E402
from convexrecon.stack.layerwise import BlockSettings, train_layerwise  # noqa: E402
from convexrecon.stack.persist import load_network  # noqa: E402
from convexrecon.data.splits import stack_split  # noqa: E402

DATA = {"volumes": 3, "slices": 2, "coils": 6, "shape": (128, 368), "snr": 25.0, "crop": 64}
# i.i.d. gates, as in the recorded figures (the layer-wise default is antithetic)
BLOCKS = [BlockSettings(kernel_size=5, num_arrangements=8, activation="gated", beta_ratio=1e-2, tol=1e-3,
                        max_iter=300, gate_sampling="gaussian")] * 3


def choose_pixels(target: torch.Tensor, zero_filled: torch.Tensor) -> dict[str, tuple[int, int]]:
    """Edge, flat-tissue and background pixels of one slice ``(2, H, W)`` (magnitudes of target / input)."""
    mag = torch.hypot(target[0], target[1]).double()
    zf = torch.hypot(zero_filled[0], zero_filled[1]).double()
    peak = float(mag.max())
    inner = torch.zeros_like(mag, dtype=torch.bool)
    inner[4:-4, 4:-4] = True
    gy, gx = torch.gradient(mag)
    grad = torch.hypot(gy, gx)
    local = F.avg_pool2d(mag[None, None], 5, 1, 2)[0, 0]
    local_sq = F.avg_pool2d(mag[None, None] ** 2, 5, 1, 2)[0, 0]
    spread = (local_sq - local**2).clamp_min(0).sqrt()
    tissue = inner & (local > 0.3 * peak)
    background = inner & (F.max_pool2d(mag[None, None], 3, 1, 1)[0, 0] < 0.05 * peak)
    pick = lambda score: tuple(int(i) for i in np.unravel_index(int(torch.argmax(score)), mag.shape))  # noqa: E731
    pixels = {"edge": pick(torch.where(inner, grad, -1.0)),
              "flat tissue": pick(torch.where(tissue, -spread, -np.inf))}
    # background: where the target is (nearly) empty, the pixel with the strongest aliasing in the input;
    # without such pixels, the darkest one
    pixels["background"] = pick(torch.where(background, zf, -1.0)) if bool(background.any()) else pick(-local)
    return pixels


def trained_network(out: Path, seed: int) -> tuple[Any, torch.Tensor, torch.Tensor, dict[str, Any]]:
    root = out / "data"
    if not any(root.glob("*.h5")):
        make_synthetic(root, volumes=DATA["volumes"], slices=DATA["slices"], coils=DATA["coils"],
                       shape=DATA["shape"], snr=DATA["snr"], seed=seed)
    dataset = SliceDataset(root, crop=DATA["crop"], seed=seed, cache_dir=out / "cache", mask="poisson",
                           acceleration=4.0, calib=16)
    train, val = stack_split(dataset, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_layerwise(train.inputs, train.targets, BLOCKS, patch_size=24, patches_per_slice=6,
                                 seed=seed, chunk_size=4, progress=True)
    info = {"model": "trained here", "data": DATA, "blocks": [vars(b) for b in BLOCKS],
            "records": [{k: r[k] for k in ("block", "width", "relative_gap", "status")} for r in result.records]}
    return result.network, val.inputs, val.targets, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="directory of a saved ReconNet (2D)")
    parser.add_argument("--data", type=Path, default=None, help="fastMRI-layout directory for --model (default: synthetic)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/explain"))
    parser.add_argument("--slice", type=int, default=0, help="validation slice to explain")
    parser.add_argument("--radius", type=int, default=10, help="half-width of the filter / PSF crops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.model is None:
        net, inputs, targets, info = trained_network(args.out, args.seed)
    else:
        net = load_network(args.model)
        data = net.config.get("data", {})
        root = args.data or Path(data.get("root", ""))
        if not root.is_dir():
            parser.error(f"argument --data: expected the model's data directory. Got {root}.")
        dataset = SliceDataset(root, crop=int(data.get("crop", 320)), seed=args.seed, cache_dir=args.out / "cache",
                               mask=data.get("mask", "poisson"), acceleration=data.get("acceleration", 4.0))
        _, val = stack_split(dataset, 1)
        inputs, targets, info = val.inputs, val.targets, {"model": str(args.model)}
    if not 0 <= args.slice < len(inputs):
        parser.error(f"argument --slice: expected 0 <= slice < {len(inputs)}. Got {args.slice}.")
    net = net.double().eval()
    x = inputs[args.slice:args.slice + 1].double()
    pixels = choose_pixels(targets[args.slice], inputs[args.slice])
    regions = explain.network_regions(net, x)
    results: dict[str, Any] = {**info, "slice": args.slice, "regions_per_block": [r.num_regions for r in regions],
                               "pixels": {}}
    filters, psfs = {}, {}
    with torch.no_grad():
        output = net(x)
    for name, (h, w) in pixels.items():
        row = explain.network_filter(net, x, (0, h, w))
        psf = explain.point_spread_function(net, x, (0, h, w))
        applied = torch.einsum("cdhw,dhw->c", row, x[0])
        filters[name] = explain.crop_around(row, (h, w), args.radius)
        psfs[name] = explain.crop_around(psf, (h, w), args.radius)
        results["pixels"][name] = {
            "pixel": [h, w], "regions": [int(r.labels[0, h, w]) for r in regions],
            "output": output[0, :, h, w].tolist(), "filter_applied_to_input": applied.tolist(),
            "max_abs_difference": float((applied - output[0, :, h, w]).abs().max()),
            "filter_l1_outside_centre": float(row.abs().sum() - row[:, :, h, w].abs().sum()),
        }
    _plot(x[0], regions, pixels, filters, psfs, args.out)
    results["seconds"] = time.perf_counter() - start
    results["command"] = command("run_explain.py", argv)
    write_text(args.out / "explain.json", json.dumps(results, indent=2, default=str))
    print(json.dumps({k: results[k] for k in ("regions_per_block", "pixels")}, indent=1))
    return 0


def _plot(x, regions, pixels, filters, psfs, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mag = torch.hypot(x[0], x[1]).numpy()
    fig, axes = plt.subplots(1, 1 + len(regions), figsize=(3.2 * (1 + len(regions)), 3.4))
    axes[0].imshow(mag, cmap="gray")
    axes[0].set_title("zero-filled input")
    for (name, (h, w)), marker in zip(pixels.items(), "o^s"):
        axes[0].plot(w, h, marker, mfc="none", mec="red", ms=8, label=name)
    axes[0].legend(fontsize=7, loc="lower right")
    for i, r in enumerate(regions):
        axes[i + 1].imshow(r.labels[0].numpy() % 20, cmap="tab20", interpolation="nearest")
        axes[i + 1].set_title(f"block {i + 1}: {r.num_regions} regions")
    for a in axes:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "regions.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(len(filters), 3, figsize=(9, 3 * len(filters)))
    for row, (name, network) in zip(axes, filters.items()):
        centre = network.shape[-1] // 2
        real = network[0, 0].numpy().copy()
        real[centre, centre] -= 1.0  # the skip connection's identity; what remains is learned
        lim = np.abs(real).max()
        row[0].imshow(mag, cmap="gray")
        h, w = pixels[name]
        row[0].plot(w, h, "o", mfc="none", mec="red", ms=10)
        row[0].set_title(name)
        row[1].imshow(real, cmap="RdBu_r", vmin=-lim, vmax=lim)
        row[1].set_title("network filter − skip, real ← real", fontsize=9)
        row[2].imshow(np.log10(network.abs().sum((0, 1)).numpy() + 1e-6), cmap="viridis")
        row[2].set_title("log10 Σ|filter| over channels")
        for a in row:
            a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "filters.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(psfs), figsize=(3.2 * len(psfs), 3.4))
    for a, (name, psf) in zip(np.atleast_1d(axes), psfs.items()):
        a.imshow(np.log10(psf.abs().sum((0, 1)).numpy() + 1e-6), cmap="viridis")
        a.set_title(f"PSF at {name} (log10 Σ|·|)")
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out / "psf.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
