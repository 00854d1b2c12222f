"""How the best cycle-spun CS weight moves with the noise level, on the training family alone: the law behind the
recommended network's ``cs_noise_power``.

The recommended network weighs its CS start and CS images by each slice's estimated noise level σ̂
(:func:`convexrecon.mri.noise.estimate_noise`). A weight proportional to σ̂ is right if the best weight follows the
noise linearly; this script measures whether it does. It writes knee-family sets of the mode's size at several SNRs
(subjects seeded apart from the training and out-of-distribution sets), and on every slice runs cycle-spun CS at
weights c·σ̂ over a grid of c. Per SNR it reports the c of the highest mean PSNR and the sets' median relative noise
level r = σ̂ / max|zero-filled|. Then it scores the two rules a network trained at the mode's SNR can follow, with
c₀ the best c at that SNR and r₀ that set's median r: the weight c₀·σ̂ at every SNR (``cs_noise`` 0), and
c₀·σ̂·min(1, r / r₀) per slice (``StageInputs.cs_noise`` = r₀: weights shrink on cleaner scans only).

    python -m benchmarks.cs_weight_law

Default mode: 5 sets × 4 slices, 13 weights, about 10 minutes on 2 cores. Writes ``results.json`` and ``results.md``
under ``--out`` (default ``benchmarks/results/cs-weight-law-MODE-MASK``); the sets stay under ``--out``/data for a re-run.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as run_knee.py

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.kit.configs import CONFIGS  # noqa: E402
from benchmarks.kit.data import anatomy_slices, synthetic_parallel  # noqa: E402
from benchmarks.kit.evidence import CS_SHIFTS, slice_scores  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402
from convexrecon.mri import complex_to_channels, crop_center, estimate_noise, l1_wavelet_fista  # noqa: E402
from convexrecon.mri.sense import sense_adjoint  # noqa: E402

SEED = 7000  # subjects apart from run_knee's training set (seed 0) and out-of-distribution sets (1000, 2000, ...)
WEIGHTS = tuple(float(f"{0.02 * 10 ** (k / 6):.3g}") for k in range(13))  # c: 0.02 ... 2, six per decade


def noise_levels(part: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every slice's estimated noise level σ̂ and relative noise level r = σ̂ / max|zero-filled| (crop window)."""
    d = part["data"]
    sigma = estimate_noise(d.kspace, d.mask).float()
    rho = crop_center(sense_adjoint(d.kspace, d.maps, d.mask), d.crop).abs().flatten(1).amax(1)
    return sigma, sigma / rho


