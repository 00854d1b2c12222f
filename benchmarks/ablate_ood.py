"""Variants of the recommended unrolled network, retrained on a finished ``run_knee`` run's data and scored in and
out of distribution against the classical rows that run recorded.

``run_knee`` writes its data, its preprocessing cache and its out-of-distribution sets under its output directory,
and every classical row (zero-filled, SENSE-CG, CS and cycle-spun CS with the oracle λ) into ``results.json``. This
script retrains ``train_unrolled`` on the same split (same ESPIRiT maps, mask, CS λ, held-out volume) once per
variant (each a JSON object overriding settings of ``CONFIGS[mode].unrolled``, ``{}`` = the run's own network) and
scores it on the validation volume and on every out-of-distribution set, with its start and the output of each of
its stages, beside the best classical row of each set:

    python -m benchmarks.ablate_ood --mask lines --variants '[{"dc_relative": "fixed"}, {}]'

Seed 0, one torch thread; about 7 minutes per variant and mask in the default mode on 2 cores. Writes
``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/ablate-ood-MODE-MASK``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as run_knee.py

import torch  # noqa: E402

from benchmarks.kit.configs import CONFIGS, unrolled_variants  # noqa: E402
from benchmarks.kit.data import anatomy_slices, measured_split  # noqa: E402
from benchmarks.kit.evidence import model_scores, slice_scores  # noqa: E402
from benchmarks.kit.methods import split_options, train_unrolled_convex  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402
from benchmarks.kit.shift import TOLERANCE_DB, condition_root  # noqa: E402
from convexrecon.stack.unrolled import initial_estimates  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("benchmarks/results/knee"),
                        help="a finished run_knee output directory (default: the default mode's)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default", help="the mode that run used")
    parser.add_argument("--mask", choices=("poisson", "lines"), default="poisson")
    parser.add_argument("--variants", default="[{}]", help="JSON list of objects overriding CONFIGS[config].unrolled")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        variants = unrolled_variants(args.variants)
    except ValueError as error:
        parser.error(f"argument --variants: {error}")
    cfg = CONFIGS[args.config]
    syn = cfg.synthetic
    root = args.run / f"data_{syn.volumes}x{syn.slices}_{syn.coils}c_{syn.shape[0]}x{syn.shape[1]}"
    try:
        recorded = json.loads((args.run / "results.json").read_text())
        classical = recorded["out_of_distribution"][args.mask]
        lamda = recorded["masks"][args.mask]["cs_l1_wavelet"]["lambda"]
        in_distribution = recorded["masks"][args.mask]["unrolled_convex"]["psnr_mean"]
    except (OSError, ValueError, KeyError) as error:
        parser.error(f"argument --run: expected a finished run_knee --config {args.config} directory with "
                     f"out-of-distribution rows for mask {args.mask}. Got {args.run} ({error!r}).")
    if not root.is_dir():
        parser.error(f"argument --run: expected its data in {root}. Got no such directory.")
    cache = args.run / "cache"
    split = measured_split(root, args.mask, cfg, 0, cache)
    parts = {"validation": None}
    for index, condition in enumerate(cfg.conditions):
        parts[condition.name] = anatomy_slices(condition_root(args.run, cfg, index, condition), args.mask, cfg, 0,
                                               cache)
    rows = []
    for variant in variants:
        u = dataclasses.replace(cfg.unrolled, **variant)
        start = time.perf_counter()
        result = train_unrolled_convex(split, u, split_options(split, u, lamda), 0, cfg.holdout_volumes)
        row: dict[str, Any] = {"variant": variant, "train_seconds": time.perf_counter() - start,
                               "validation": result.records[-1]["psnr"], "sets": {}}
        for name, part in parts.items():
            if part is None:
                continue
            initial = initial_estimates(result.network, part["data"])
            score = model_scores(result.network, part, initial)["psnr_mean"]
            with torch.no_grad():  # the start (CS at its noise-relative weight) and every stage's output after it
                partial = [slice_scores(part, result.network.predict(part["data"], stages=k, initial=initial))
                           ["psnr_mean"] for k in range(result.network.num_stages)]
            best = classical[name]["best_classical"]
            row["sets"][name] = {"psnr": score, "start_psnr": partial[0], "stage_psnr": partial[1:] + [score],
                                 "best_classical": best,
                                 "best_classical_psnr": classical[name][best]["psnr_mean"],
                                 "difference": score - classical[name][best]["psnr_mean"]}
        rows.append(row)
        print(f"{json.dumps(variant)}: validation {row['validation']:.2f} dB; "
              + "; ".join(f"{n} {s['psnr']:.2f} ({s['difference']:+.2f})" for n, s in row["sets"].items()),
              flush=True)
    names = list(rows[0]["sets"]) if rows else []
    lines = [f"# Unrolled variants in and out of distribution ({args.config}, mask {args.mask})", "",
             f"Command: `{command('ablate_ood.py', argv)}`  ", f"Machine: {machine()}; {utc_now()}; one torch thread",
             "", f"Run: `{args.run}` (its recommended network scored {in_distribution:.2f} dB on validation). Each "
             f"set: the variant's PSNR (dB) and its difference to the set's best classical row as that run recorded "
             f"it (oracle λ); a difference below −{TOLERANCE_DB} dB fails the criterion.", "",
             "| variant | validation | " + " | ".join(names) + " | train (s) |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for row in rows:
        lines.append(f"| `{json.dumps(row['variant'])}` | {row['validation']:.2f} | "
                     + " | ".join(f"{row['sets'][n]['psnr']:.2f} ({row['sets'][n]['difference']:+.2f})"
                                  for n in names) + f" | {row['train_seconds']:.0f} |")
        lines.append("| its start (CS at its weight, no stage) | | "
                     + " | ".join(f"{row['sets'][n]['start_psnr']:.2f}" for n in names) + " | |")
        for k in range(len(row["sets"][names[0]]["stage_psnr"]) - 1 if names else 0):
            lines.append(f"| after its stage {k + 1} | | "
                         + " | ".join(f"{row['sets'][n]['stage_psnr'][k]:.2f}" for n in names) + " | |")
    def recorded_row(n: str) -> str:
        score, best = classical[n]["unrolled_convex"]["psnr_mean"], classical[n][classical[n]["best_classical"]]
        return f"{score:.2f} ({score - best['psnr_mean']:+.2f})"

    lines.append(f"| the run's recommended network (recorded, seed 0) | {in_distribution:.2f} | "
                 + " | ".join(recorded_row(n) for n in names) + " | |")
    lines.append("| best classical | | " + " | ".join(
        f"{classical[n][classical[n]['best_classical']]['psnr_mean']:.2f} ({classical[n]['best_classical']})"
        for n in names) + " | |")
    out = args.out or Path("benchmarks/results") / f"ablate-ood-{args.config}-{args.mask}"
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, {"command": command("ablate_ood.py", argv), "machine": machine(), "date": utc_now(),
                        "run": str(args.run), "config": args.config, "mask": args.mask, "rows": rows},
                  "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
