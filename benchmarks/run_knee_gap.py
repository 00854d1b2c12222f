"""How the convex layer-wise − end-to-end PSNR gap moves with training-set size and width.

run_knee.py's default trains on 16 synthetic slices (4 volumes) with P = 8 gates
per block (hidden width 16). This study keeps everything else of that
configuration (blocks, kernels, β ratio, epochs, the same validation volume) and
varies the number of training volumes and/or P (the end-to-end network gets the
same width 2P), to test where the gap comes from: over-fitting of a small
training set (then the gap shrinks with more slices) or the fitting capacity of
blocks with P fixed random gates (then the convex network's *training* PSNR
stays below end-to-end's). Only the two methods being compared are trained.

    OMP_NUM_THREADS=1 python -m benchmarks.run_knee_gap --train-volumes 4 8 16
    OMP_NUM_THREADS=1 python -m benchmarks.run_knee_gap --train-volumes 4 --arrangements 8 16 --masks poisson

Writes ``results.json`` and ``results.md`` under ``--out`` (default
``benchmarks/results/knee-gap``); checkpoints under ``--out/checkpoints`` (a
killed run restarted with the same command resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

from benchmarks.kit.configs import CONFIGS, MASKS, KneeConfig, beta_text, hidden_width  # noqa: E402
from benchmarks.kit.data import load_split  # noqa: E402
from benchmarks.kit.methods import scores, train_convex, train_end_to_end_baseline  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402
from convexrecon.data import make_synthetic  # noqa: E402
from convexrecon.metrics import validation_metrics  # noqa: E402


def subset(root: Path, files: list[Path], target: Path) -> Path:
    """A directory of links to ``files`` (the validation volume and the first training volumes)."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.h5"):
        if old.name not in {f.name for f in files}:
            old.unlink()
    for f in files:
        link = target / f.name
        if link.is_symlink() and link.resolve() != f.resolve():  # dangling, or the study directory was moved
            link.unlink()
        if not link.exists():
            link.symlink_to(f.resolve())
    return target


def run_size(root: Path, mask: str, cfg: KneeConfig, out: Path, seed: int) -> dict[str, Any]:
    split = load_split(root, mask, cfg, seed, out / "cache")
    va = split["val"]
    val = (va["inputs"], va["targets"], va["scales"], va["volumes"])
    data_cfg = {"data": {**split["dataset"].settings(), "root": str(root)}}
    width = "" if cfg.num_arrangements == CONFIGS["default"].num_arrangements else f"_P{cfg.num_arrangements}"
    variant = f"_{cfg.gate_sampling}" + ("_select" if cfg.beta_ratios else "")
    ckpt = out / "checkpoints" / (root.name + width + variant) / mask
    convex, convex_seconds, _ = train_convex(split, cfg, ckpt / "layerwise_convex", seed, data_cfg)
    decays = [r["beta"] / r["num_pixels"] for r in convex.records]
    net, e2e_seconds, _ = train_end_to_end_baseline(split, cfg, decays, ckpt, seed, data_cfg)
    e2e = validation_metrics(net, *val)
    final = validation_metrics(convex.network, *val)
    train_metrics = validation_metrics(convex.network, split["train"]["inputs"], split["train"]["targets"],
                                       split["train"]["scales"], split["train"]["volumes"])
    train_e2e = validation_metrics(net, split["train"]["inputs"], split["train"]["targets"],
                                   split["train"]["scales"], split["train"]["volumes"])
    return {
        "train_slices": int(split["train"]["inputs"].shape[0]), "num_arrangements": cfg.num_arrangements,
        "width": hidden_width(cfg), "convex_widths": [r["width"] for r in convex.records],
        "zero_filled_psnr": scores(va["targets"], va["inputs"], va["scales"], va["volumes"])["psnr_mean"],
        "convex_block_psnr": [r["psnr"] for r in convex.records],
        "convex_status": [r["status"] for r in convex.records],
        "convex_psnr": final["psnr"], "convex_ssim": final["ssim"],
        "end_to_end_psnr": e2e["psnr"], "end_to_end_ssim": e2e["ssim"],
        "convex_train_psnr": train_metrics["psnr"], "end_to_end_train_psnr": train_e2e["psnr"],
        "gap_db": final["psnr"] - e2e["psnr"],
        "convex_seconds": convex_seconds, "end_to_end_seconds": e2e_seconds,
    }


