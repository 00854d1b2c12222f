"""The knee experiment's out-of-distribution protocol: every knee-trained model on another anatomy family, other SNRs
and another coil count, beside the classical reconstructions of the same slices.

Each condition (:class:`benchmarks.kit.configs.Condition`) is a synthetic set written once under the run's directory
(subjects seeded apart from the training set's, so no training subject reappears) and preprocessed as the training
data are (ESPIRiT per slice, the mask settings, crop and reference of the run). Its rows:

* zero-filled and **SENSE-CG** (unregularised, :data:`~convexrecon.stack.stage_inputs.SENSE_ITERATIONS` CG steps:
  the classical reference without a parameter);
* **L1-wavelet CS** and **cycle-spun CS** with λ chosen *on the condition's own slices* from :data:`CS_GRID`, by the
  PSNR against their fully sampled reference: an oracle choice that no user without that reference can make, so
  these rows are an upper bound on what CS gives there;
* every learned method as trained on knee.

``best_classical`` names the classical row with the highest mean PSNR; every learned row carries its paired
per-slice difference to it (95 % Student-t interval over slices). The recommended network passes a condition when
that difference's mean is at least :data:`TOLERANCE_DB` below zero at worst.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.kit.configs import Condition, KneeConfig
from benchmarks.kit.data import anatomy_slices, synthetic_parallel
from benchmarks.kit.evidence import CS_SHIFTS, fista_images, model_scores, paired, slice_scores
from convexrecon.mri import complex_to_channels, crop_center, sense_cg_batch
from convexrecon.stack.stage_inputs import SENSE_ITERATIONS
from convexrecon.stack.unrolled import UnrolledNet, initial_estimates

CS_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # λ candidates × each slice's max |zero-filled|, two per decade
CLASSICAL = ("zero_filled", "sense_cg", "cs_l1_wavelet", "cs_cycle_spun")
RECOMMENDED = "unrolled_convex"  # the package's recommended network (train --recommended)
TOLERANCE_DB = 0.2  # the recommended network may fall at most this far below the best classical row
SEED_OFFSET = 1000  # condition c's subjects are seeded seed + SEED_OFFSET * (c + 1): none of them is a training one


def condition_root(out: Path, cfg: KneeConfig, index: int, condition: Condition) -> Path:
    """Where condition ``index`` of ``cfg`` lives under the run directory ``out`` (its settings in the name)."""
    syn = cfg.synthetic
    return out / (f"ood_{index}_{condition.anatomy}_snr{condition.snr:g}_{condition.volumes}x{syn.slices}_"
                  f"{condition.coils}c_{syn.shape[0]}x{syn.shape[1]}")


def write_conditions(out: Path, cfg: KneeConfig, seed: int, workers: int) -> list[Path]:
    """Every condition's synthetic set of ``cfg`` under ``out`` (written once; an existing set is kept)."""
    roots = []
    for index, condition in enumerate(cfg.conditions):
        root = condition_root(out, cfg, index, condition)
        if not any(root.glob("*.h5")):
            print(f"writing the out-of-distribution set '{condition.name}' to {root}", flush=True)
            synthetic_parallel(root, workers, volumes=condition.volumes, slices=cfg.synthetic.slices,
                               coils=condition.coils, shape=tuple(cfg.synthetic.shape), snr=condition.snr,
                               seed=seed + SEED_OFFSET * (index + 1), anatomy=condition.anatomy)
        roots.append(root)
    return roots


def sense_cg_images(part: dict[str, Any]) -> torch.Tensor:
    """Unregularised SENSE-CG of every slice of ``part``: CG on :math:`A^H A` from zero, cropped, 2 channels."""
    d = part["data"]
    x = sense_cg_batch(d.kspace, d.maps, d.mask, SENSE_ITERATIONS)
    return complex_to_channels(crop_center(x, d.crop)).float().cpu()


def classical_rows(part: dict[str, Any], cfg: KneeConfig) -> dict[str, Any]:
    """Zero-filled, SENSE-CG, CS and cycle-spun CS (λ chosen on ``part`` itself from :data:`CS_GRID`) of ``part``."""
    rows: dict[str, Any] = {"zero_filled": slice_scores(part, part["inputs"]),
                            "sense_cg": {**slice_scores(part, sense_cg_images(part)), "iterations": SENSE_ITERATIONS}}
    plain = {lam: slice_scores(part, fista_images(part, lam, cfg.cs_max_iter, CS_SHIFTS[:1])) for lam in CS_GRID}
    lam = max(plain, key=lambda v: plain[v]["psnr_mean"])
    rows["cs_l1_wavelet"] = {**plain[lam], "lambda": lam, "lambda_choice": "oracle: on these slices",
                             "iterations": cfg.cs_max_iter}
    spun = fista_images(part, lam, cfg.cs_max_iter, CS_SHIFTS[:cfg.cs_shifts])
    rows["cs_cycle_spun"] = {**slice_scores(part, spun), "lambda": lam, "shifts": cfg.cs_shifts,
                             "lambda_choice": "plain CS's oracle λ", "iterations": cfg.cs_max_iter}
    return rows


def score_condition(part: dict[str, Any], cfg: KneeConfig, models: dict[str, Any]) -> dict[str, Any]:
    """The classical rows and every model of ``models`` on ``part``, the best classical row, and every learned row's
    paired difference to it."""
    entry = classical_rows(part, cfg)
    starts: dict[str, Any] = {}  # the unrolled networks' start and CS images, once per architecture
    for name, model in models.items():
        initial = None
        if isinstance(model, UnrolledNet):
            key = repr(sorted(model.options().items()))
            if key not in starts:
                starts[key] = initial_estimates(model, part["data"])
            initial = starts[key]
        entry[name] = model_scores(model, part, initial)
    best = max(CLASSICAL, key=lambda m: entry[m]["psnr_mean"])
    entry["best_classical"] = best
    entry["versus_best_classical"] = {name: paired(entry, name, best) for name in models}
    return entry


def out_of_distribution(roots: list[Path], mask: str, cfg: KneeConfig, seed: int, cache: Path,
                        models: dict[str, Any]) -> dict[str, Any]:
    """Every condition of ``cfg`` (its sets at ``roots``, :func:`write_conditions`) scored on ``mask``: one entry per
    condition name, each with its settings, slices, seconds and whether the recommended network passes."""
    results = {}
    for condition, root in zip(cfg.conditions, roots):
        start = time.perf_counter()
        part = anatomy_slices(root, mask, cfg, seed, cache)
        entry = {"condition": dataclasses.asdict(condition),
                 "slices": len(part["volumes"]), **score_condition(part, cfg, models)}
        if RECOMMENDED in entry:
            margin = entry[RECOMMENDED]["psnr_mean"] - entry[entry["best_classical"]]["psnr_mean"]
            entry["recommended_margin_db"] = margin
            entry["recommended_passes"] = margin >= -TOLERANCE_DB
        entry["seconds"] = time.perf_counter() - start
        results[condition.name] = entry
        print(f"out of distribution, {mask}, {condition.name}: best classical {entry['best_classical']} "
              f"{entry[entry['best_classical']]['psnr_mean']:.2f} dB"
              + (f", {RECOMMENDED} {entry[RECOMMENDED]['psnr_mean']:.2f} dB" if RECOMMENDED in entry else "")
              + f" ({entry['seconds']:.0f} s)", flush=True)
    return results
