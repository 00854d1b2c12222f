"""Slice problems and measured data read from fastMRI files, with their ESPIRiT maps cached.

A :class:`~convexrecon.mri.classical.SliceProblem` holds one slice as the classical references and
the unrolled network's data consistency need it: masked k-space, mask, full-grid ESPIRiT maps, and
the cropped SENSE input and target of :class:`~convexrecon.data.SliceDataset`'s preprocessing.
ESPIRiT dominates its cost (seconds per slice on real data), so with a cache directory the full-grid
maps are kept in the package's map cache (:class:`~convexrecon.data.mapcache.MapCache`, keyed and
checked like the other caches) and a slice's problem is rebuilt from its file and cached maps; the
rest is a few FFTs and gives the same numbers as without the cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.mapcache import MapCache
from convexrecon.data.masks import MaskFunc
from convexrecon.mri.classical import SliceProblem, problem_from_kspace
from convexrecon.mri.consistency import MeasuredData, MeasuredGroups, grouped_from_problems


def slice_problem(volume: FastMRIVolume, slice_index: int, mask_func: MaskFunc, crop: int,
                  cache: MapCache | None = None) -> SliceProblem:
    """Build the problem of one slice exactly as :class:`~convexrecon.data.SliceDataset` preprocesses it.

    ``cache`` keeps the full-grid ESPIRiT maps (None: estimated every time).
    """
    kspace = volume.kspace(slice_index)
    mask = mask_func.for_slice(kspace.shape[-2:], volume.path.name, slice_index,
                               None if cache is None else cache.directory.parent)
    calib = mask_func.calibration_limit(mask.shape)
    maps = None if cache is None else cache.maps(volume.path, slice_index, kspace * mask, mask, calib, None)
    return problem_from_kspace(kspace, mask, calib, crop, maps=maps, fname=volume.path.name,
                               slice_index=slice_index)


def slice_problems(dataset: Any, pairs: Sequence[tuple[Any, int]],
                   cache_dir: str | Path | None = None) -> list[SliceProblem]:
    """The problems of the slices ``pairs`` (``(file, slice)``) of a :class:`~convexrecon.data.SliceDataset`.

    Each slice gets the dataset's mask and crop (:func:`slice_problem`). ESPIRiT maps are cached under
    ``cache_dir`` (the package's cache directory; None: the dataset's, ``SliceDataset(cache_dir=...)``,
    and no cache when it has none). Full-grid maps take ``coils × H × W × 8`` bytes per slice (28 MB for
    a 15-coil 640 × 368 knee slice).
    """
    root = getattr(dataset, "cache_root", None) if cache_dir is None else cache_dir
    cache = None if root is None else MapCache(root)
    volumes: dict[Any, FastMRIVolume] = {}
    problems = []
    for path, s in pairs:
        volume = volumes.setdefault(path, FastMRIVolume(path))
        problems.append(slice_problem(volume, s, dataset.mask_func, dataset.crop, cache))
    return problems


def measured_data(dataset: Any, pairs: Sequence[tuple[Any, int]],
                  cache_dir: str | Path | None = None) -> tuple[MeasuredData | MeasuredGroups, list[SliceProblem]]:
    """The measurements of the slices ``pairs`` of a :class:`~convexrecon.data.SliceDataset`.

    The slices are built by :func:`slice_problems` (same mask and ESPIRiT settings as the dataset's
    samples, with the full-grid maps, which the dataset's cache does not keep; ``cache_dir`` as there).
    Returns the stacked data (:class:`~convexrecon.mri.consistency.MeasuredGroups` when the files come in
    several k-space grids) and the problems (reusable, e.g. for L1-wavelet CS on the same slices).
    """
    problems = slice_problems(dataset, pairs, cache_dir)
    return grouped_from_problems(problems), problems