def cs_psnr(part: dict[str, Any], weights: torch.Tensor, iterations: int, shifts: int) -> list[float]:
    """Every slice's PSNR of cycle-spun CS at its own absolute weight ``weights[b]``."""
    d = part["data"]
    x = l1_wavelet_fista(d.kspace, d.maps, d.mask, 1.0, iterations, scale=weights, shifts=list(CS_SHIFTS[:shifts]))
    return slice_scores(part, complex_to_channels(crop_center(x, d.crop)).float().cpu())["psnr_slices"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default")
    parser.add_argument("--mask", choices=("poisson", "lines"), default="poisson")
    parser.add_argument("--snrs", default="10,25,50,100,200", help="comma-separated SNRs of the knee sets")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.out = args.out or Path("benchmarks/results") / f"cs-weight-law-{args.config}-{args.mask}"
    try:
        snrs = [float(s) for s in args.snrs.split(",")]
    except ValueError:
        parser.error(f"argument --snrs: expected comma-separated numbers. Got {args.snrs!r}.")
    if len(snrs) < 2 or not all(math.isfinite(s) and s > 0 for s in snrs):
        parser.error(f"argument --snrs: expected at least two finite SNRs > 0. Got {args.snrs!r}.")
    cfg = CONFIGS[args.config]
    syn = cfg.synthetic
    if syn.snr not in snrs:
        parser.error(f"argument --snrs: expected the {args.config} mode's training SNR {syn.snr:g} among them (the "
                     f"rules start from its best weight). Got {args.snrs!r}.")
    torch.set_num_threads(os.cpu_count() or 1)
    sets, parts = [], []
    start = time.perf_counter()
    for index, snr in enumerate(snrs):
        root = args.out / "data" / f"knee_snr{snr:g}_{args.config}"
        if not any(root.glob("*.h5")):
            synthetic_parallel(root, os.cpu_count() or 1, volumes=1, slices=syn.slices, coils=syn.coils,
                               shape=tuple(syn.shape), snr=snr, seed=SEED + 100 * index, anatomy="knee")
        part = anatomy_slices(root, args.mask, cfg, 0, args.out / "cache")
        sigma, relative = noise_levels(part)
        psnr = {c: cs_psnr(part, c * sigma, cfg.cs_max_iter, cfg.cs_shifts) for c in WEIGHTS}
        means = {c: float(np.mean(v)) for c, v in psnr.items()}
        best = max(means, key=means.get)
        parts.append((part, sigma, relative))
        sets.append({"snr": snr, "slices": len(part["targets"]), "relative_noise": float(relative.median()),
                     "best_weight": best, "best_psnr": means[best], "mean_psnr": means,
                     "slice_psnr": {str(c): v for c, v in psnr.items()},
                     "slice_relative_noise": relative.tolist()})
        print(f"SNR {snr:g}: r = {sets[-1]['relative_noise']:.4g}, best c = {best:g} ({means[best]:.2f} dB)",
              flush=True)
    reference = sets[snrs.index(syn.snr)]
    c0, r0 = reference["best_weight"], reference["relative_noise"]
    for entry, (part, sigma, relative) in zip(sets, parts):
        entry["noise_rule_psnr"] = entry["mean_psnr"][c0]
        entry["shrink_rule_psnr"] = float(np.mean(cs_psnr(part, c0 * sigma * (relative / r0).clamp(max=1.0),
                                                          cfg.cs_max_iter, cfg.cs_shifts)))
    seconds = time.perf_counter() - start
    lines = ["# The best cycle-spun CS weight against the noise level (knee family)", "",
             f"Command: `{command('cs_weight_law.py', argv)}`  ",
             f"Machine: {machine()}; {utc_now()}; {torch.get_num_threads()} torch threads; {seconds:.0f} s", "",
             f"Knee sets of the {args.config} mode's size ({syn.slices} slices, {syn.coils} coils, k-space "
             f"{syn.shape[0]}×{syn.shape[1]}, mask {args.mask}, crop {cfg.crop}), subjects seeded from {SEED}; "
             f"cycle-spun CS ({cfg.cs_shifts} grids, {cfg.cs_max_iter} FISTA steps) at weight c·σ̂; mean slice-wise "
             f"PSNR (dB). r: the set's median σ̂ / max|zero-filled|.", "",
             "| SNR | r | " + " | ".join(f"c = {c:g}" for c in WEIGHTS) + " | best c |",
             "| --- | --- | " + " | ".join("---" for _ in WEIGHTS) + " | --- |"]
    for entry in sets:
        lines.append(f"| {entry['snr']:g} | {entry['relative_noise']:.4g} | "
                     + " | ".join(("**{:.2f}**" if c == entry["best_weight"] else "{:.2f}").format(
                         entry["mean_psnr"][c]) for c in WEIGHTS) + f" | {entry['best_weight']:g} |")
    lines += ["", f"The two rules from the training SNR {syn.snr:g} (c₀ = {c0:g}, r₀ = {r0:.4g}): mean PSNR (dB) and "
                  f"its difference to the best weight of the grid.", "",
              "| SNR | best of the grid | c₀·σ̂ | c₀·σ̂·min(1, r / r₀) |", "| --- | --- | --- | --- |"]
    for entry in sets:
        lines.append(f"| {entry['snr']:g} | {entry['best_psnr']:.2f} | {entry['noise_rule_psnr']:.2f} "
                     f"({entry['noise_rule_psnr'] - entry['best_psnr']:+.2f}) | {entry['shrink_rule_psnr']:.2f} "
                     f"({entry['shrink_rule_psnr'] - entry['best_psnr']:+.2f}) |")
    write_results(args.out, {"command": command("cs_weight_law.py", argv), "machine": machine(), "date": utc_now(),
                             "config": args.config, "mask": args.mask, "weights": list(WEIGHTS), "sets": sets,
                             "c0": c0, "r0": r0, "seconds": seconds}, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
