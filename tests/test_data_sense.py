"""FFT convention, SENSE operator adjointness, and SENSE images against ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import sigpy
import torch

from convexrecon.data import MaskFunc, synthesize_volume
from convexrecon.mri import (
    SenseOperator,
    calibration_width,
    center_crop,
    channels_to_complex,
    complex_to_channels,
    fft2c,
    ifft2c,
    sense_adjoint,
    sense_forward,
    sense_images,
    sense_normal,
)
from convexrecon.metrics import nmse


def _random_complex(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.complex128) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g)


def test_fft_convention_matches_formula_and_sigpy() -> None:
    x = _random_complex((3, 37, 31), 0)
    expected = np.fft.fftshift(
        np.fft.fftn(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), axes=(-2, -1), norm="ortho"), axes=(-2, -1)
    )
    assert np.allclose(fft2c(x).numpy(), expected, atol=1e-12)
    assert np.allclose(fft2c(x).numpy(), sigpy.fft(x.numpy(), axes=(-2, -1)), atol=1e-12)
    assert torch.allclose(ifft2c(fft2c(x)), x, atol=1e-12)
    assert torch.allclose(torch.linalg.vector_norm(fft2c(x)), torch.linalg.vector_norm(x))  # orthonormal


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_sense_dot_product(dtype: torch.dtype) -> None:
    maps = _random_complex((4, 37, 31), 1, dtype)
    mask = torch.rand((37, 31), generator=torch.Generator().manual_seed(2)) < 0.4
    op = SenseOperator(maps, mask)
    x, y = _random_complex((37, 31), 3, dtype), _random_complex((4, 37, 31), 4, dtype)
    lhs = torch.vdot(op.forward(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    tol = 1e-12 if dtype == torch.complex128 else 1e-5
    assert abs(lhs - rhs) <= tol * abs(lhs)
    batch = torch.stack([x, 2 * x])  # leading batch axes broadcast
    assert torch.allclose(op.forward(batch)[1], 2 * op.forward(x))


def test_sense_operator_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="maps"):
        SenseOperator(torch.ones(4, 8, 8))
    with pytest.raises(ValueError, match="mask"):
        SenseOperator(_random_complex((4, 8, 8), 0), torch.ones(8, 9, dtype=torch.bool))


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
def test_batched_sense_is_the_slice_operator_per_slice(dtype: torch.dtype) -> None:
    """One operator serves a batch of slices (each its own maps and mask), one slice and the functional forms."""
    maps, x, y = _random_complex((3, 4, 17, 12), 6, dtype), _random_complex((3, 17, 12), 7, dtype), \
        _random_complex((3, 4, 17, 12), 8, dtype)
    mask = torch.rand((3, 17, 12), generator=torch.Generator().manual_seed(9)) < 0.5
    op = SenseOperator(maps, mask, spatial_dims=2)
    assert op.image_shape == (17, 12)
    for b in range(3):
        single = SenseOperator(maps[b], mask[b])
        assert torch.equal(op.forward(x)[b], single.forward(x[b]))
        assert torch.equal(op.adjoint(y)[b], single.adjoint(y[b]))
    assert torch.equal(sense_forward(x, maps, mask), op.forward(x))
    assert torch.equal(sense_adjoint(y, maps, mask), op.adjoint(y))
    assert torch.equal(sense_normal(x, maps, mask), op.normal(x))
    shared = SenseOperator(maps, mask[0], spatial_dims=2)  # one mask for every slice
    assert torch.equal(shared.forward(x), SenseOperator(maps, mask[0].expand(3, -1, -1), spatial_dims=2).forward(x))
    dims = (-2, -1)  # the normal operator in ifftshifted coordinates, as data consistency's CG uses it
    shifted = op.shifted_normal()(torch.fft.ifftshift(x, dim=dims))
    tol = 1e-12 if dtype == torch.complex128 else 1e-5
    assert torch.allclose(torch.fft.fftshift(shifted, dim=dims), op.normal(x), atol=tol)


def test_batched_sense_rejects_bad_input() -> None:
    maps = _random_complex((3, 4, 8, 6), 0)
    with pytest.raises(ValueError, match="spatial_dims"):
        SenseOperator(maps, spatial_dims=4)
    with pytest.raises(TypeError, match="maps"):
        SenseOperator(maps[0, 0], spatial_dims=2)
    with pytest.raises(ValueError, match=r"mask.*\(8, 6\) or \(3, 8, 6\)"):
        SenseOperator(maps, torch.ones(2, 8, 6), spatial_dims=2)
    with pytest.raises(ValueError, match="mask"):
        SenseOperator(maps, np.ones((8, 6)), spatial_dims=2)


def test_channels_and_crop() -> None:
    x = _random_complex((2, 37, 31), 5, torch.complex64)
    channels = complex_to_channels(x)
    assert channels.shape == (2, 2, 37, 31) and channels.dtype == torch.float32
    assert torch.equal(channels_to_complex(channels), x)
    cropped = center_crop(x, (20, 21))
    assert cropped.shape == (2, 20, 21)
    assert cropped[0, 10, 10] == x[0, 37 // 2, 31 // 2]  # the centre stays the centre
    with pytest.raises(ValueError, match="crop"):
        center_crop(x, (38, 31))


def test_calibration_width() -> None:
    poisson = MaskFunc("poisson", 4.0, calib=16)((64, 45), 0)
    assert calibration_width(poisson, 16) == 16
    lines = MaskFunc("lines", 4.0, center_fraction=0.2)((64, 45), 0)
    assert calibration_width(lines, 45) >= 9
    with pytest.raises(ValueError, match="centre"):
        calibration_width(np.zeros((8, 8), bool), 8)


@pytest.mark.parametrize("kind", ["poisson", "lines"])
def test_noiseless_target_matches_ground_truth(kind: str) -> None:
    volume = synthesize_volume((64, 45), slices=1, coils=6, seed=11, snr=None)
    # 0.33 × 45 → a 15-line centre band, the width of fastMRI knee's 0.04 × 368
    # (ESPIRiT needs it); at 45 columns that allows acceleration 3.
    func = MaskFunc(kind, 3.0 if kind == "lines" else 4.0, center_fraction=0.33, calib=16)
    mask = func.for_slice((64, 45), "t.h5", 0)
    images = sense_images(volume.kspace[0], mask, func.calibration_limit(mask.shape), crop=31)
    truth = center_crop(volume.images[0], (31, 31))
    target = images.target.numpy() * images.scale
    assert nmse(np.abs(truth), np.abs(target)) < 1e-3  # equal up to the maps' phase
    assert images.input.abs().max() == pytest.approx(1.0)  # the scale convention
    assert images.input.shape == images.target.shape == (31, 31)
    assert images.maps.shape == (6, 31, 31)


def test_sense_images_reject_bad_crop_and_mask() -> None:
    volume = synthesize_volume((64, 45), slices=1, coils=2, seed=0, snr=None)
    mask = MaskFunc("poisson", 4.0, calib=16)((64, 45), 0)
    with pytest.raises(ValueError, match="crop"):
        sense_images(volume.kspace[0], mask, 16, crop=46)
    with pytest.raises(ValueError, match="mask"):
        sense_images(volume.kspace[0], mask[:, :-1], 16, crop=16)
    narrow = MaskFunc("lines", 4.0, center_fraction=0.1)((64, 45), 0)
    with pytest.raises(ValueError, match="center_fraction"):
        sense_images(volume.kspace[0], narrow, 45, crop=16)


def test_espirit_support_covers_the_object_and_the_sense_model_explains_the_data() -> None:
    """The default eigenvalue crop keeps the maps on the whole object of a noiseless synthetic knee slice, so
    the SENSE model explains its k-space up to ESPIRiT's calibration error; sigpy's 0.95 cut into the object
    there (run_knee's default geometry: 8 coils, 160 x 368, 16 x 16 calibration square)."""
    from convexrecon.data.masks import poisson_disc, slice_seed
    from convexrecon.mri.espirit import ESPIRIT_CROP, espirit_maps
    from convexrecon.data.synthetic import synthesize_volume

    volume = synthesize_volume((160, 368), slices=4, coils=8, seed=slice_seed(0, "volume", 0), snr=None)
    k, image = volume.kspace[3], volume.images[3]
    inside = np.abs(image) > 0.05 * np.abs(image).max()
    masked = k * poisson_disc((160, 368), 4.0, 16, seed=3)
    kt = torch.from_numpy(k)
    residual, cut = {}, {}
    for crop in (ESPIRIT_CROP, 0.95):
        maps = espirit_maps(masked, 16, crop=crop)
        op = SenseOperator(torch.from_numpy(maps))
        residual[crop] = float((op.forward(op.adjoint(kt)) - kt).norm() / kt.norm())
        cut[crop] = float(((np.abs(maps).sum(0) == 0) & inside).mean())
    assert cut[ESPIRIT_CROP] < 2e-3 and residual[ESPIRIT_CROP] < 0.08  # measured 0.0008, 0.060
    assert cut[0.95] > 5e-3 and residual[0.95] > 0.15  # measured 0.0119, 0.207
