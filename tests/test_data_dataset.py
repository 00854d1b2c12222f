"""SliceDataset: typed samples, the preprocessing cache, errors."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import convexrecon.data.dataset as dataset_module
from convexrecon.data import Batch, Sample, SliceDataset, collate, make_synthetic
from tests.conftest import COILS, CROP, SHAPE, SLICES, VOLUMES

LINES = dict(mask="lines", center_fraction=0.2)  # 9 centre lines + 2 random of 45 columns


def _same(a: Sample, b: Sample) -> bool:
    return (
        torch.equal(a.input, b.input) and torch.equal(a.target, b.target) and torch.equal(a.mask, b.mask)
        and torch.equal(a.maps, b.maps) and a.scale == b.scale and a.fname == b.fname
        and a.slice_index == b.slice_index
    )


@pytest.fixture(scope="module")
def cached(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SliceDataset:
    return SliceDataset(synthetic_dir, crop=CROP, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_samples_are_typed(cached: SliceDataset) -> None:
    assert len(cached) == VOLUMES * SLICES
    sample = cached[4]
    assert isinstance(sample, Sample)
    assert sample.input.shape == sample.target.shape == (2, CROP, CROP)
    assert sample.input.dtype == sample.target.dtype == torch.float32
    assert sample.mask.shape == SHAPE and sample.mask.dtype == torch.bool
    assert sample.maps.shape == (COILS, CROP, CROP) and sample.maps.dtype == torch.complex64
    assert sample.scale > 0 and (sample.fname, sample.slice_index) == (cached.index[4][0].name, 1)
    magnitude = torch.linalg.vector_norm(sample.input, dim=0)
    assert magnitude.max() == pytest.approx(1.0)  # input divided by its max magnitude
    rate = sample.mask.numel() / sample.mask.sum()
    assert abs(rate - 4.0) / 4.0 < 0.05


def test_cache_equals_direct_computation_and_is_reused(
    cached: SliceDataset, synthetic_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = SliceDataset(synthetic_dir, crop=CROP, progress=False)
    assert all(_same(cached[i], direct[i]) for i in (0, 5))

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(dataset_module, "preprocess_slice", fail)
    again = SliceDataset(synthetic_dir, crop=CROP, cache_dir=cached.cache_dir.parent, progress=False)
    assert again.cache_dir == cached.cache_dir
    assert _same(again[3], cached[3])
    assert not list(cached.cache_dir.glob("*.tmp"))


def test_other_settings_never_reuse_a_cache(tiny_dir: Path, tmp_path: Path) -> None:
    first = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    other = SliceDataset(tiny_dir, crop=CROP, acceleration=6.0, cache_dir=tmp_path, progress=False)
    assert other.cache_dir != first.cache_dir
    assert not torch.equal(other[0].mask, first[0].mask)
    # A file with foreign settings found in this settings' directory is recomputed, not read.
    victim = first.cache_file(first.index[0][0])
    first.close()
    with h5py.File(victim, "a") as handle:
        handle.attrs["settings"] = '{"tampered": true}'
        handle["scale"][0] = -1.0
    rebuilt = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    with h5py.File(victim, "r") as handle:
        assert handle.attrs["settings"] != '{"tampered": true}'
    assert rebuilt[0].scale > 0 and _same(rebuilt[0], SliceDataset(tiny_dir, crop=CROP, progress=False)[0])
    # The key is the k-space, not the file's time: a touched file keeps its entry (a changed one: test_cache_content).
    source = first.index[0][0]
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    touched = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    assert touched.cache_file(source) == victim and touched._cache_valid(source)


def test_lines_dataset_and_determinism(synthetic_dir: Path, tmp_path: Path) -> None:
    a = SliceDataset(synthetic_dir, crop=CROP, cache_dir=tmp_path / "a", progress=False, **LINES)
    b = SliceDataset(synthetic_dir, crop=CROP, cache_dir=tmp_path / "b", progress=False, **LINES)
    assert all(_same(a[i], b[i]) for i in range(len(a)))
    assert (a[0].mask == a[0].mask[:1]).all()
    assert not torch.equal(a[0].mask, a[1].mask)


def test_dataloader_batches(cached: SliceDataset) -> None:
    batch = next(iter(torch.utils.data.DataLoader(cached, batch_size=2)))
    assert batch.input.shape == (2, 2, CROP, CROP)
    assert list(batch.slice_index) == [0, 1]
    mixed = collate([cached[0], cached[1]])  # for volumes whose k-space widths differ
    assert isinstance(mixed, Batch) and mixed.input.shape == (2, 2, CROP, CROP)
    assert len(mixed.mask) == 2 and mixed.scale.dtype == torch.float64


def test_bad_settings(synthetic_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crop"):
        SliceDataset(synthetic_dir, crop=SHAPE[1] + 1, progress=False)
    with pytest.raises(ValueError, match="acceleration"):
        SliceDataset(synthetic_dir, acceleration=1.0, crop=CROP, progress=False)
    with pytest.raises(ValueError, match="center_fraction"):
        SliceDataset(synthetic_dir, mask="lines", center_fraction=1.0, crop=CROP, progress=False)
    with pytest.raises(ValueError, match="mask"):
        SliceDataset(synthetic_dir, mask="spiral", crop=CROP, progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        SliceDataset(tmp_path / "missing", crop=CROP, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        SliceDataset(tmp_path / "empty", crop=CROP, progress=False)


def test_bad_kspace_is_reported(tmp_path: Path) -> None:
    kspace = np.ones((1, 2, 64, 45), np.complex64)
    kspace[0, 0, 0, 0] = np.nan
    with h5py.File(tmp_path / "nan.h5", "w") as handle:
        handle.create_dataset("kspace", data=kspace)
    with pytest.raises(ValueError, match="NaN or Inf"):
        SliceDataset(tmp_path, crop=CROP, cache_dir=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_preprocessing_and_synthesis_leave_global_rngs_alone(tiny_dir: Path, tmp_path: Path) -> None:
    np.random.seed(7)
    torch.manual_seed(7)
    numpy_state, torch_state = np.random.get_state(), torch.get_rng_state().clone()
    make_synthetic(tmp_path / "s", volumes=1, slices=1, coils=2, shape=(32, 27))
    SliceDataset(tiny_dir, crop=CROP, progress=False)[1]
    after = np.random.get_state()
    assert np.array_equal(after[1], numpy_state[1]) and after[2:] == numpy_state[2:]
    assert torch.equal(torch.get_rng_state(), torch_state)
