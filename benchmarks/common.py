"""The benchmark scripts' shared helper module: run metadata, results files, scores, figures, and the
knee experiment's configurations and training steps (used by ``run_knee.py`` and ``run_knee_gap.py``), the
measured-data split and the unrolled network's training.

Everything here calls library functions; nothing re-implements them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from convexrecon.block.guard import fit_memory_terms  # noqa: E402
from convexrecon.data import SliceDataset  # noqa: E402
from convexrecon.data.masks import CENTER_FRACTION  # noqa: E402
from convexrecon.mri.sparsity import DEFAULT_WAVE  # noqa: E402
from convexrecon.data.splits import holdout_mask, stack_split  # noqa: E402
from convexrecon.io import atomic_path, write_text  # noqa: E402
from convexrecon.metrics import score_slices  # noqa: E402
from convexrecon.stack.baselines import train_end_to_end  # noqa: E402
from convexrecon.stack.layerwise import BlockSettings, train_layerwise  # noqa: E402
from convexrecon.stack.network import ReconNet  # noqa: E402


# ---- run metadata and results files -------------------------------------------------------------

def utc_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU, core count, torch version and whether CUDA is present."""
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")


def command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run."""
    return " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])])


def write_results(out: Path, results: dict[str, Any], markdown: str, stem: str = "results") -> None:
    """``out/<stem>.json`` and ``out/<stem>.md``, each written atomically."""
    write_text(out / f"{stem}.json", json.dumps(results, indent=2, default=str))
    write_text(out / f"{stem}.md", markdown)


def scores(targets: torch.Tensor, predictions: torch.Tensor | np.ndarray, scales: torch.Tensor,
           volumes: list[str]) -> dict[str, float]:
    """Slice-wise PSNR/SSIM mean ± std at physical scale (:func:`convexrecon.metrics.score_slices`)."""
    result = score_slices(targets, predictions, scales, volumes, "slice")
    return {"psnr_mean": result["psnr"].mean, "psnr_std": result["psnr"].std,
            "ssim_mean": result["ssim"].mean, "ssim_std": result["ssim"].std}


def convex_solve_bytes(input_shape: tuple[int, ...], num_arrangements: int, kernel_size: int, activation: str,
                       gate_chunk: int | None = None, num_outputs: int = 2, device: str = "cpu") -> int:
    """The library's own estimate of one float32 ``fit_layer`` solve's big buffers on ``device``'s kind, summed
    (on ``"cuda"`` without the CPU's unfolded patches; no GPU is needed to count)."""
    return sum(fit_memory_terms(tuple(input_shape), num_outputs, num_arrangements, kernel_size,
                                relu=activation == "relu", chunk_size=None, dtype=torch.float32,
                                gate_chunk=gate_chunk, device=device).values())


# ---- figures ------------------------------------------------------------------------------------

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
    save_figure(fig, path)


# ---- the knee experiment ------------------------------------------------------------------------

MASKS = {"poisson": {"mask": "poisson", "acceleration": 4.0, "calib": 16},
         "lines": {"mask": "lines", "acceleration": 4.0, "center_fraction": CENTER_FRACTION}}

# the unrolled network's further CS images (multiples of the CS start's λ, wavelet): the blocks learn where to trust
# which (docs/design.md §9.1, docs/benchmarks.md twelfth session). With them, the zero-filled image and the db4-shrunk
# estimates add nothing as block inputs (one stage: lines 27.79 / 27.78 dB, Poisson 34.11 / 34.13 dB without / with),
# so every config's stage sees [estimate, constant channel, 4 CS images]: 11 channels, the cost of the former inputs
CS_INPUTS = [[1 / 3, "db4"], [10 / 3, "db4"], [1, "haar"], [1, "sym8"]]

CONFIGS: dict[str, dict[str, Any]] = {
    "quick": {
        "synthetic": {"volumes": 3, "slices": 2, "coils": 6, "shape": [96, 368], "snr": 25.0},
        "crop": 48, "val_volumes": 1, "blocks": 2, "kernel_size": 3, "num_arrangements": 4,
        "activation": "gated", "gate_sampling": "antithetic",
        # half-decades from 1e-4 to 1e-1: at the same ratio the exact-ReLU blocks' cone constraints regularise harder;
        # with [3e-3, 3e-2] they chose the smallest candidate and lost 2 dB to the gated blocks on Poisson, with these
        # they choose 1e-4-3e-4 and gain 1.4 dB over them, and the gated blocks choose 3e-3-1e-1 (docs/benchmarks.md,
        # fourteenth session)
        "beta_ratio": 1e-2, "beta_ratios": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "holdout_volumes": 1,
        # 1000: at 200 the gated block 1 (Poisson) stopped at a relative gap of 1.7e-3 (tol 1e-3)
        "tol": 1e-3, "max_iter": 1000, "solve_chunk_size": None,
        "patch_size": 16, "patches_per_slice": 4,
        "epochs_end_to_end": 6, "epochs_layerwise": 3, "halve_every": 10, "batch_size": 2, "cs_lambda_slices": 1,
        "cs_max_iter": 30, "cs_lambdas": [1e-3, 1e-2],
        "relu": True, "anatomy_volumes": 1,
        "unrolled": {"stages": 3, "activation": "gated",
                     "kernel_size": 3, "num_arrangements": 4, "beta_ratios": [3e-3, 3e-2],
                     "lambdas": [0.01, 0.1, 1.0, 10.0], "tol": 1e-4, "max_iter": 200, "gated_method": "interior_point",
                     "cg_iterations": 5, "concat_input": False, "epochs_end_to_end": 15, "epochs_layerwise": 10,
                     # the stage inputs and CS start of the default (below), CS at this mode's iteration count
                     "bias": True, "shrink": [], "cs_iterations": 30, "cs_lambda": "cs",
                     "cs_inputs": CS_INPUTS,
                     "halve_every": 10, "lr": 1e-3, "batch_size": 2},
    },
    "default": {
        "synthetic": {"volumes": 5, "slices": 4, "coils": 8, "shape": [160, 368], "snr": 25.0},
        "crop": 80, "val_volumes": 1, "blocks": 4, "kernel_size": 5, "num_arrangements": 8,
        "activation": "gated", "gate_sampling": "antithetic",
        # cut from 5 β candidates and 400 / 300 Adam epochs (halved every 100) so that the whole mode, unrolled
        # networks included, stays under 30 minutes on the 2-core machine (the seed part alone took 24 min)
        "beta_ratio": 1e-2, "beta_ratios": [3e-3, 1e-2, 3e-2], "holdout_volumes": 1,
        "tol": 1e-3, "max_iter": 500, "solve_chunk_size": None,
        "patch_size": None, "patches_per_slice": 1,
        "epochs_end_to_end": 200, "epochs_layerwise": 150, "halve_every": 50, "batch_size": 2,
        "cs_lambda_slices": 2, "cs_max_iter": 100, "cs_lambdas": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        # exact-ReLU blocks left out of the default: on whole 80x80 slices the interior point's patch matrix
        # (102,400 x 6,400 float64, ~5 GB) does not fit the 2-core machine and ADMM there takes hours (estimate,
        # docs/benchmarks.md "Exact-ReLU blocks at training scale"); the quick mode has them
        "relu": False, "anatomy_volumes": 1,
        # run_unrolled.py's default had 150 / 100 Adam epochs and 10 CG steps: ~2 min per end-to-end epoch on 16
        # slices on the 2-core machine (extrapolated from the quick run), hours in all; cut to fit the mode
        "unrolled": {"stages": 2, "activation": "gated",
                     "kernel_size": 5, "num_arrangements": 8, "beta_ratios": [1e-3, 1e-2, 1e-1],
                     "lambdas": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "tol": 1e-4, "max_iter": 500,
                     "gated_method": "interior_point", "cg_iterations": 5, "concat_input": False,
                     # the stages refine CS (run_knee's λ and iteration count) and see a constant channel and the CS
                     # images of CS_INPUTS (docs/benchmarks.md, twelfth session); the gain plateaus after 1-2 stages
                     "bias": True, "shrink": [], "cs_iterations": 100, "cs_lambda": "cs",
                     "cs_inputs": CS_INPUTS,
                     "epochs_end_to_end": 10, "epochs_layerwise": 6, "halve_every": 5, "lr": 1e-3, "batch_size": 2},
    },
    "full": {
        "synthetic": {"volumes": 4, "slices": 8, "coils": 15, "shape": [640, 368], "snr": 25.0},
        "crop": 320, "val_volumes": 1, "blocks": 4, "kernel_size": 7, "num_arrangements": 128,
        "activation": "gated", "gate_sampling": "antithetic",
        "beta_ratio": 1e-3, "beta_ratios": [1e-4, 1e-3, 1e-2], "holdout_volumes": 1,
        "tol": 1e-4, "max_iter": None, "solve_chunk_size": 8,
        "patch_size": None, "patches_per_slice": 1,
        "epochs_end_to_end": 40, "epochs_layerwise": 30, "halve_every": 10, "batch_size": 4,
        "cs_lambda_slices": 4, "cs_max_iter": 100, "cs_lambdas": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        "relu": True, "anatomy_volumes": 2,
        "unrolled": {"stages": 5, "activation": "gated",
                     "kernel_size": 7, "num_arrangements": 32, "beta_ratios": [1e-3, 1e-2, 1e-1],
                     "lambdas": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "tol": 1e-4, "max_iter": None,
                     "gated_method": "fista", "cg_iterations": 10, "concat_input": False,
                     "bias": True, "shrink": [], "cs_iterations": 100, "cs_lambda": "cs",
                     "cs_inputs": CS_INPUTS,
                     "epochs_end_to_end": 40, "epochs_layerwise": 30, "halve_every": 10, "lr": 1e-3,
                     "batch_size": 2},
    },
    # one H100/H200 in 8 minutes including data and preprocessing (run_knee.py --config gpu); every reduction from
    # the seed's settings ("full") is listed in REDUCTIONS and printed with the results
    "gpu": {
        "synthetic": {"volumes": 5, "slices": 8, "coils": 15, "shape": [640, 368], "snr": 25.0},
        "crop": 320, "val_volumes": 1, "blocks": 4, "kernel_size": 7, "num_arrangements": 32,
        "activation": "gated", "gate_sampling": "antithetic",
        "beta_ratio": 1e-3, "beta_ratios": [1e-3, 1e-2], "holdout_volumes": 1,
        "tol": 1e-3, "max_iter": 300, "solve_chunk_size": None,
        "patch_size": 64, "patches_per_slice": 4,
        "epochs_end_to_end": 20, "epochs_layerwise": 15, "halve_every": 5, "batch_size": 4,
        "cs_lambda_slices": 1, "cs_max_iter": 30, "cs_lambdas": [3e-3, 1e-2], "cs_val_slices": 4,
        "allow_tf32": True,
        "relu": False, "anatomy_volumes": 1,
        "unrolled": {"stages": 4, "activation": "gated",
                     "kernel_size": 5, "num_arrangements": 16, "beta_ratios": [1e-3, 1e-2],
                     "lambdas": [0.03, 0.3, 3.0], "tol": 1e-3, "max_iter": 300, "gated_method": "fista",
                     "cg_iterations": 5, "concat_input": False, "epochs_end_to_end": 10, "epochs_layerwise": 5,
                     "bias": True, "shrink": [], "cs_iterations": 30, "cs_lambda": "cs",
                     "cs_inputs": CS_INPUTS,
                     "halve_every": 5, "lr": 1e-3, "batch_size": 4},
    },
}

REDUCTIONS = {
    "gpu": [
        "hidden width 64 (P = 32 gated gates) instead of 256 (P = 128): the estimate at 256 is several times the "
        "8-minute budget (docs/benchmarks.md: one 320x320 slice, C_in 256, k 7, P 64 takes ~10 s per solve with TF32)",
        "convex blocks fit on 4 seeded 64x64 windows per training slice instead of whole slices",
        "convex tolerance 1e-3 (max 300 iterations) instead of 1e-4",
        "beta ratio candidates (1e-3, 1e-2) instead of (1e-4, 1e-3, 1e-2)",
        "Adam: 20 end-to-end epochs (lr halved every 5) and 15 per layer-wise block instead of 40 / 30 (every 10)",
        "L1-wavelet CS: 30 iterations, lambda from (3e-3, 1e-2) on 1 training slice, scored on the first 4 "
        "validation slices",
        "TF32 on for every method alike (convex solves, feature computation, both Adam baselines)",
        "40 synthetic slices (5 volumes x 8: 1 validation volume, 4 training volumes = 32 slices, the last held out "
        "for beta selection) instead of 32 training + real data",
        "exact-ReLU blocks (layerwise_convex_relu) left out: an interior-point/ADMM solve at this size does not fit "
        "the budget; the unrolled network reduced to 4 stages of 5x5 gated blocks, P = 16, 5 CG steps, 10 / 5 Adam "
        "epochs (not measured on a GPU yet)",
    ],
}


def estimate_seconds(cfg: dict[str, Any], device: str, masks: int = 2) -> dict[str, float]:
    """A rough wall-time estimate of run_knee with ``cfg`` on ``device`` (seconds per phase), from the timings in
    docs/benchmarks.md: synthesis ~4.8 s per full-size slice per core; ESPIRiT + SENSE ~10 s per full-size 15-coil
    slice on 2 CPU cores (torch ESPIRiT) and an assumed ~1 s on one H100/H200; L1-wavelet ~0.29 s per iteration and
    slice on one core; a gated solve ~10 s per (320x320 slice, C_in 256, P 64) at tol 1e-4 with TF32 on an H100 (x6
    without TF32), scaled by pixels x C_in x P, assumed x0.5 at tol 1e-3, x200 on a CPU; Adam at ~2e13 useful flop/s on a GPU (4e10 on 2 CPU cores)."""
    syn = cfg["synthetic"]
    n = syn["volumes"] * syn["slices"]
    scale = syn["coils"] * syn["shape"][0] * syn["shape"][1] / (15 * 640 * 368)
    gpu = device.startswith("cuda")
    cores = os.cpu_count() or 1
    out = {"synthetic data": 4.8 * n * scale / min(cores, syn["volumes"])}
    out["preprocessing (both masks)"] = masks * n * scale * (1.0 if gpu else 10.0)
    val = syn["slices"] * cfg["val_volumes"]
    cs_slices = cfg["cs_lambda_slices"] * len(cfg["cs_lambdas"]) + min(val, cfg.get("cs_val_slices", val))
    out["L1-wavelet CS (both masks)"] = masks * cs_slices * scale * (0.29 * cfg["cs_max_iter"] + 10.0) / max(1, min(cores, cs_slices))
    train = n - val
    side = cfg["patch_size"] or cfg["crop"]
    pixels = train * cfg["patches_per_slice"] * side ** 2 if cfg["patch_size"] else train * cfg["crop"] ** 2
    width = hidden_width(cfg)
    solves = len(cfg.get("beta_ratios") or [0]) + 1
    per_solve = [10.0 * pixels / 320 ** 2 * (2 if i == 0 else width) / 256 * cfg["num_arrangements"] / 64
                 * (1.0 if cfg["tol"] < 1e-3 else 0.5) * (1.0 if cfg.get("allow_tf32") else 6.0)
                 for i in range(cfg["blocks"])]
    out["convex layer-wise (both masks)"] = masks * solves * sum(per_solve) * (1.0 if gpu else 200.0)
    k = cfg["kernel_size"]
    flops = 6 * cfg["crop"] ** 2 * (2 * width * k * k + (cfg["blocks"] - 1) * width * width * k * k + 2 * width)
    rate = (2e13 if cfg.get("allow_tf32") else 1e13) if gpu else 4e10
    e2e_runs = 1 + (3 * (train - syn["slices"]) / train if cfg.get("beta_ratios") else 0)
    out["end-to-end Adam (both masks)"] = masks * e2e_runs * cfg["epochs_end_to_end"] * train * flops / rate
    out["layer-wise Adam (both masks)"] = masks * cfg["epochs_layerwise"] * train * flops / rate * 1.5
    u = cfg.get("unrolled")
    if u:  # ~7e-8 s per (slice, stage, CG step, coil pixel) and Adam epoch on 2 CPU cores (quick run, 2026-11-28)
        coil_pixels = syn["coils"] * syn["shape"][0] * syn["shape"][1]
        out["unrolled networks (both masks)"] = (masks * 7e-8 * train * u["stages"] * u["cg_iterations"] * coil_pixels
                                                 * (u["epochs_end_to_end"] + u["epochs_layerwise"])
                                                 * (0.05 if gpu else 1.0))
        # the CS start and CS inputs: computed once for the training slices, the validation slices and the held-out
        # anatomy (about as many slices as validation), shared by the 3 methods; ~4e-8 s per (slice, FISTA step,
        # coil pixel, CS image) on one core (twelfth session)
        scored = train + 2 * val
        out["unrolled networks (both masks)"] += (masks * 4e-8 * u["cs_iterations"] * coil_pixels * scored
                                                  * (1 + len(u.get("cs_inputs", []))) * (0.05 if gpu else 1.0))
    if cfg.get("relu"):  # the exact-ReLU solves: ~20x a gated one on the quick run
        out["exact-ReLU layer-wise (both masks)"] = 20 * out["convex layer-wise (both masks)"]
    return out


def synthetic_parallel(root: Path, workers: int, **settings: Any) -> list[Path]:
    """:func:`convexrecon.data.make_synthetic`'s files, one volume per process (``make_synthetic(only=[v])``:
    each volume depends on its index alone, so the files are those of one call)."""
    from concurrent.futures import ProcessPoolExecutor

    from convexrecon.data import make_synthetic

    volumes = settings.pop("volumes")
    if workers <= 1 or volumes <= 1:
        return make_synthetic(root, volumes=volumes, **settings)
    root.mkdir(parents=True, exist_ok=True)
    import multiprocessing  # spawn: forked children of a process that ran torch's thread pool can deadlock
    with ProcessPoolExecutor(max_workers=min(workers, volumes), mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(make_synthetic, root, volumes=volumes, only=[v], **settings) for v in range(volumes)]
        return [job.result()[0] for job in jobs]


def load_split(root: Path, mask: str, cfg: dict[str, Any], seed: int, cache: Path,
               device: Any = None) -> dict[str, Any]:
    """Preprocess (cached, ESPIRiT and SENSE on ``device``) and stack the slices; validation = the first volumes."""
    dataset = SliceDataset(root, crop=cfg["crop"], seed=seed, cache_dir=cache, device=device, **MASKS[mask])
    try:
        train, val = stack_split(dataset, cfg["val_volumes"])
    except ValueError as error:
        raise SystemExit(f"run_knee: error: {error}") from None
    return {"dataset": dataset, "train": train._asdict(), "val": val._asdict()}


def beta_text(cfg: dict[str, Any]) -> str:
    """How β is set, for the run's description."""
    if cfg.get("beta_ratios") is None:
        return f"beta = {cfg['beta_ratio']} beta_max"
    return (f"beta per block chosen from {list(cfg['beta_ratios'])} x beta_max by the squared error on the last "
            f"{cfg['holdout_volumes']} training volume(s) (held out from the fit; the validation volume is not "
            f"used), then re-solved on all training slices")


def hidden_width(cfg: dict[str, Any]) -> int:
    """Channels of every hidden layer: the most neurons a convex block of ``cfg`` can have."""
    return (2 if cfg["activation"] == "gated" else 4) * cfg["num_arrangements"]


def train_convex(split: dict[str, Any], cfg: dict[str, Any], ckpt: Path, seed: int,
                 data_cfg: dict[str, Any], device: Any = None) -> tuple[Any, float, list]:
    """Convex layer-wise training on ``split``; returns the result, solve seconds and caught warnings."""
    tr, va = split["train"], split["val"]
    ratios = cfg.get("beta_ratios")
    settings = [BlockSettings(kernel_size=cfg["kernel_size"], num_arrangements=cfg["num_arrangements"],
                              activation=cfg["activation"], beta_ratio=cfg["beta_ratio"],
                              beta_ratios=None if ratios is None else tuple(ratios),
                              gate_sampling=cfg.get("gate_sampling", "gaussian"), tol=cfg["tol"],
                              max_iter=cfg["max_iter"])] * cfg["blocks"]
    holdout = None if ratios is None else holdout_mask(tr["volumes"], cfg["holdout_volumes"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convex = train_layerwise(tr["inputs"], tr["targets"], settings, val_inputs=va["inputs"],
                                 val_targets=va["targets"], val_scales=va["scales"], val_volumes=va["volumes"],
                                 patch_size=cfg["patch_size"], patches_per_slice=cfg["patches_per_slice"],
                                 seed=seed, chunk_size=4, solve_chunk_size=cfg["solve_chunk_size"],
                                 checkpoint_dir=ckpt, progress=True, config=data_cfg, holdout=holdout,
                                 device=device, allow_tf32=bool(cfg.get("allow_tf32", False)))
    return convex, sum(r["seconds"] for r in convex.records), list(caught)


def train_end_to_end_baseline(split: dict[str, Any], cfg: dict[str, Any], decays: list[float], ckpt: Path,
                              seed: int, data_cfg: dict[str, Any],
                              device: Any = None) -> tuple[ReconNet, float, dict[str, Any] | None]:
    """The same architecture trained end to end by Adam.

    Weight decay ``d`` = mean of the convex blocks' ``beta_i / n_i`` (the same objective
    per pixel). When the convex blocks choose β on a held-out volume (``beta_ratios``),
    end-to-end gets the same chance: it is trained on the fit volumes with weight decay
    0, ``d`` and ``10 d``, the one with the smallest squared error on the held-out volume
    is kept, and the network is trained again on all training slices with it.
    Returns the network, the wall time (selection included) and the selection record.
    """
    tr = split["train"]
    start = time.perf_counter()

    def train(inputs: torch.Tensor, targets: torch.Tensor, decay: float, where: Path) -> ReconNet:
        net = ReconNet.plain([hidden_width(cfg)] * cfg["blocks"], cfg["kernel_size"], seed=seed, config=data_cfg)
        train_end_to_end(net, inputs, targets, epochs=cfg["epochs_end_to_end"], halve_every=cfg["halve_every"],
                         batch_size=cfg["batch_size"], weight_decay=decay, seed=seed, checkpoint_dir=where,
                         progress=True, device=device, allow_tf32=bool(cfg.get("allow_tf32", False)))
        return net

    decay, selection = float(np.mean(decays)), None
    if cfg.get("beta_ratios") is not None:
        held = holdout_mask(tr["volumes"], cfg["holdout_volumes"])
        candidates = [0.0, decay, 10 * decay]
        errors = []
        for j, candidate in enumerate(candidates):
            net = train(tr["inputs"][~held], tr["targets"][~held], candidate, ckpt / f"end_to_end_select_{j}")
            with torch.no_grad():
                held_inputs = tr["inputs"][held].to(next(net.parameters()).device)
                errors.append(float((net.predict(held_inputs).cpu() - tr["targets"][held]).double().pow(2).sum()))
        best = int(np.argmin(errors))
        selection = {"weight_decays": candidates, "holdout_sq_error": errors, "chosen": candidates[best],
                     "fit_slices": int((~held).sum()), "holdout_slices": int(held.sum())}
        decay = candidates[best]
    net = train(tr["inputs"], tr["targets"], decay, ckpt)
    return net, time.perf_counter() - start, selection


def convex_solver_bytes(records: list[dict[str, Any]], cfg: dict[str, Any]) -> int:
    """The library's memory estimate (:func:`convexrecon.block.guard.fit_memory_terms`) of the largest convex
    block solve of a run, from its block records."""
    side = cfg["patch_size"] or cfg["crop"]
    return max(convex_solve_bytes((r["num_patches"], 2 if i == 0 else records[i - 1]["width"], side, side),
                                  cfg["num_arrangements"], cfg["kernel_size"], cfg["activation"])
               for i, r in enumerate(records))


# ---- measured data: one ESPIRiT run per slice ---------------------------------------------------

def measured_slices(root: Path, mask: str, cfg: dict[str, Any], seed: int, cache: Path) -> dict[str, Any]:
    """Every slice of ``root`` as :func:`convexrecon.mri.classical.slice_problem` builds it (one ESPIRiT run per
    slice, full-grid maps; :func:`convexrecon.mri.consistency.measured_data`), cached under ``cache``.

    Returns the (lazy, uncached) :class:`SliceDataset` of the mask settings, the problems in the dataset's index
    order, and their stacked network inputs/targets: the zero-filled input and target of a problem are those the
    dataset's preprocessing gives, so the CNNs, the unrolled networks and L1-wavelet CS all read one
    preprocessing, and no slice is run through ESPIRiT twice.
    """
    import pickle

    from convexrecon.mri.consistency import measured_data

    dataset = SliceDataset(root, crop=cfg["crop"], seed=seed, cache_dir=None, progress=False, **MASKS[mask])
    path = Path(cache) / f"measured_{Path(root).name}_{dataset.settings_key()}.pkl"
    pairs = [(p, s) for p, s in dataset.index]
    problems = None
    if path.is_file():
        try:
            stored = pickle.loads(path.read_bytes())
            if stored["pairs"] == [(str(p), s) for p, s in pairs]:
                problems = stored["problems"]
        except (OSError, EOFError, KeyError, pickle.UnpicklingError):
            problems = None
    if problems is None:
        _, problems = measured_data(dataset, pairs)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(pickle.dumps({"pairs": [(str(p), s) for p, s in pairs], "problems": problems}))
    return {"dataset": dataset, "pairs": pairs, "problems": problems}


def _stack_problems(problems: list[Any], pairs: list[Any]) -> dict[str, Any]:
    from convexrecon.mri.consistency import measured_from_problems
    from convexrecon.mri.sense import complex_to_channels

    images = lambda name: torch.stack([complex_to_channels(torch.from_numpy(np.asarray(getattr(p, name))))  # noqa: E731
                                       .float() for p in problems])
    return {"inputs": images("zero_filled"), "targets": images("target"),
            "scales": torch.tensor([float(p.scale) for p in problems], dtype=torch.float64),
            "volumes": [p.fname for p in problems], "pairs": list(pairs), "problems": list(problems),
            "data": measured_from_problems(problems)}


def split_under(out: Path, cfg: dict[str, Any], mask: str, seed: int) -> dict[str, Any]:
    """run_knee's synthetic set of ``cfg`` under ``out/data`` (generated once) and its preprocessed ``mask`` split
    (:func:`measured_split`, cached under ``out/cache``): the data of the ablation and probe scripts."""
    out.mkdir(parents=True, exist_ok=True)
    syn = cfg["synthetic"]
    root = out / "data"
    files = sorted(root.glob("*.h5"))
    if not files:
        synthetic_parallel(root, os.cpu_count() or 1, volumes=syn["volumes"], slices=syn["slices"],
                           coils=syn["coils"], shape=tuple(syn["shape"]), snr=syn["snr"], seed=seed)
    elif len(files) != syn["volumes"]:
        raise SystemExit(f"error: {root} holds {len(files)} volumes; this run needs {syn['volumes']}. "
                         "Use another --out (the data are generated there once).")
    return measured_split(root, mask, cfg, seed, out / "cache")


def measured_split(root: Path, mask: str, cfg: dict[str, Any], seed: int, cache: Path) -> dict[str, Any]:
    """:func:`load_split`'s split (validation = the first ``val_volumes`` volumes by name) built from
    :func:`measured_slices`: each part also holds its ``problems`` (for CS) and ``data`` (``MeasuredData``, for the
    unrolled networks)."""
    got = measured_slices(root, mask, cfg, seed, cache)
    files = sorted({p for p, _ in got["pairs"]})
    if len(files) < cfg["val_volumes"] + 1:
        raise SystemExit(f"run_knee: error: The data must hold more than 'val_volumes' = {cfg['val_volumes']} "
                         f"volumes (training needs at least one). Got {len(files)}.")
    val_files = set(files[:cfg["val_volumes"]])
    parts = {}
    for name, keep in (("train", lambda p: p not in val_files), ("val", lambda p: p in val_files)):
        index = [i for i, (p, _) in enumerate(got["pairs"]) if keep(p)]
        parts[name] = _stack_problems([got["problems"][i] for i in index], [got["pairs"][i] for i in index])
    return {"dataset": got["dataset"], **parts}


def anatomy_slices(root: Path, mask: str, cfg: dict[str, Any], seed: int, cache: Path) -> dict[str, Any]:
    """Every slice of ``root`` (e.g. the held-out brain family) stacked like one part of :func:`measured_split`."""
    got = measured_slices(root, mask, cfg, seed, cache)
    return _stack_problems(got["problems"], got["pairs"])


# ---- the unrolled network with data consistency --------------------------------------------------

def unrolled_entry(result: dict[str, float], seconds: float, **extra: Any) -> dict[str, Any]:
    return {"psnr_mean": result["psnr"], "psnr_std": result["psnr_std"], "ssim_mean": result["ssim"],
            "ssim_std": result["ssim_std"], "train_seconds": seconds, "peak_memory_bytes": 0, **extra}


def ensemble_entry(start: torch.Tensor, part: dict[str, Any], crop: int) -> dict[str, Any]:
    """Scores of the plain average of an unrolled network's CS images on ``part`` (``start``: its
    :func:`~convexrecon.stack.unrolled.initial_estimates`, the CS start and the CS inputs): what the CS
    ensemble gives without any learning, the reference for what the learned stages add."""
    from convexrecon.mri.consistency import crop_center
    from convexrecon.mri.sense import complex_to_channels

    mean = complex_to_channels(crop_center(start.mean(1), crop)).float().cpu()
    return {**scores(part["targets"], mean, part["scales"], part["volumes"]), "train_seconds": 0.0,
            "peak_memory_bytes": 0, "cs_images": int(start.shape[1])}


def unrolled_options(u: dict[str, Any], cs_lambda: float | None) -> dict[str, Any]:
    """The unrolled architecture's block inputs and CS start from ``cfg["unrolled"]``; ``"cs_lambda": "cs"`` means
    the CS baseline's λ (``cs_lambda``, chosen on training slices); ``"cs_inputs"`` are the further CS images,
    each a multiple of the start's λ or a ``[multiple, wavelet]`` pair."""
    lam = u["cs_lambda"]
    if u["cs_iterations"] and lam == "cs":
        if cs_lambda is None:
            raise ValueError("cfg['unrolled']['cs_lambda'] = 'cs' needs the CS baseline's λ. Got None.")
        lam = cs_lambda
    inputs = [(f, DEFAULT_WAVE) if isinstance(f, (int, float)) else tuple(f) for f in u.get("cs_inputs", [])]
    return {"bias": u["bias"], "shrink": u["shrink"], "cs_iterations": u["cs_iterations"],
            "cs_lambda": float(lam) if u["cs_iterations"] else 0.0,
            "cs_inputs": tuple((float(f) * float(lam), w) for f, w in inputs) if u["cs_iterations"] else ()}


def train_unrolled_methods(split: dict[str, Any], cfg: dict[str, Any], ckpt: Path, models: Path, seed: int,
                           data_cfg: dict[str, Any], device: Any = None,
                           cs_lambda: float | None = None) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The convex unrolled network (:func:`convexrecon.stack.unrolled.train_unrolled`: β ratio and λ_i per stage
    chosen on the last training volume(s)) and the same architecture by Adam, end to end (λ_i learned from the
    convex choices) and layer-wise (λ_i fixed at them), on ``split`` (:func:`measured_split`), with
    ``cfg["unrolled"]``'s settings (``cs_lambda``: the CS baseline's λ, for a CS start), on ``device`` (TF32 as ``cfg["allow_tf32"]``, as for the seed's methods). Returns the ``results.json`` entries (validation PSNR/SSIM, per-stage
    certificates), the trained networks, by method name, and the validation slices' CS start
    (:func:`~convexrecon.stack.unrolled.initial_estimates`, None without one): the three methods share one
    architecture, so their CS start and CS inputs are computed once per part of the split."""
    from convexrecon.stack.unrolled import (UnrolledNet, initial_estimates, train_unrolled,
                                            train_unrolled_end_to_end, train_unrolled_layerwise_adam,
                                            unrolled_metrics, unrolled_plain)

    u = cfg["unrolled"]
    options = unrolled_options(u, cs_lambda)
    tr, va = split["train"], split["val"]
    # the architecture without stages: its CS start, shared by the three methods
    template = UnrolledNet([], cfg["crop"], u["concat_input"], **options).to(device or tr["data"].kspace.device)
    starts = {"initial": initial_estimates(template, tr["data"], u["batch_size"]),
              "validation_initial": initial_estimates(template, va["data"], u["batch_size"])}
    on = {"device": device, "allow_tf32": bool(cfg.get("allow_tf32", False)), **starts}
    val = (va["inputs"], va["targets"], va["scales"], va["volumes"], va["data"])
    score = lambda net: unrolled_metrics(net, va["targets"], va["scales"], va["volumes"], va["data"],  # noqa: E731
                                         initial=starts["validation_initial"])
    settings = [BlockSettings(kernel_size=u["kernel_size"], num_arrangements=u["num_arrangements"],
                              activation=u["activation"], gate_sampling="antithetic",
                              beta_ratios=tuple(u["beta_ratios"]), tol=u["tol"], max_iter=u["max_iter"])] * u["stages"]
    held = holdout_mask(tr["volumes"], cfg["holdout_volumes"])
    entries: dict[str, Any] = {}
    if options["cs_inputs"]:
        entries["cs_ensemble_mean"] = ensemble_entry(starts["validation_initial"], va, cfg["crop"])
    nets: dict[str, Any] = {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_unrolled(tr["inputs"], tr["targets"], tr["data"], settings, lambdas=u["lambdas"],
                                holdout=held, validation=val, concat_input=u["concat_input"], **options,
                                cg_iterations=u["cg_iterations"], seed=seed,
                                solve_options={"gated_method": u["gated_method"]},
                                checkpoint_dir=ckpt / "unrolled_convex", progress=True, config=data_cfg, **on)
    seconds = time.perf_counter() - start
    result.network.save(models / "unrolled_convex")
    lambdas = [r["lam"] for r in result.records]
    decays = [r["beta"] / r["num_pixels"] for r in result.records]
    entries["unrolled_convex"] = unrolled_entry(
        score(result.network), seconds, warnings=sorted({str(w.message)[:200] for w in caught}),
        architecture={**options, "shrink": list(options["shrink"]), "cs_inputs": [list(c) for c in options["cs_inputs"]],
                      "stages": u["stages"], "concat_input": u["concat_input"], "activation": u["activation"]},
        stages=[{**{k: r.get(k) for k in ("stage", "psnr", "ssim", "lam", "beta", "beta_ratio", "width", "status",
                                          "relative_gap", "duality_gap", "iterations", "seconds", "selection")},
                 "solver": (r.get("report") or {}).get("solver")} for r in result.records])
    nets["unrolled_convex"] = result.network
    # the convex block's largest width: one neuron per group, P C_out gated, 2 P C_out exact (C_out = 2)
    width = (4 if u["activation"] == "relu" else 2) * u["num_arrangements"]
    start = time.perf_counter()
    e2e = unrolled_plain(u["stages"], width, u["kernel_size"], lambdas, cfg["crop"], concat_input=u["concat_input"],
                         **options,
                         cg_iterations=u["cg_iterations"], seed=seed, learn_lambda=True, config=data_cfg)
    history = train_unrolled_end_to_end(e2e, tr["targets"], tr["data"], epochs=u["epochs_end_to_end"],
                                        batch_size=u["batch_size"], lr=u["lr"], halve_every=u["halve_every"],
                                        weight_decay=float(np.mean(decays)), seed=seed,
                                        checkpoint_dir=ckpt / "unrolled_end_to_end", progress=True, **on)
    seconds = time.perf_counter() - start
    e2e.save(models / "unrolled_end_to_end")
    entries["unrolled_end_to_end"] = unrolled_entry(
        score(e2e), seconds, final_loss=history[-1]["loss"] if history else None,
        weight_decay=float(np.mean(decays)), learned_lambdas=[float(s.lam.detach()) for s in e2e.stages])
    nets["unrolled_end_to_end"] = e2e
    start = time.perf_counter()
    lw, records = train_unrolled_layerwise_adam(
        tr["targets"], tr["data"], width, u["kernel_size"], lambdas, concat_input=u["concat_input"],
        **options,
        cg_iterations=u["cg_iterations"], epochs=u["epochs_layerwise"], batch_size=u["batch_size"], lr=u["lr"],
        halve_every=u["halve_every"], weight_decay=decays, seed=seed,
        checkpoint_dir=ckpt / "unrolled_layerwise_adam", validation=val, progress=True, **on)
    seconds = time.perf_counter() - start
    lw.save(models / "unrolled_layerwise_adam")
    entries["unrolled_layerwise_adam"] = unrolled_entry(
        score(lw), seconds, stages=[{k: r.get(k) for k in ("stage", "psnr", "ssim")} for r in records])
    nets["unrolled_layerwise_adam"] = lw
    return entries, nets, starts["validation_initial"]
