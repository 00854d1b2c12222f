"""Convex unrolled network with SENSE data consistency against CS, the seed architecture and Adam baselines.

Per mask (Poisson disc 4× and 1D random lines 4×, ``benchmarks/common.MASKS``) on the package's
default synthetic data (``convexrecon.data.make_synthetic``), slice-wise PSNR/SSIM on the
validation volume of: zero-filled, L1-wavelet CS (λ chosen on training slices), the seed
architecture trained by convex layer-wise training (``common.train_convex``), the convex
unrolled network (``train_unrolled``: β ratio and λ_i per stage chosen on the last training
volume), the same unrolled architecture trained end to end by Adam (λ_i learned, initialised at
the convex choices) and layer-wise by Adam (λ_i fixed at the convex choices).

    python benchmarks/run_unrolled.py --quick      # < 3 min on 2 cores
    python benchmarks/run_unrolled.py              # default, < 25 min
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import CONFIGS, MASKS, command, load_split, machine, scores, train_convex, utc_now, write_results  # noqa: E402

from convexrecon.data import make_synthetic  # noqa: E402
from convexrecon.data.classical import choose_lambda, l1_wavelet  # noqa: E402
from convexrecon.data.consistency import measured_data  # noqa: E402
from convexrecon.data.splits import holdout_mask  # noqa: E402
from convexrecon.metrics import validation_metrics  # noqa: E402
from convexrecon.stack.layerwise import BlockSettings  # noqa: E402
from convexrecon.stack.unrolled import (train_unrolled, train_unrolled_end_to_end,  # noqa: E402
                                        train_unrolled_layerwise_adam, unrolled_metrics, unrolled_plain)

METHODS = ("zero_filled", "cs_l1_wavelet", "seed_layerwise_convex", "unrolled_convex", "unrolled_end_to_end",
           "unrolled_layerwise_adam")

UNROLLED: dict[str, dict[str, Any]] = {
    "quick": {"seed_config": "quick", "stages": 3, "kernel_size": 3, "num_arrangements": 4,
              "beta_ratios": [3e-3, 3e-2], "lambdas": [0.01, 0.1, 1.0, 10.0], "tol": 1e-4, "max_iter": 200,
              "gated_method": "interior_point", "cg_iterations": 5, "concat_input": True,
              "epochs_end_to_end": 15, "epochs_layerwise": 10, "halve_every": 10, "lr": 1e-3, "batch_size": 2},
    "default": {"seed_config": "default", "stages": 5, "kernel_size": 5, "num_arrangements": 8,
                "beta_ratios": [1e-3, 1e-2, 1e-1], "lambdas": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0], "tol": 1e-4,
                "max_iter": 500, "gated_method": "interior_point", "cg_iterations": 10, "concat_input": True,
                "epochs_end_to_end": 150, "epochs_layerwise": 100, "halve_every": 50, "lr": 1e-3,
                "batch_size": 2},
}


def run_mask(mask: str, root: Path, cfg: dict[str, Any], ucfg: dict[str, Any], out: Path, seed: int) -> dict:
    split = load_split(root, mask, cfg, seed, out / "cache")
    tr, va = split["train"], split["val"]
    t0 = time.perf_counter()
    train_data, train_problems = measured_data(split["dataset"], tr["pairs"])
    val_data, val_problems = measured_data(split["dataset"], va["pairs"])
    measure_seconds = time.perf_counter() - t0
    entry: dict[str, Any] = {"measurement_seconds": measure_seconds}
    entry["zero_filled"] = {**scores(va["targets"], va["inputs"], va["scales"], va["volumes"]), "train_seconds": 0.0}
    start = time.perf_counter()
    lamda, lambda_scores = choose_lambda(train_problems[: cfg["cs_lambda_slices"]], cfg["cs_lambdas"],
                                         cfg["cs_max_iter"])
    cs = np.stack([l1_wavelet(p, lamda, cfg["cs_max_iter"]) for p in val_problems])
    entry["cs_l1_wavelet"] = {**scores(va["targets"], cs, va["scales"], va["volumes"]), "lambda": lamda,
                              "lambda_scores": lambda_scores, "train_seconds": time.perf_counter() - start}
    data_cfg = {"data": {**split["dataset"].settings(), "root": str(root)}}
    ckpt = out / "checkpoints" / mask
    val = (va["inputs"], va["targets"], va["scales"], va["volumes"])
    # the seed architecture, convex layer-wise (run_knee's configuration of the same mode)
    convex, seconds, _ = train_convex(split, cfg, ckpt / "seed_layerwise_convex", seed, data_cfg)
    m = validation_metrics(convex.network, *val)
    entry["seed_layerwise_convex"] = {"psnr_mean": m["psnr"], "psnr_std": m["psnr_std"], "ssim_mean": m["ssim"],
                                      "ssim_std": m["ssim_std"], "train_seconds": seconds}
    # convex unrolled
    settings = [BlockSettings(kernel_size=ucfg["kernel_size"], num_arrangements=ucfg["num_arrangements"],
                              activation="gated", gate_sampling="antithetic", beta_ratios=tuple(ucfg["beta_ratios"]),
                              tol=ucfg["tol"], max_iter=ucfg["max_iter"])] * ucfg["stages"]
    held = holdout_mask(tr["volumes"], cfg["holdout_volumes"])
    validation = (*val, val_data)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_unrolled(tr["inputs"], tr["targets"], train_data, settings, lambdas=ucfg["lambdas"],
                                holdout=held, validation=validation, concat_input=ucfg["concat_input"],
                                cg_iterations=ucfg["cg_iterations"], seed=seed,
                                solve_options={"gated_method": ucfg["gated_method"]},
                                checkpoint_dir=ckpt / "unrolled_convex", progress=True, config=data_cfg)
    seconds = time.perf_counter() - start
    result.network.save(out / "models" / mask / "unrolled_convex")
    m = unrolled_metrics(result.network, va["targets"], va["scales"], va["volumes"], val_data)
    lambdas = [r["lam"] for r in result.records]
    decays = [r["beta"] / r["num_pixels"] for r in result.records]
    entry["unrolled_convex"] = {
        "psnr_mean": m["psnr"], "psnr_std": m["psnr_std"], "ssim_mean": m["ssim"], "ssim_std": m["ssim_std"],
        "train_seconds": seconds, "warnings": sorted({str(w.message)[:200] for w in caught}),
        "stages": [{k: r.get(k) for k in ("stage", "psnr", "ssim", "lam", "beta", "beta_ratio", "width", "status",
                                          "relative_gap", "duality_gap", "iterations", "seconds", "selection")}
                   for r in result.records]}
    width = 2 * ucfg["num_arrangements"]
    # end to end, λ learned from the convex choices
    start = time.perf_counter()
    e2e = unrolled_plain(ucfg["stages"], width, ucfg["kernel_size"], lambdas, cfg["crop"],
                         concat_input=ucfg["concat_input"], cg_iterations=ucfg["cg_iterations"], seed=seed,
                         learn_lambda=True, config=data_cfg)
    history = train_unrolled_end_to_end(e2e, tr["targets"], train_data, epochs=ucfg["epochs_end_to_end"],
                                        batch_size=ucfg["batch_size"], lr=ucfg["lr"],
                                        halve_every=ucfg["halve_every"], weight_decay=float(np.mean(decays)),
                                        seed=seed, checkpoint_dir=ckpt, progress=True)
    seconds = time.perf_counter() - start
    e2e.save(out / "models" / mask / "unrolled_end_to_end")
    m = unrolled_metrics(e2e, va["targets"], va["scales"], va["volumes"], val_data)
    entry["unrolled_end_to_end"] = {"psnr_mean": m["psnr"], "psnr_std": m["psnr_std"], "ssim_mean": m["ssim"],
                                    "ssim_std": m["ssim_std"], "train_seconds": seconds,
                                    "final_loss": history[-1]["loss"], "weight_decay": float(np.mean(decays)),
                                    "learned_lambdas": [float(s.lam) for s in e2e.stages]}
    # layer-wise Adam, λ fixed at the convex choices
    start = time.perf_counter()
    lw, records = train_unrolled_layerwise_adam(
        tr["targets"], train_data, width, ucfg["kernel_size"], lambdas, concat_input=ucfg["concat_input"],
        cg_iterations=ucfg["cg_iterations"], epochs=ucfg["epochs_layerwise"], batch_size=ucfg["batch_size"],
        lr=ucfg["lr"], halve_every=ucfg["halve_every"], weight_decay=decays, seed=seed, checkpoint_dir=ckpt,
        validation=validation, progress=True)
    seconds = time.perf_counter() - start
    lw.save(out / "models" / mask / "unrolled_layerwise_adam")
    m = unrolled_metrics(lw, va["targets"], va["scales"], va["volumes"], val_data)
    entry["unrolled_layerwise_adam"] = {"psnr_mean": m["psnr"], "psnr_std": m["psnr_std"], "ssim_mean": m["ssim"],
                                        "ssim_std": m["ssim_std"], "train_seconds": seconds,
                                        "stages": [{k: r.get(k) for k in ("stage", "psnr", "ssim")} for r in records]}
    return entry


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [f"# Unrolled network with data consistency (run_unrolled.py, mode `{cfg['mode']}`)", "",
             f"Command: `{cfg['command']}`  ", f"Machine: {cfg['machine']}; date {cfg['date']}; total wall time "
             f"{cfg['total_seconds']:.0f} s", "", f"Data: {cfg['data_description']}", "",
             "Slice-wise PSNR/SSIM (data range = each target slice's maximum), mean ± std over validation slices.", ""]
    for mask, entry in results["masks"].items():
        lines += [f"## Mask `{mask}` (4×)", "", "| method | PSNR (dB) | SSIM | train (s) |", "| --- | --- | --- | --- |"]
        for name in METHODS:
            e = entry[name]
            lines.append(f"| {name} | {e['psnr_mean']:.2f} ± {e['psnr_std']:.2f} | {e['ssim_mean']:.4f} ± "
                         f"{e['ssim_std']:.4f} | {e['train_seconds']:.0f} |")
        lines += ["", "| stage | convex unrolled PSNR | λ | β ratio | width | status | relative gap | "
                  "layer-wise Adam PSNR |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for s, a in zip(entry["unrolled_convex"]["stages"], entry["unrolled_layerwise_adam"]["stages"]):
            lines.append(f"| {s['stage']} | {s['psnr']:.2f} | {s['lam']:g} | {s['beta_ratio']} | {s['width']} | "
                         f"{s['status']} | {s['relative_gap']:.2g} | {a['psnr']:.2f} |")
        u, c, e = (entry[k]["psnr_mean"] for k in ("unrolled_convex", "cs_l1_wavelet", "unrolled_end_to_end"))
        lines += ["", f"Convex unrolled − CS: {u - c:+.2f} dB (target ≥ +1); convex unrolled − end-to-end: "
                  f"{u - e:+.2f} dB (target within 0.3). End-to-end learned λ: "
                  f"{', '.join(f'{v:.3g}' for v in entry['unrolled_end_to_end']['learned_lambdas'])}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny configuration (< 3 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=list(MASKS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    name = "quick" if args.quick else "default"
    ucfg = UNROLLED[name]
    cfg = CONFIGS[ucfg["seed_config"]]
    torch.manual_seed(args.seed)
    out = args.out or Path("benchmarks/results") / ("unrolled" if name == "default" else "unrolled-quick")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    syn = cfg["synthetic"]
    root = out / f"data_{syn['volumes']}x{syn['slices']}_{syn['coils']}c_{syn['shape'][0]}x{syn['shape'][1]}"
    if not any(root.glob("*.h5")):
        make_synthetic(root, volumes=syn["volumes"], slices=syn["slices"], coils=syn["coils"],
                       shape=tuple(syn["shape"]), snr=syn["snr"], seed=args.seed)
    description = (f"synthetic knee-like set (convexrecon.data.make_synthetic): {syn['volumes']} volumes × "
                   f"{syn['slices']} slices, {syn['coils']} coils, k-space {syn['shape'][0]}×{syn['shape'][1]}, SNR "
                   f"{syn['snr']}; crop {cfg['crop']}; first volume by name = validation, last training volume = "
                   f"held out for β/λ choices. Seed architecture: run_knee's `{ucfg['seed_config']}` configuration. "
                   f"Unrolled: {ucfg['stages']} stages, {ucfg['kernel_size']}×{ucfg['kernel_size']} gated blocks, "
                   f"P = {ucfg['num_arrangements']} antithetic gates, input concatenated: {ucfg['concat_input']}, "
                   f"β ratio from {ucfg['beta_ratios']} and λ from {ucfg['lambdas']} per stage, "
                   f"{ucfg['gated_method']} solves to tol {ucfg['tol']}, {ucfg['cg_iterations']} CG iterations per "
                   f"DC; Adam baselines width {2 * ucfg['num_arrangements']} ReLU, lr {ucfg['lr']} halved every "
                   f"{ucfg['halve_every']} epochs, {ucfg['epochs_end_to_end']} / {ucfg['epochs_layerwise']} epochs, "
                   f"batch {ucfg['batch_size']}, weight decay β_i/n_i of the convex stages (end-to-end: their mean)")
    print(f"run_unrolled ({name}): {description}", flush=True)
    masks = {}
    for mask in args.masks:
        print(f"\n=== mask {mask} ===", flush=True)
        masks[mask] = run_mask(mask, root, cfg, ucfg, out, args.seed)
    results = {"config": {**ucfg, "seed_architecture": cfg, "mode": name, "command": command("run_unrolled.py", argv),
                          "machine": machine(), "date": utc_now(), "data_description": description,
                          "seed": args.seed, "total_seconds": time.perf_counter() - t0},
               "masks": masks}
    write_results(out, results, markdown(results))
    print("\n" + markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