def markdown(results: dict[str, Any], config: KneeConfig) -> str:
    """``results.md``: one table per mask (``config``: the study's configuration, for how β is set)."""
    cfg = results["config"]
    lines = ["# Convex layer-wise − end-to-end gap vs training-set size and width (run_knee_gap.py)", "",
             f"Command: `{cfg['command']}`  ", f"Machine: {cfg['machine']}; date {cfg['date']}; "
             f"total wall time {cfg['total_seconds']:.0f} s", "",
             f"run_knee.py's default configuration ({cfg['blocks']} blocks, {cfg['kernel_size']}×"
             f"{cfg['kernel_size']}, {cfg['activation']}, {cfg.get('gate_sampling', 'gaussian')} gates, "
             f"{beta_text(config)}, end-to-end "
             f"{cfg['epochs_end_to_end']} epochs), same validation volume; only the number of training volumes "
             f"({cfg['synthetic']['slices']} slices each) and P (gates per block; both networks have hidden width "
             "2P) change. PSNR in dB, mean over the validation slices; 'train' = the same metric on the training "
             "slices.", ""]
    for mask, rows in results["masks"].items():
        lines += [f"## Mask `{mask}`", "",
                  "| train slices | P | ZF | convex after block 1..K | convex | end-to-end | convex − e2e | "
                  "convex train | e2e train | solve (s) | e2e (s) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            blocks = " / ".join(f"{p:.2f}" for p in r["convex_block_psnr"])
            lines.append(f"| {r['train_slices']} | {r.get('num_arrangements', 8)} | {r['zero_filled_psnr']:.2f} | {blocks} | {r['convex_psnr']:.2f} | "
                         f"{r['end_to_end_psnr']:.2f} | {r['gap_db']:+.2f} | {r['convex_train_psnr']:.2f} | "
                         f"{r['end_to_end_train_psnr']:.2f} | {r['convex_seconds']:.0f} | "
                         f"{r['end_to_end_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-volumes", type=int, nargs="+", default=[4, 8, 16],
                        help="numbers of training volumes to compare")
    parser.add_argument("--arrangements", type=int, nargs="+", default=[CONFIGS["default"].num_arrangements],
                        help="gates per block P to compare (hidden width 2P in both networks)")
    parser.add_argument("--gate-sampling", choices=["antithetic", "gaussian"], default=None,
                        help="gates of the convex blocks (default: run_knee.py's default configuration)")
    parser.add_argument("--fixed-beta", action="store_true",
                        help="use the configuration's fixed beta_ratio instead of choosing beta per block")
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=list(MASKS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/knee-gap"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("train_volumes", "arrangements"):
        if any(n < 1 for n in getattr(args, name)):
            parser.error(f"argument --{name.replace('_', '-')}: expected integers >= 1. Got {getattr(args, name)}.")
    cfg = CONFIGS["default"]
    if args.gate_sampling is not None:
        cfg = dataclasses.replace(cfg, gate_sampling=args.gate_sampling)
    if args.fixed_beta:
        cfg = dataclasses.replace(cfg, beta_ratios=None)
    syn = cfg.synthetic
    largest = max(args.train_volumes) + cfg.val_volumes
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / f"data_{largest}x{syn.slices}_{syn.coils}c_{syn.shape[0]}x{syn.shape[1]}"
    files = sorted(root.glob("*.h5"))
    if len(files) < largest:
        print(f"writing {largest} synthetic volumes to {root}", flush=True)
        files = make_synthetic(root, volumes=largest, slices=syn.slices, coils=syn.coils,
                               shape=tuple(syn.shape), snr=syn.snr, seed=args.seed)
        files = sorted(Path(f) for f in files)
    torch.manual_seed(args.seed)
    masks: dict[str, list[dict[str, Any]]] = {}
    for mask in args.masks:
        masks[mask] = []
        for n in sorted(set(args.train_volumes)):
            for P in sorted(set(args.arrangements)):
                print(f"\n=== mask {mask}, {n} training volumes, P = {P} ===", flush=True)
                sub = subset(root, files[: n + cfg.val_volumes], args.out / "subsets" / f"train{n}")
                masks[mask].append(run_size(sub, mask, dataclasses.replace(cfg, num_arrangements=P), args.out,
                                            args.seed))
                print(json.dumps(masks[mask][-1]), flush=True)
    results = {"config": {**cfg.to_dict(), "train_volumes": args.train_volumes, "arrangements": args.arrangements,
                          "command": command("run_knee_gap.py", argv), "machine": machine(), "date": utc_now(),
                          "total_seconds": time.perf_counter() - t0, "seed": args.seed},
               "masks": masks}
    write_results(args.out, results, markdown(results, cfg))
    print("\n" + markdown(results, cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
