"""Slices whose coil maps came from the fallback kernel warn every time SliceDataset hands them out, from the cache
too; standard maps stay silent; a cache file that does not record the kernel widths is recomputed."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import convexrecon.data.dataset as dataset_module
from convexrecon.data.dataset import SliceDataset, preprocess_slice
from convexrecon.data.synthetic import make_synthetic
from convexrecon.errors import DataWarning
from convexrecon.mri.espirit import ESPIRIT_KERNEL, FALLBACK_KERNEL, working_width

SHAPE = (160, 92)  # where the 6-pixel kernel alone gives empty maps on an 8-10 wide band (tests/test_data_coilmaps.py)
CROP = 64
SLICES = 2
NARROW = dict(mask="lines", center_fraction=(8 + 0.4) / SHAPE[1])  # 8 centre lines (random lines may widen it)
WIDE = dict(mask="lines", center_fraction=(16 + 0.4) / SHAPE[1])
FALLBACK = re.compile(r"calibration region is (\d+) wide.*3-pixel kernel")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fallback-data")
    make_synthetic(root, volumes=1, slices=SLICES, coils=6, seed=3, shape=SHAPE)
    return root


def _never(*args, **kwargs):
    raise AssertionError("preprocessed again: the cache was missed")


def _build(data_dir: Path, cache: Path, **mask) -> tuple[SliceDataset, list[str]]:
    """The dataset and the texts of the DataWarnings its construction raised."""
    with warnings.catch_warnings(record=True) as log:
        warnings.simplefilter("always")
        dataset = SliceDataset(data_dir, crop=CROP, cache_dir=cache, progress=False, **mask)
    return dataset, [str(w.message) for w in log if issubclass(w.category, DataWarning)]


def _fallback_widths(messages: list[str]) -> list[int]:
    return [int(m.group(1)) for m in map(FALLBACK.search, messages) if m]


def test_narrow_band_warns_when_computed_and_when_read_from_the_cache(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, computed = _build(data_dir, tmp_path / "cache", **NARROW)
    with h5py.File(first.cache_file(first.index[0][0]), "r") as handle:
        kernels, widths = handle["kernel_width"][()], handle["calib_width"][()]
    assert kernels.tolist() == [FALLBACK_KERNEL] * SLICES
    assert all(working_width(FALLBACK_KERNEL) <= w < working_width(ESPIRIT_KERNEL) for w in widths)
    # one warning per slice, naming its calibration width, as coil_maps raises it
    assert _fallback_widths(computed) == widths.tolist()
    assert not any("read from the cache" in m for m in computed)
    with monkeypatch.context() as patch:
        patch.setattr(dataset_module, "preprocess_slice", _never)
        again, reused = _build(data_dir, tmp_path / "cache", **NARROW)
        assert torch.equal(again[1].maps, first[1].maps)
    first.close()
    again.close()
    assert _fallback_widths(reused) == widths.tolist()
    assert all(m.endswith(dataset_module.FROM_CACHE) and "read from the cache" in m for m in reused)
    assert [m.removesuffix(dataset_module.FROM_CACHE) for m in reused] == computed


def test_wide_band_warns_neither_time(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, computed = _build(data_dir, tmp_path / "cache", **WIDE)
    with h5py.File(first.cache_file(first.index[0][0]), "r") as handle:
        assert handle["kernel_width"][()].tolist() == [ESPIRIT_KERNEL] * SLICES
        assert (handle["calib_width"][()] >= working_width(ESPIRIT_KERNEL)).all()
    first.close()
    monkeypatch.setattr(dataset_module, "preprocess_slice", _never)
    again, reused = _build(data_dir, tmp_path / "cache", **WIDE)
    again.close()
    assert computed == [] and reused == []


def test_a_cache_file_without_kernel_widths_is_recomputed_and_warns(data_dir: Path, tmp_path: Path) -> None:
    first, _ = _build(data_dir, tmp_path / "cache", **NARROW)
    victim = first.cache_file(first.index[0][0])
    first.close()
    with h5py.File(victim, "a") as handle:
        del handle["kernel_width"]
    calls = []
    real = dataset_module.preprocess_slice
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dataset_module, "preprocess_slice", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
        rebuilt, messages = _build(data_dir, tmp_path / "cache", **NARROW)
    rebuilt.close()
    assert calls == list(range(SLICES))
    assert any("records no per-slice ESPIRiT kernel" in m for m in messages)
    assert len(_fallback_widths(messages)) == SLICES
    assert not any("read from the cache" in m for m in messages)  # computed, not read
    with h5py.File(victim, "r") as handle:
        assert handle["kernel_width"][()].tolist() == [FALLBACK_KERNEL] * SLICES


def test_preprocess_slice_reports_the_kernel_and_keeps_its_sample(data_dir: Path) -> None:
    dataset = SliceDataset(data_dir, crop=CROP, progress=False, **NARROW)
    kspace = dataset.volumes[dataset.index[0][0]].kspace(0)
    name = dataset.index[0][0].name
    with pytest.warns(DataWarning, match=FALLBACK.pattern):
        plain = preprocess_slice(kspace, dataset.mask_func, name, 0, CROP)
    with pytest.warns(DataWarning, match=FALLBACK.pattern):
        sample, kernel, width = preprocess_slice(kspace, dataset.mask_func, name, 0, CROP, return_kernel=True)
    assert kernel == FALLBACK_KERNEL and working_width(FALLBACK_KERNEL) <= width < working_width(ESPIRIT_KERNEL)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain, sample))
