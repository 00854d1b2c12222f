"""Coil-map health: a narrow calibration region never gives silently empty maps (lines and Poisson, several sizes)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from convexrecon.cli import main
from convexrecon.data.masks import MaskFunc
from convexrecon.data.synthetic import synthesize_volume
from convexrecon.errors import DataWarning
from convexrecon.mri.espirit import (
    ESPIRIT_KERNEL, MIN_COVERAGE, calibration_width, coil_maps, espirit_maps, map_coverage, working_width,
)
from convexrecon.mri.fft import ifft2c

from .conftest import CROP, SHAPE, save_tiny_cnn


def _mask(kind: str, shape: tuple[int, int], width: int) -> np.ndarray:
    """A 4x mask whose fully sampled centre is ``width`` wide."""
    func = MaskFunc("lines", 4.0, (width + 0.4) / shape[1]) if kind == "lines" else MaskFunc("poisson", 4.0, calib=width)
    return func.for_slice(shape, "file.h5", 0)


def _sense_psnr(maps: np.ndarray, kspace: np.ndarray, truth: np.ndarray) -> float:
    """PSNR (dB, least-squares scaled magnitudes) of the fully sampled SENSE image with ``maps`` against ``truth``."""
    image = np.abs((np.conj(maps) * ifft2c(torch.from_numpy(kspace)).numpy()).sum(axis=0)).ravel()
    truth = np.abs(truth).ravel()
    image = image * (image @ truth) / (image @ image)
    return float(10 * np.log10((truth ** 2).sum() / ((image - truth) ** 2).sum()))


@pytest.mark.parametrize("shape,coils", [((160, 92), 6), ((240, 138), 8)])
@pytest.mark.parametrize("kind", ["lines", "poisson"])
def test_narrow_calibration_gets_healthy_maps_or_a_loud_warning(shape, coils, kind) -> None:
    volume = synthesize_volume(shape, slices=1, coils=coils, seed=3)
    kspace, truth = volume.kspace[0], volume.images[0]
    wide = _mask(kind, shape, 20)
    reference = _sense_psnr(coil_maps(kspace * wide, calibration_width(wide, 20)), kspace, truth)
    for width in (8, 10):
        mask = _mask(kind, shape, width)
        found = calibration_width(mask, min(shape))
        assert width <= found < 2 * ESPIRIT_KERNEL  # random lines may widen the band by touching it
        # what the default kernel alone gives here: maps that lose most of the image (the silent garbage)
        plain = espirit_maps(kspace * mask, found, kernel_width=ESPIRIT_KERNEL)
        assert map_coverage(plain, kspace * mask, found) < MIN_COVERAGE
        with pytest.warns(DataWarning, match=rf"calibration region is {found} wide.*3-pixel kernel"):
            maps = coil_maps(kspace * mask, found)
        assert map_coverage(maps, kspace * mask, found) >= MIN_COVERAGE
        assert _sense_psnr(maps, kspace, truth) > reference - 6.0


def test_wide_calibration_keeps_the_standard_maps_without_a_warning() -> None:
    volume = synthesize_volume((160, 92), slices=1, coils=6, seed=3)
    mask = _mask("poisson", (160, 92), 16)
    masked = volume.kspace[0] * mask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        maps = coil_maps(masked, 16)
    assert np.array_equal(maps, espirit_maps(masked, 16))
    assert map_coverage(maps, masked, 16) >= MIN_COVERAGE


@pytest.mark.parametrize("kind", ["lines", "poisson"])
@pytest.mark.parametrize("width", [3, 6, 7])
def test_too_narrow_calibration_is_an_error_naming_both_widths(kind, width) -> None:
    volume = synthesize_volume((64, 45), slices=1, coils=6, seed=3)
    mask = _mask(kind, (64, 45), width)
    found = calibration_width(mask, 64)
    assert found <= width < working_width(3)
    with pytest.raises(ValueError, match=rf"region is {found} wide: coil maps need a calibration region at least "
                                         rf"{working_width(3)} wide \({working_width(ESPIRIT_KERNEL)} for .*--calib"):
        coil_maps(volume.kspace[0] * mask, found)


def test_maps_that_fail_the_check_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import convexrecon.mri.espirit as espirit

    volume = synthesize_volume((64, 45), slices=1, coils=6, seed=3)
    mask = _mask("poisson", (64, 45), 16)
    monkeypatch.setattr(espirit, "espirit_maps", lambda k, *a, **kw: np.zeros_like(k))
    with pytest.raises(ValueError, match=r"region is 16 wide: the coil maps estimated from it cover 0% of the object.*width is not the cause"):
        coil_maps(volume.kspace[0] * mask, 16)
    with pytest.raises(ValueError, match=r"region is 10 wide: the coil maps .* cover 0% .*at least 14 wide"):
        coil_maps(volume.kspace[0] * mask, 10)


def test_coverage_counts_the_object_energy_inside_the_support() -> None:
    kspace = np.zeros((2, 8, 8), np.complex64)
    kspace[0, 4, 4] = 1.0  # a constant image: every pixel is object
    maps = np.zeros((2, 8, 8), np.complex64)
    maps[:, :4] = 1.0
    assert map_coverage(maps, kspace, 2) == pytest.approx(0.5)
    assert map_coverage(np.ones_like(maps), kspace, 2) == 1.0
    assert map_coverage(maps, np.zeros_like(kspace), 2) == 1.0


def test_test_set_file_with_8_centre_lines_is_not_black(synthetic_dir: Path, tmp_path: Path) -> None:
    """A challenge-style file (zeroed k-space, 8 fully sampled centre lines) through `reconstruct`."""
    src = sorted(synthetic_dir.glob("*.h5"))[0]
    width = SHAPE[1]
    columns = np.zeros(width, bool)
    columns[::4] = True
    columns[width // 2 - 4: width // 2 + 4] = True
    data = tmp_path / "test"
    data.mkdir()
    path = data / src.name
    shutil.copy(src, path)
    with h5py.File(path, "r+") as handle:
        kspace = handle["kspace"][()]
        kspace[..., ~columns] = 0
        handle["kspace"][...] = kspace
    model = save_tiny_cnn(tmp_path / "model", {"mask": "lines", "acceleration": 4.0, "crop": CROP,
                                               "center_fraction": 0.08, "seed": 0})
    for out in ("r", "again"):  # the second run reads the maps from the cache and warns again
        with pytest.warns(DataWarning, match=r"calibration region is 8 wide.*3-pixel kernel") as log:
            code = main(["reconstruct", "--model", str(model), "--data", str(data), "--out", str(tmp_path / out),
                         "--cache-dir", str(tmp_path / "cache")])
        assert code == 0
        from_cache = any("read from the cache" in str(w.message) for w in log)
        assert from_cache == (out == "again")
        with h5py.File(tmp_path / out / src.name, "r") as handle:
            image = handle["reconstruction"][()]
        dark = np.mean(image < 0.05 * image.max())
        assert dark < 0.5, f"{dark:.1%} of the reconstruction is black"


def test_cached_fallback_maps_warn_on_every_run(tmp_path: Path) -> None:
    """Maps of a narrow band estimated with the fallback kernel warn when read back from the cache, too."""
    from convexrecon.data.mapcache import MapCache
    from convexrecon.data.synthetic import make_synthetic

    (source,) = make_synthetic(tmp_path / "data", volumes=1, slices=1, coils=6, seed=3, shape=(160, 92))
    with h5py.File(source, "r") as handle:
        kspace = handle["kspace"][0]
    mask = _mask("lines", (160, 92), 8)
    found = calibration_width(mask, 92)
    assert found < working_width(ESPIRIT_KERNEL)
    maps = []
    for run in range(2):  # two runs (two cache objects) on the same data and cache directory
        cache = MapCache(tmp_path / "cache")
        with pytest.warns(DataWarning, match=rf"calibration region is {found} wide.*3-pixel kernel"):
            maps.append(cache.maps(source, 0, kspace * mask, mask, 92, None))
        assert (cache.computed, cache.reused) == ((1, 0) if run == 0 else (0, 1))
    assert np.array_equal(maps[0], maps[1])
    assert map_coverage(maps[1], kspace * mask, found) >= MIN_COVERAGE
    # standard maps read back stay silent
    wide = _mask("poisson", (160, 92), 16)
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            MapCache(tmp_path / "cache").maps(source, 0, kspace * wide, wide, 16, 64)
