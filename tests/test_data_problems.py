"""Slice problems and measured data from files: the map cache gives the numbers of a fresh computation."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from convexrecon.data import SliceDataset, measured_data, slice_problems
from convexrecon.errors import DataWarning
from convexrecon.mri import crop_center
from tests.conftest import CROP


def _same(a: list, b: list) -> None:
    for p, q in zip(a, b, strict=True):
        for name in ("kspace", "mask", "maps", "zero_filled", "target"):
            x, y = getattr(p, name), getattr(q, name)
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        assert (p.scale, p.fname, p.slice_index) == (q.scale, q.fname, q.slice_index)


def test_cached_problems_equal_fresh_ones_bit_for_bit(tiny_dir: Path, tmp_path: Path) -> None:
    dataset = SliceDataset(tiny_dir, crop=CROP, cache_dir=None, progress=False)
    fresh = slice_problems(dataset, dataset.index)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        computed = slice_problems(dataset, dataset.index, cache_dir=tmp_path)
        reused = slice_problems(dataset, dataset.index, cache_dir=tmp_path)
    entries = sorted((tmp_path / "espirit").rglob("*-full.npy"))
    assert len(entries) == len(dataset)
    _same(fresh, computed)
    _same(fresh, reused)
    # the SENSE images sum over coils, whose rounding depends on the maps' memory layout: kept as computed
    assert reused[0].maps.strides == fresh[0].maps.strides


def test_measured_data_uses_the_datasets_cache(tiny_dir: Path, tmp_path: Path) -> None:
    dataset = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    assert dataset.cache_root == tmp_path and dataset.cache_dir.parent == tmp_path
    data, problems = measured_data(dataset, dataset.index[:1])
    assert len(data) == 1 and data.crop == CROP and len(problems) == 1
    assert len(list((tmp_path / "espirit").rglob("*-full.npy"))) == 1
    stored = dataset[0]
    # A^H k on the full grid: its centre crop is the dataset's input
    assert torch.allclose(crop_center(data.zero_filled(), CROP)[0], torch.complex(*stored.input), atol=1e-6)


def test_a_damaged_cache_entry_is_reported_and_recomputed(tiny_dir: Path, tmp_path: Path) -> None:
    dataset = SliceDataset(tiny_dir, crop=CROP, cache_dir=None, progress=False)
    fresh = slice_problems(dataset, dataset.index[:1], cache_dir=tmp_path)
    (entry,) = (tmp_path / "espirit").rglob("*-full.npy")
    np.save(entry, np.zeros((2, 2), dtype=np.complex64))
    with pytest.warns(DataWarning, match="recomputed"):
        again = slice_problems(dataset, dataset.index[:1], cache_dir=tmp_path)
    _same(fresh, again)
