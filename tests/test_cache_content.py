"""The caches are keyed by content: a copy of a file in another directory reads what the original's run computed;
a changed file never does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import convexrecon.data.dataset as dataset_module
from convexrecon.data.dataset import SliceDataset
from convexrecon.data.digest import DIGESTS, kspace_digest
from convexrecon.data.mapcache import MapCache
from convexrecon.data.masks import MaskFunc

from .conftest import CROP


def _copy(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in sorted(source.glob("*.h5")):
        shutil.copy(path, target / path.name)  # a new modification time, the same bytes
    return target


def _change(path: Path) -> None:
    with h5py.File(path, "a") as handle:
        handle["kspace"][0, 0, 0, 0] += 1.0


def _never(*args, **kwargs):
    raise AssertionError("preprocessed again: the cache was missed")


def test_a_copy_in_another_directory_reads_the_originals_cache(tiny_dir: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    original = SliceDataset(tiny_dir, crop=CROP, cache_dir=cache, progress=False)
    first = original[0]
    copy = _copy(tiny_dir, tmp_path / "copy")
    with monkeypatch.context() as patch:
        patch.setattr(dataset_module, "preprocess_slice", _never)
        again = SliceDataset(copy, crop=CROP, cache_dir=cache, progress=False)
        assert np.array_equal(again[0].input.numpy(), first.input.numpy())
    name = original.index[0][0].name
    assert again.cache_file(copy / name) == original.cache_file(tiny_dir / name)
    recorded = json.loads((cache / DIGESTS).read_text())  # each path's digest is remembered, the copy's too
    assert {str((d / name).resolve()) for d in (tiny_dir, copy)} <= set(recorded)
    # a changed file misses: preprocessed into its own entry, the original's left as it was
    _change(copy / name)
    calls = []
    real = dataset_module.preprocess_slice
    monkeypatch.setattr(dataset_module, "preprocess_slice", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    changed = SliceDataset(copy, crop=CROP, cache_dir=cache, progress=False)
    assert calls and changed.cache_file(copy / name) != original.cache_file(tiny_dir / name)
    assert original.cache_file(tiny_dir / name).is_file()


def test_espirit_maps_are_shared_by_copies_and_not_by_changed_files(tiny_dir: Path, tmp_path: Path) -> None:
    source = sorted(tiny_dir.glob("*.h5"))[0]
    copy = _copy(tiny_dir, tmp_path / "copy") / source.name
    with h5py.File(source, "r") as handle:
        kspace = np.asarray(handle["kspace"][0])
    mask = MaskFunc("poisson", 4.0).for_slice(kspace.shape[-2:], source.name, 0)
    cache = MapCache(tmp_path / "cache")
    first = cache.maps(source, 0, kspace * mask, mask, 16, CROP)
    second = cache.maps(copy, 0, kspace * mask, mask, 16, CROP)
    assert (cache.computed, cache.reused) == (1, 1) and np.array_equal(first, second)
    _change(copy)
    cache.maps(copy, 0, kspace * mask, mask, 16, CROP)
    assert (cache.computed, cache.reused) == (2, 1)


def test_the_digest_is_of_the_kspace(tiny_dir: Path, tmp_path: Path) -> None:
    source = sorted(tiny_dir.glob("*.h5"))[0]
    copy = _copy(tiny_dir, tmp_path / "copy") / source.name
    assert kspace_digest(copy) == kspace_digest(source)
    _change(copy)
    assert kspace_digest(copy) != kspace_digest(source)
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as handle:
        handle["image"] = np.zeros(3)
    with pytest.raises(ValueError, match="'kspace' dataset"):
        kspace_digest(bad)
