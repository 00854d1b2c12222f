"""3D volumes: convex layer-wise vs end-to-end vs zero-filled / L1-wavelet CS, and the 3D memory table.

Data: synthetic knee-like 3D Cartesian volumes (``convexrecon.data.volume``):
fully sampled readout, Poisson disc 4x over (ky, kz) with a 16 x 16 calibration
square, ESPIRiT maps per readout position, SENSE zero-filled inputs and targets.
The first volume is validation, the rest training.

* ``zero_filled``: the network input; ``cs_l1_wavelet``: 3D L1-wavelet CS
  (sigpy), lambda chosen on the first training volume;
* ``end_to_end``: the 3D network (Conv3d, same widths and kernels) by Adam,
  lr 1e-4 halved every 10 epochs, on whole training volumes;
* ``layerwise_convex``: ``train_layerwise`` on seeded cubes of the training volumes.

Memory (device-independent count of ``convexrecon.analysis.memory``, on the meta device):
for 5-layer 3D networks (4 k^3 conv layers + 1 x 1 x 1 output), 64-256 channels,
5^3 and 7^3 kernels and growing cubic patches, the bytes of one training step at
batch 1 for end-to-end and for every layer-wise block, the largest batch and the
largest cube that fit 12, 24 and 80 GiB, and the configurations where end-to-end
does not fit at batch 1 while every layer-wise block does.

    python -m benchmarks.run_volume           # default (2-core CPU: a few minutes)
    python -m benchmarks.run_volume --quick   # < 3 min
    python -m benchmarks.run_volume --memory-only
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from convexrecon.stack.baselines import train_end_to_end  # noqa: E402
from convexrecon.data.volume import from_channels, l1_wavelet_volume, load_volume_set, make_synthetic_volumes  # noqa: E402
from convexrecon.stack.layerwise import BlockSettings, train_layerwise  # noqa: E402
from convexrecon.analysis.memory import GIB, block_memory, end_to_end_memory, max_batch  # noqa: E402
from convexrecon.metrics import score_slices  # noqa: E402
from convexrecon.stack.network import ReconNet  # noqa: E402
from benchmarks.kit.methods import convex_solve_bytes  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402

CONFIGS: dict[str, dict[str, Any]] = {
    "quick": {"volumes": 3, "shape": [12, 40, 36], "coils": 6, "snr": 25.0, "blocks": 2, "kernel_size": 3,
              "num_arrangements": 4, "beta_ratio": 1e-2, "tol": 1e-3, "max_iter": 300, "patch_size": 10,
              "patches_per_volume": 4, "epochs_end_to_end": 20, "cs_lambdas": [3e-3, 1e-2], "cs_max_iter": 20},
    "default": {"volumes": 5, "shape": [24, 48, 40], "coils": 8, "snr": 25.0, "blocks": 3, "kernel_size": 3,
                "num_arrangements": 8, "beta_ratio": 1e-2, "tol": 1e-3, "max_iter": 600, "patch_size": 16,
                "patches_per_volume": 6, "epochs_end_to_end": 40, "cs_lambdas": [1e-3, 3e-3, 1e-2],
                "cs_max_iter": 50},
}
BUDGETS_GIB = (12, 24, 80)
MEMORY_GRID = {"widths": (64, 128, 256), "kernels": (5, 7), "sizes": (32, 64, 128, 160, 192, 256, 288)}


def metrics(targets: torch.Tensor, preds: np.ndarray | torch.Tensor, scales: torch.Tensor,
            names: list[str]) -> dict[str, float]:
    """Volume-wise (fastMRI: data range = volume max) and slice-wise PSNR/SSIM over the readout slices."""
    out: dict[str, float] = {}
    for convention in ("volume", "slice"):
        result = score_slices(targets, preds, scales, names, convention)
        out[f"psnr_{convention}"] = result["psnr"].mean
        out[f"ssim_{convention}"] = result["ssim"].mean
    return out


def run_reconstruction(cfg: dict[str, Any], out: Path, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    syn = cfg
    root = out / f"data_{syn['volumes']}x{'x'.join(map(str, syn['shape']))}_{syn['coils']}c"
    paths = sorted(root.glob("*.h5"))
    if len(paths) != syn["volumes"]:
        paths = make_synthetic_volumes(root, syn["volumes"], tuple(syn["shape"]), syn["coils"], seed, syn["snr"])
    start = time.perf_counter()
    data = load_volume_set(paths, 4.0, 16, seed)
    prep_seconds = time.perf_counter() - start
    val, train = slice(0, 1), slice(1, None)
    vt, vs, vn = data.targets[val], data.scales[val], data.names[val]
    entry: dict[str, Any] = {"preprocessing_seconds": prep_seconds}
    entry["zero_filled"] = metrics(vt, data.inputs[val], vs, vn)
    # CS: lambda on the first training volume
    start = time.perf_counter()
    scores = {}
    for lam in cfg["cs_lambdas"]:
        rec = l1_wavelet_volume(data.kspace[1], data.images[1], lam, cfg["cs_max_iter"])
        scores[lam] = metrics(data.targets[1:2], rec[None], data.scales[1:2], data.names[1:2])["psnr_volume"]
    lamda = max(scores, key=scores.__getitem__)
    cs = l1_wavelet_volume(data.kspace[0], data.images[0], lamda, cfg["cs_max_iter"])
    entry["cs_l1_wavelet"] = {**metrics(vt, cs[None], vs, vn), "lambda": lamda, "lambda_scores": scores,
                              "seconds": time.perf_counter() - start}
    k, K, P = cfg["kernel_size"], cfg["blocks"], cfg["num_arrangements"]
    # i.i.d. gates by default, as in the recorded run (docs/benchmarks.md); the layer-wise default is antithetic
    settings = [BlockSettings(kernel_size=k, num_arrangements=P, activation="gated", beta_ratio=cfg["beta_ratio"],
                              gate_sampling=cfg.get("gate_sampling", "gaussian"), tol=cfg["tol"],
                              max_iter=cfg["max_iter"])] * K
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convex = train_layerwise(data.inputs[train], data.targets[train], settings, val_inputs=data.inputs[val],
                                 val_targets=vt, val_scales=vs, val_volumes=vn, patch_size=cfg["patch_size"],
                                 patches_per_slice=cfg["patches_per_volume"], seed=seed, chunk_size=1, progress=True)
    convex_seconds = time.perf_counter() - start
    net = convex.network
    with torch.no_grad():
        convex_pred = net.predict(data.inputs[val], 1)
    entry["layerwise_convex"] = {
        **metrics(vt, convex_pred, vs, vn), "train_seconds": convex_seconds,
        "warnings": sorted({str(w.message)[:160] for w in caught}),
        "blocks": [{key: r[key] for key in ("psnr", "ssim", "duality_gap", "relative_gap", "status", "beta",
                                            "width", "iterations", "seconds", "num_patches", "num_pixels")}
                   for r in convex.records]}
    widths = [2 * P] * K
    e2e = ReconNet.plain(widths, k, seed=seed, spatial_dims=3)
    decay = float(np.mean([r["beta"] / r["num_pixels"] for r in convex.records]))
    start = time.perf_counter()
    history = train_end_to_end(e2e, data.inputs[train], data.targets[train], epochs=cfg["epochs_end_to_end"],
                               batch_size=1, weight_decay=decay, seed=seed, progress=True)
    with torch.no_grad():
        e2e_pred = e2e.predict(data.inputs[val], 1)
    entry["end_to_end"] = {**metrics(vt, e2e_pred, vs, vn), "train_seconds": time.perf_counter() - start,
                           "final_loss": history[-1]["loss"], "weight_decay": decay}
    images = {"target": vt[0], "zero_filled": data.inputs[0], "cs_l1_wavelet": torch.from_numpy(cs),
              "end_to_end": e2e_pred[0], "layerwise_convex": convex_pred[0], "scale": float(vs[0])}
    return entry, images


GATE_CHUNK = 8


def memory_study() -> dict[str, Any]:
    """Meta-device counts for 5-layer 3D networks over the grid; largest batch and cube per budget."""
    rows = []
    for width in MEMORY_GRID["widths"]:
        widths = [width] * 4
        for k in MEMORY_GRID["kernels"]:
            e_at = {}
            b_at = {}
            for size in MEMORY_GRID["sizes"]:
                e1, e2 = (end_to_end_memory(widths, k, size, b, spatial_dims=3).total for b in (1, 2))
                blocks = []
                for i in range(4):
                    c_in = 2 if i == 0 else width
                    b1, b2 = (block_memory(c_in, width, k, size, b, spatial_dims=3).total for b in (1, 2))
                    shape = (1, c_in, size, size, size)
                    blocks.append({"block": i + 1, "batch_1": b1, "batch_2": b2,
                                   "convex_solver_batch_1": convex_solve_bytes(shape, width // 2, k, "gated",
                                                                               device="cuda"),
                                   "convex_solver_gate_chunked_batch_1": convex_solve_bytes(
                                       shape, width // 2, k, "gated", GATE_CHUNK, device="cuda")})
                worst = max(blocks, key=lambda b: b["batch_1"])
                row = {"width": width, "kernel_size": k, "size": size, "end_to_end_batch_1": e1,
                       "end_to_end_batch_2": e2, "blocks": blocks, "worst_block": worst["block"]}
                for gib in BUDGETS_GIB:
                    row[f"end_to_end_max_batch_{gib}gb"] = max_batch(e1, e2, gib * GIB)
                    row[f"layerwise_max_batch_{gib}gb"] = min(max_batch(b["batch_1"], b["batch_2"], gib * GIB)
                                                             for b in blocks)
                rows.append(row)
                e_at[size], b_at[size] = e1, worst["batch_1"]
    largest = largest_cubes()
    return {"method": "meta-device count (convexrecon.analysis.memory.step_memory): params + grads + Adam state + inputs "
                      "+ tensors saved for backward; float32; 3D ReLU networks of 4 k^3 conv layers + 1x1x1 output",
            "budgets_gib": list(BUDGETS_GIB), "grid": MEMORY_GRID, "rows": rows, "largest_cube": largest,
            "end_to_end_does_not_fit_layerwise_does": does_not_fit(rows)}


def does_not_fit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows and budgets where end-to-end does not fit at batch 1 while every layer-wise (Adam) block does."""
    return [{"width": r["width"], "kernel_size": r["kernel_size"], "size": r["size"], "budget_gib": gib,
             "end_to_end_batch_1_gib": r["end_to_end_batch_1"] / GIB,
             "worst_block_batch_1_gib": max(b["batch_1"] for b in r["blocks"]) / GIB,
             "convex_solve_batch_1_gib": max(b["convex_solver_batch_1"] for b in r["blocks"]) / GIB,
             "convex_solve_gate_chunked_batch_1_gib": max(b.get("convex_solver_gate_chunked_batch_1", 0)
                                                          for b in r["blocks"]) / GIB}
            for r in rows for gib in BUDGETS_GIB
            if r[f"end_to_end_max_batch_{gib}gb"] == 0 and r[f"layerwise_max_batch_{gib}gb"] >= 1]


