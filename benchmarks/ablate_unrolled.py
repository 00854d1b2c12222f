"""Ablation of the convex unrolled network's settings on run_knee's data, against L1-wavelet CS.

Trains ``train_unrolled`` once per variant (each a JSON object overriding settings of ``CONFIGS[mode].unrolled``:
``stages``, ``kernel_size``, ``num_arrangements``, ``cg_iterations``, ``lambdas``, ``beta_ratios``,
``gated_method``, ...) on the same preprocessed split as ``run_knee.py`` (same data, masks, ESPIRiT, held-out
volume for the β/λ choice) and prints the validation PSNR after every stage next to zero-filled and CS.

    python -m benchmarks.ablate_unrolled --mask lines \
        --variants '[{}, {"stages": 8}, {"num_arrangements": 32, "gated_method": "fista"}]'

Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/ablate-unrolled-MODE-MASK``);
the data and the ESPIRiT cache are shared with run_knee's default output directory layout under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as run_knee.py (docs/data.md, performance note)

from benchmarks.kit.configs import CONFIGS, unrolled_variants  # noqa: E402
from benchmarks.kit.data import split_under  # noqa: E402
from benchmarks.kit.methods import cs_predictions, scores, split_options, train_unrolled_convex  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default")
    parser.add_argument("--mask", choices=("poisson", "lines"), default="lines")
    parser.add_argument("--variants", default="[{}]",
                        help="JSON list of objects overriding settings of CONFIGS[config].unrolled "
                             "(default: one run as is)")
    parser.add_argument("--volumes", type=int, default=None,
                        help="synthetic volumes in all (default: the mode's); the validation volume stays the same "
                             "(each volume depends on its index alone), the others train: training-set size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        variants = unrolled_variants(args.variants)
    except ValueError as error:
        parser.error(f"argument --variants: {error}")
    cfg = CONFIGS[args.config]
    if args.volumes is not None:
        if args.volumes < cfg.val_volumes + cfg.holdout_volumes + 1:
            parser.error(f"argument --volumes: expected at least {cfg.val_volumes + cfg.holdout_volumes + 1} "
                         f"(validation, held-out and one fit volume). Got {args.volumes}.")
        cfg = dataclasses.replace(cfg, synthetic=dataclasses.replace(cfg.synthetic, volumes=args.volumes))
    size = "" if args.volumes is None else f"-{args.volumes}vol"
    out = args.out or Path("benchmarks/results") / f"ablate-unrolled-{args.config}{size}-{args.mask}"
    split = split_under(out, cfg, args.mask, args.seed)
    va = split["val"]
    rows: list[dict[str, Any]] = [{"method": "zero_filled",
                                   **scores(va["targets"], va["inputs"], va["scales"], va["volumes"])}]
    cs, lamda, _ = cs_predictions(split, cfg)
    n = len(cs)
    rows.append({"method": "cs_l1_wavelet", "lambda": lamda,
                 **scores(va["targets"][:n], cs, va["scales"][:n], va["volumes"][:n])})
    print(f"zero-filled {rows[0]['psnr_mean']:.2f} dB, CS {rows[1]['psnr_mean']:.2f} dB (λ {lamda})", flush=True)
    for variant in variants:
        u = dataclasses.replace(cfg.unrolled, **variant)
        start = time.perf_counter()
        result = train_unrolled_convex(split, u, split_options(split, u, lamda), args.seed, cfg.holdout_volumes)
        seconds = time.perf_counter() - start
        rec = result.records
        rows.append({"method": "unrolled_convex", "variant": variant, "seconds": seconds,
                     "psnr_mean": rec[-1]["psnr"], "psnr_std": rec[-1]["psnr_std"], "ssim_mean": rec[-1]["ssim"],
                     "stage_psnr": [r["psnr"] for r in rec], "lambdas": [r["lam"] for r in rec],
                     "status": [r["status"] for r in rec]})
        print(f"{json.dumps(variant)}: {seconds:.0f} s, PSNR per stage "
              f"{[round(r['psnr'], 2) for r in rec]}, λ {[r['lam'] for r in rec]}, "
              f"status {[r['status'] for r in rec]}", flush=True)
    lines = [f"# Unrolled ablation ({args.config}, mask {args.mask})", "",
             f"Command: `{command('ablate_unrolled.py', argv)}`  ", f"Machine: {machine()}; {utc_now()}", "",
             "| method | variant | PSNR (dB) | per stage | λ per stage | status | s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {json.dumps(r.get('variant', ''))} | {r['psnr_mean']:.2f} ± "
                     f"{r['psnr_std']:.2f} | {', '.join(f'{p:.2f}' for p in r.get('stage_psnr', []))} | "
                     f"{r.get('lambdas', '')} | {', '.join(r.get('status', []))} | {r.get('seconds', 0):.0f} |")
    write_results(out, {"command": command("ablate_unrolled.py", argv), "machine": machine(), "date": utc_now(),
                        "config": args.config, "mask": args.mask, "rows": rows}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
