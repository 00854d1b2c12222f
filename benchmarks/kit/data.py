"""The knee experiment's data: synthetic sets and the preprocessed, stacked split.

Every slice goes through ESPIRiT once (:func:`measured_slices`): the CNN inputs and targets, the unrolled networks'
measurements and L1-wavelet CS all come from the same :func:`convexrecon.data.problems.slice_problem`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.kit.configs import MASKS, KneeConfig
from convexrecon.data import SliceDataset
from convexrecon.data.splits import stack_split


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


def load_split(root: Path, mask: str, cfg: KneeConfig, seed: int, cache: Path,
               device: Any = None) -> dict[str, Any]:
    """Preprocess (cached, ESPIRiT and SENSE on ``device``) and stack the slices; validation = the first volumes."""
    dataset = SliceDataset(root, crop=cfg.crop, seed=seed, cache_dir=cache, device=device, **MASKS[mask])
    try:
        train, val = stack_split(dataset, cfg.val_volumes)
    except ValueError as error:
        raise SystemExit(f"run_knee: error: {error}") from None
    return {"dataset": dataset, "train": train._asdict(), "val": val._asdict()}


def measured_slices(root: Path, mask: str, cfg: KneeConfig, seed: int, cache: Path) -> dict[str, Any]:
    """Every slice of ``root`` as :func:`convexrecon.data.problems.slice_problem` builds it (full-grid maps; one
    ESPIRiT run per slice, kept in the package's map cache under ``cache``: :func:`~convexrecon.data.slice_problems`).

    Returns the (lazy, uncached) :class:`SliceDataset` of the mask settings, the problems in the dataset's index
    order, and their stacked network inputs/targets: the zero-filled input and target of a problem are those the
    dataset's preprocessing gives, so the CNNs, the unrolled networks and L1-wavelet CS all read one
    preprocessing, and no slice is run through ESPIRiT twice.
    """
    from convexrecon.data.problems import slice_problems

    dataset = SliceDataset(root, crop=cfg.crop, seed=seed, cache_dir=None, progress=False, **MASKS[mask])
    pairs = [(p, s) for p, s in dataset.index]
    problems = slice_problems(dataset, pairs, cache_dir=cache)
    return {"dataset": dataset, "pairs": pairs, "problems": problems}


def _stack_problems(problems: list[Any], pairs: list[Any]) -> dict[str, Any]:
    from convexrecon.mri.consistency import measured_from_problems
    from convexrecon.mri.fft import complex_to_channels

    images = lambda name: torch.stack([complex_to_channels(torch.from_numpy(np.asarray(getattr(p, name))))  # noqa: E731
                                       .float() for p in problems])
    return {"inputs": images("zero_filled"), "targets": images("target"),
            "scales": torch.tensor([float(p.scale) for p in problems], dtype=torch.float64),
            "volumes": [p.fname for p in problems], "pairs": list(pairs), "problems": list(problems),
            "data": measured_from_problems(problems)}


def split_under(out: Path, cfg: KneeConfig, mask: str, seed: int) -> dict[str, Any]:
    """run_knee's synthetic set of ``cfg`` under ``out/data`` (generated once) and its preprocessed ``mask`` split
    (:func:`measured_split`, cached under ``out/cache``): the data of the ablation and probe scripts."""
    out.mkdir(parents=True, exist_ok=True)
    syn = cfg.synthetic
    root = out / "data"
    files = sorted(root.glob("*.h5"))
    if not files:
        synthetic_parallel(root, os.cpu_count() or 1, volumes=syn.volumes, slices=syn.slices,
                           coils=syn.coils, shape=tuple(syn.shape), snr=syn.snr, seed=seed)
    elif len(files) != syn.volumes:
        raise SystemExit(f"error: {root} holds {len(files)} volumes; this run needs {syn.volumes}. "
                         "Use another --out (the data are generated there once).")
    return measured_split(root, mask, cfg, seed, out / "cache")


def measured_split(root: Path, mask: str, cfg: KneeConfig, seed: int, cache: Path) -> dict[str, Any]:
    """:func:`load_split`'s split (validation = the first ``val_volumes`` volumes by name) built from
    :func:`measured_slices`: each part also holds its ``problems`` (for CS) and ``data`` (``MeasuredData``, for the
    unrolled networks), and ``mask`` names its sampling pattern."""
    got = measured_slices(root, mask, cfg, seed, cache)
    files = sorted({p for p, _ in got["pairs"]})
    if len(files) < cfg.val_volumes + 1:
        raise SystemExit(f"run_knee: error: The data must hold more than 'val_volumes' = {cfg.val_volumes} "
                         f"volumes (training needs at least one). Got {len(files)}.")
    val_files = set(files[:cfg.val_volumes])
    parts = {}
    for name, keep in (("train", lambda p: p not in val_files), ("val", lambda p: p in val_files)):
        index = [i for i, (p, _) in enumerate(got["pairs"]) if keep(p)]
        parts[name] = _stack_problems([got["problems"][i] for i in index], [got["pairs"][i] for i in index])
    return {"dataset": got["dataset"], "mask": mask, **parts}


def anatomy_slices(root: Path, mask: str, cfg: KneeConfig, seed: int, cache: Path) -> dict[str, Any]:
    """Every slice of ``root`` (e.g. the held-out brain family) stacked like one part of :func:`measured_split`."""
    got = measured_slices(root, mask, cfg, seed, cache)
    return _stack_problems(got["problems"], got["pairs"])