def largest_cubes() -> list[dict[str, Any]]:
    """Largest cube side trainable at batch 1 per budget, by bisection on meta-device counts (each count exact)."""
    results = []
    for width in MEMORY_GRID["widths"]:
        for k in MEMORY_GRID["kernels"]:
            e = lambda s: end_to_end_memory([width] * 4, k, s, 1, spatial_dims=3).total  # noqa: E731
            b = lambda s: max(block_memory(2 if i == 0 else width, width, k, s, 1, spatial_dims=3).total  # noqa: E731
                              for i in range(2))
            row = {"width": width, "kernel_size": k}
            for gib in BUDGETS_GIB:
                for name, count in (("end_to_end", e), ("layerwise", b)):
                    lo, hi = 0, 2048
                    while hi - lo > 1:
                        mid = (lo + hi) // 2
                        lo, hi = (mid, hi) if count(mid) <= gib * GIB else (lo, mid)
                    row[f"{name}_{gib}gb"] = lo
            results.append(row)
    return results


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [f"# 3D volumes (run_volume.py, mode `{cfg['mode']}`)", "", f"Command: `{cfg['command']}`  ",
             f"Machine: {cfg['machine']}; date {cfg['date']}; total wall time {cfg['total_seconds']:.0f} s", ""]
    if "reconstruction" in results:
        rec = results["reconstruction"]
        lines += [f"Data: {cfg['data_description']}", "",
                  "PSNR / SSIM on the validation volume: volume-wise (fastMRI: data range = volume max, PSNR over "
                  "the volume, SSIM mean over its readout slices) and slice-wise (mean over readout slices).", "",
                  "| method | PSNR vol (dB) | SSIM vol | PSNR slice (dB) | SSIM slice | train (s) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for m in ("zero_filled", "cs_l1_wavelet", "end_to_end", "layerwise_convex"):
            e = rec[m]
            secs = e.get("train_seconds")
            lines.append(f"| {m} | {e['psnr_volume']:.2f} | {e['ssim_volume']:.4f} | {e['psnr_slice']:.2f} | "
                         f"{e['ssim_slice']:.4f} | {'—' if secs is None else f'{secs:.0f}'} |")
        lines += ["", "| block | PSNR (slice) | SSIM (slice) | duality gap | relative gap | status | width | iterations |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i, b in enumerate(rec["layerwise_convex"]["blocks"]):
            lines.append(f"| {i + 1} | {b['psnr']:.2f} | {b['ssim']:.4f} | {b['duality_gap']:.3g} | "
                         f"{b['relative_gap']:.2g} | {b['status']} | {b['width']} | {b['iterations']} |")
        lines.append("")
    mem = results["memory"]
    lines += ["## Training memory of 5-layer 3D networks (counted on the meta device, batch 1)", "", mem["method"] + ".",
              "", "| channels | kernel | cube | end-to-end (GiB) | worst block (GiB) | convex solve, worst block (GiB) | "
              "max batch e2e / layer-wise: 12 GiB | 24 GiB | 80 GiB |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in mem["rows"]:
        worst = max(b["batch_1"] for b in r["blocks"])
        solver = max(b["convex_solver_batch_1"] for b in r["blocks"])
        batches = " | ".join(f"{r[f'end_to_end_max_batch_{g}gb']} / {r[f'layerwise_max_batch_{g}gb']}"
                             for g in BUDGETS_GIB)
        lines.append(f"| {r['width']} | {r['kernel_size']}³ | {r['size']}³ | {r['end_to_end_batch_1'] / GIB:.2f} | "
                     f"{worst / GIB:.2f} | {solver / GIB:.2f} | {batches} |")
    lines += ["", "Largest cube side trainable at batch 1 (end-to-end / layer-wise):", "",
              "| channels | kernel | 12 GiB | 24 GiB | 80 GiB |", "| --- | --- | --- | --- | --- |"]
    for r in mem["largest_cube"]:
        lines.append(f"| {r['width']} | {r['kernel_size']}³ | " + " | ".join(
            f"{r[f'end_to_end_{g}gb']}³ / {r[f'layerwise_{g}gb']}³" for g in BUDGETS_GIB) + " |")
    fits = does_not_fit(mem["rows"])
    lines += ["", f"Configurations where end-to-end does not fit at batch 1 but every layer-wise (Adam) block does: "
              f"{len(fits)}. The last two columns are fit_layer's own memory estimate "
              f"(`convexrecon.block.guard.fit_memory_terms` for a CUDA device, which the solve's guard checks) of the gated convex "
              f"solve of the worst block (P = width / 2 gates): all gates at once, and {GATE_CHUNK} gates per chunk "
              f"(`fit_layer(gate_chunk={GATE_CHUNK})`); (over) marks estimates above the budget.", "",
              "| channels | kernel | cube | budget | end-to-end | worst block (Adam) | convex solve | "
              f"convex solve, {GATE_CHUNK} gates per chunk |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    over = lambda value, budget: f"{value:.1f} GiB" + ("" if value <= budget else " (over)")  # noqa: E731
    for f in fits:
        lines.append(f"| {f['width']} | {f['kernel_size']}³ | {f['size']}³ | {f['budget_gib']} GiB | "
                     f"{f['end_to_end_batch_1_gib']:.1f} GiB | {f['worst_block_batch_1_gib']:.1f} GiB | "
                     f"{over(f['convex_solve_batch_1_gib'], f['budget_gib'])} | "
                     f"{over(f['convex_solve_gate_chunked_batch_1_gib'], f['budget_gib'])} |")
    return "\n".join(lines) + "\n"


def plot_examples(images: dict[str, Any], path: Path) -> None:
    """Middle readout slice of the validation volume: target, zero-filled, CS, end-to-end, layer-wise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ("target", "zero_filled", "cs_l1_wavelet", "end_to_end", "layerwise_convex")
    mags = []
    for n in names:
        v = images[n]
        v = v if torch.is_complex(v) else from_channels(v.double())
        mags.append(v.abs().numpy()[v.shape[0] // 2] * images["scale"])
    vmax = mags[0].max()
    fig, axes = plt.subplots(2, len(names), figsize=(3 * len(names), 6))
    for j, (n, m) in enumerate(zip(names, mags)):
        axes[0, j].imshow(m, cmap="gray", vmin=0, vmax=vmax)
        axes[0, j].set_title(n)
        axes[1, j].imshow(np.abs(m - mags[0]), cmap="magma", vmin=0, vmax=0.2 * vmax)
        for a in axes[:, j]:
            a.axis("off")
    fig.suptitle("middle readout slice (top) and |error| x 5 (bottom)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced configuration (< 3 min on 2 cores)")
    parser.add_argument("--memory-only", action="store_true", help="only the memory table")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default benchmarks/results/volume, or volume-quick with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gate-sampling", choices=["gaussian", "antithetic"], default="gaussian",
                        help="gates of the convex blocks (default i.i.d., as in the recorded run)")
    args = parser.parse_args(argv)
    name = "quick" if args.quick else "default"
    cfg = {**CONFIGS[name], "gate_sampling": args.gate_sampling}
    out = args.out or Path("benchmarks/results") / ("volume" if name == "default" else "volume-quick")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    description = (f"synthetic knee-like volumes (convexrecon.data.volume): {cfg['volumes']} volumes "
                   f"{'×'.join(map(str, cfg['shape']))} (readout × ky × kz), {cfg['coils']} coils, SNR {cfg['snr']}, "
                   f"Poisson disc 4× over ky–kz, 16×16 calibration; first volume = validation. Convex: {cfg['blocks']} "
                   f"gated blocks ({cfg['gate_sampling']} gates), {cfg['kernel_size']}³ kernels, "
                   f"P = {cfg['num_arrangements']} (width "
                   f"{2 * cfg['num_arrangements']}), beta = {cfg['beta_ratio']} beta_max, tol {cfg['tol']}, max_iter "
                   f"{cfg['max_iter']}, on {cfg['patches_per_volume']} seeded {cfg['patch_size']}³ cubes per training "
                   f"volume. End-to-end: same architecture, Adam lr 1e-4 halved every 10 epochs, "
                   f"{cfg['epochs_end_to_end']} epochs, batch 1 whole volumes. CS: 3D L1-wavelet, "
                   f"{cfg['cs_max_iter']} iterations, lambda from {cfg['cs_lambdas']} on a training volume")
    if not args.memory_only:
        print(f"run_volume ({name}): {description}", flush=True)
        results["reconstruction"], images = run_reconstruction(cfg, out, args.seed)
        plot_examples(images, out / "examples.png")
    print("memory table (meta device) ...", flush=True)
    results["memory"] = memory_study()
    results["config"] = {**cfg, "mode": "memory-only" if args.memory_only else name,
                         "command": command("run_volume.py", argv), "machine": machine(), "date": utc_now(),
                         "data_description": description, "seed": args.seed,
                         "total_seconds": time.perf_counter() - t0}
    stem = "memory" if args.memory_only else "results"
    write_results(out, results, markdown(results), stem)
    print("\n" + markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
