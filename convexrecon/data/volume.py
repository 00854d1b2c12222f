r"""3D Cartesian volumes: fully sampled readout, Poisson-disc undersampling over (ky, kz).

In a 3D Cartesian acquisition the readout ``kx`` is always fully sampled and
the two phase-encode directions ``(ky, kz)`` are undersampled, which is where
variable-density Poisson-disc sampling is used in practice. Here

* k-space is ``(coils, X, Y, Z)`` complex (readout first), the image volume
  ``(X, Y, Z)``; the FFT is centred and orthonormal over the last three axes
  (:func:`fft3c`, the 3D version of the convention in ``docs/design.md`` §8);
* the mask is one ``sigpy.mri.poisson`` pattern over ``(ky, kz)``
  (:func:`convexrecon.data.masks.poisson_disc`, fully sampled ``calib x calib``
  centre), repeated along the readout;
* sensitivities are estimated per readout position: k-space is inverse
  Fourier transformed along the readout (hybrid space ``(coils, x, ky, kz)``)
  and ``sigpy.mri.app.EspiritCalib`` runs on every ``x`` plane from its
  calibration square (:func:`readout_espirit`);
* the SENSE model is :math:`A v = (M\,F_3(S_c v))_c`; the zero-filled input
  is :math:`A^H(Mk)`, the target the same combination of fully sampled
  k-space (:class:`~convexrecon.mri.sense.SenseOperator`, :func:`volume_images`), both divided
  by the maximum magnitude of the zero-filled volume.

The embedded default data set (:func:`synthesize_volume3d`,
:func:`make_synthetic_volumes`) stacks slices of the 2D coronal knee-like
generator of :mod:`convexrecon.data.synthetic` along the readout axis, which
runs anterior to posterior: anatomy (bones, notch, menisci, ligaments,
vessels) changes continuously along ``x``, and the fine texture (muscle
fibres, trabeculae, septa) is the same in every plane, as if it ran straight
through the slab. Coils are the 2D birdcage maps, varying along ``x``. It
shares the 2D set's limits (contrasts are typical relative values, no
artefact physics).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch

from convexrecon.io import atomic_path
from convexrecon.data.fastmri import as_complex64, complex_layout
from convexrecon.data.masks import poisson_disc, slice_seed
from convexrecon.mri.classical import fixed_numpy_seed
from convexrecon.mri.espirit import calibration_width, espirit_maps, healthy_maps, map_coverage, warn_if_fallback
from convexrecon.mri.fft import channels_to_complex, complex_to_channels, fftnc, ifftnc
from convexrecon.mri.sense import SenseOperator
from convexrecon.data.synthetic import INTENSITY, birdcage_maps, phantom_slice

DEFAULT_SHAPE = (24, 48, 40)


def fft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3D FFT over the last three axes."""
    return fftnc(x, 3)


def ifft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3D inverse FFT over the last three axes."""
    return ifftnc(x, 3)


def _check_kspace(kspace: np.ndarray) -> np.ndarray:
    kspace = np.asarray(kspace)
    if kspace.ndim != 4 or not np.iscomplexobj(kspace):
        raise ValueError(f"The 'kspace' must be complex (coils, X, Y, Z). Got {kspace.dtype} with shape {kspace.shape}.")
    return kspace


def _check_mask(mask: np.ndarray, kspace: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != kspace.shape[-2:]:
        raise ValueError(f"The 'mask' must be the (ky, kz) pattern of shape {kspace.shape[-2:]}. Got {mask.shape} instead.")
    return mask.astype(bool)


def phase_encode_mask(shape: tuple[int, int], acceleration: float = 4.0, calib: int = 16, seed: int = 0) -> np.ndarray:
    """Poisson-disc mask over ``(ky, kz)`` with a fully sampled ``calib x calib`` centre (``sigpy.mri.poisson``).

    On small grids sigpy's sampler sometimes fails to reach the rate for a seed
    (about 1 seed in 8 on 48 x 40); :func:`~convexrecon.data.masks.poisson_disc` then
    tries ``seed + 1, seed + 2, ...`` in turn (at most 16), so the mask stays a
    function of ``seed``.
    """
    return poisson_disc(shape, acceleration, calib, seed)


def readout_espirit(kspace: np.ndarray, mask: np.ndarray, calib: int = 16) -> np.ndarray:
    """ESPIRiT maps ``(coils, X, Y, Z)``, one 2D calibration per readout position, that pass the coil-map
    health check.

    The masked k-space is inverse Fourier transformed along the readout; every
    ``x`` plane ``(coils, ky, kz)`` then holds the fully sampled calibration
    square of the mask, from which :func:`convexrecon.mri.espirit.espirit_maps`
    (``sigpy.mri.app.EspiritCalib``) estimates that plane's maps.

    The check is the 2-D path's (:func:`convexrecon.mri.espirit.healthy_maps`), on
    the whole volume: the maps must hold at least
    :data:`~convexrecon.mri.espirit.MIN_COVERAGE` of the volume's object energy
    (:func:`~convexrecon.mri.espirit.map_coverage` over every plane, so planes
    with little signal weigh little). A calibration square too narrow for the
    standard kernel gets the fallback kernel with a
    :class:`~convexrecon.errors.DataWarning`; one too narrow for both, or maps
    that miss the object, a ``ValueError`` naming the width found and the width
    that works. Never silently empty maps (black volumes).
    """
    kspace = _check_kspace(kspace)
    mask = _check_mask(mask, kspace)
    width = calibration_width(mask, calib)
    masked = torch.from_numpy((kspace * mask).astype(np.complex64))
    hybrid = torch.fft.fftshift(torch.fft.ifft(torch.fft.ifftshift(masked, dim=1), dim=1, norm="ortho"), dim=1)
    hybrid = hybrid.numpy()

    def estimate(kernel: int) -> np.ndarray:
        return np.stack([espirit_maps(hybrid[:, x], width, kernel_width=kernel) for x in range(kspace.shape[1])],
                        axis=1)

    result = healthy_maps(estimate, lambda maps: map_coverage(maps, hybrid, width), width)
    warn_if_fallback(result, width)
    return result.maps


class VolumeImages(NamedTuple):
    """SENSE images of one volume, divided by ``scale`` (physical = stored × scale).

    ``input`` and ``target`` are ``(X, Y, Z)`` complex64, ``maps`` ``(coils, X, Y, Z)``,
    ``mask`` the ``(Y, Z)`` pattern, ``scale`` the maximum magnitude of the zero-filled volume.
    """

    input: torch.Tensor
    target: torch.Tensor
    maps: np.ndarray
    mask: np.ndarray
    scale: float


def volume_images(kspace: np.ndarray, mask: np.ndarray, calib: int = 16, maps: np.ndarray | None = None) -> VolumeImages:
    """Zero-filled SENSE input and fully sampled SENSE target of one volume (ESPIRiT unless ``maps``)."""
    kspace = _check_kspace(kspace)
    mask = _check_mask(mask, kspace)
    if maps is None:
        maps = readout_espirit(kspace, mask, calib)
    op = SenseOperator(torch.from_numpy(np.asarray(maps, dtype=np.complex64)))
    full = torch.from_numpy(kspace.astype(np.complex64))
    zero_filled = op.adjoint(full * torch.from_numpy(mask))
    target = op.adjoint(full)
    scale = float(zero_filled.abs().max()) or 1.0
    return VolumeImages(zero_filled / scale, target / scale, np.asarray(maps, dtype=np.complex64), mask, scale)


def to_channels(volume: torch.Tensor) -> torch.Tensor:
    """``(X, Y, Z)`` complex → ``(2, X, Y, Z)`` real (real, imaginary)."""
    return complex_to_channels(volume, spatial_dims=3)


def from_channels(volume: torch.Tensor) -> torch.Tensor:
    """``(2, X, Y, Z)`` real → ``(X, Y, Z)`` complex."""
    if volume.ndim != 4 or volume.shape[0] != 2:
        raise ValueError(f"The volume must have shape (2, X, Y, Z). Got {tuple(volume.shape)} instead.")
    return channels_to_complex(volume, spatial_dims=3)


class SyntheticVolume3D(NamedTuple):
    """Ground truth ``(X, Y, Z)``, coil maps ``(coils, X, Y, Z)`` and k-space ``(coils, X, Y, Z)``, complex64."""

    image: np.ndarray
    maps: np.ndarray
    kspace: np.ndarray


def synthesize_volume3d(shape: tuple[int, int, int] = DEFAULT_SHAPE, coils: int = 8, seed: int = 0,
                        snr: float | None = 25.0) -> SyntheticVolume3D:
    """One synthetic knee-like volume; readout ``X`` anterior to posterior (see the module doc).

    ``snr`` is ``mean(|x| over the object) / noise std`` per coil (None: noiseless).
    """
    if len(shape) != 3 or shape[0] < 1 or min(shape[1:]) < 8:
        raise ValueError(f"The 'shape' parameter must be three ints (X >= 1, Y >= 8, Z >= 8). Got {tuple(shape)} instead.")
    if snr is not None and not snr > 0:
        raise ValueError(f"The 'snr' parameter must be > 0 or None. Got {snr} instead.")
    nx, ny, nz = (int(n) for n in shape)
    positions = np.linspace(-0.6, 0.6, nx)
    image = np.stack([phantom_slice((ny, nz), seed, float(z), 0) for z in positions]) * INTENSITY
    maps = np.stack([birdcage_maps(coils, (ny, nz), 0.5 * float(z)) for z in positions], axis=1)
    kspace = fft3c(torch.from_numpy(maps * image[None])).numpy()
    if snr is not None:
        magnitude = np.abs(image)
        sigma = magnitude[magnitude > 0.05 * magnitude.max()].mean() / snr
        noise = np.random.default_rng([seed, 103]).standard_normal(kspace.shape + (2,), dtype=np.float32)
        kspace = kspace + (sigma / np.sqrt(2)) * (noise[..., 0] + 1j * noise[..., 1])
    return SyntheticVolume3D(image.astype(np.complex64), maps.astype(np.complex64), kspace.astype(np.complex64))


def make_synthetic_volumes(root: str | Path, volumes: int = 5, shape: tuple[int, int, int] = DEFAULT_SHAPE,
                           coils: int = 8, seed: int = 0, snr: float | None = 25.0) -> list[Path]:
    """Write ``volume_synth_{seed}_{v:04d}.h5`` files (dataset ``kspace`` (coils, X, Y, Z) complex64), atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(volumes):
        subject = slice_seed(seed, "volume3d", v)
        data = synthesize_volume3d(shape, coils, subject, snr)
        path = root / f"volume_synth_{seed}_{v:04d}.h5"
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
            handle.create_dataset("kspace", data=data.kspace)
            handle.attrs["layout"] = "coils, kx (readout, fully sampled), ky, kz"
            handle.attrs["subject"] = int(subject)
        paths.append(path)
    return paths


def read_kspace(path: str | Path) -> np.ndarray:
    """The ``kspace`` dataset of a volume file, ``(coils, X, Y, Z)`` complex64 (stored in any layout of
    :func:`~convexrecon.data.fastmri.complex_layout`)."""
    with h5py.File(path, "r") as handle:
        if "kspace" not in handle:
            raise KeyError(f"The file {path} has no 'kspace' dataset (expected (coils, X, Y, Z) complex).")
        dataset = handle["kspace"]
        layout = complex_layout(dataset.dtype, dataset.shape)
        data = dataset[()] if layout is None else as_complex64(dataset[()], layout)
        return _check_kspace(data).astype(np.complex64)


class VolumeSet(NamedTuple):
    """Stacked network inputs and targets ``(N, 2, X, Y, Z)`` (stored scale), scales ``(N,)`` and per-volume images."""

    inputs: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    names: list[str]
    images: list[VolumeImages]
    kspace: list[np.ndarray]


def load_volume_set(paths: list[Path], acceleration: float = 4.0, calib: int = 16, seed: int = 0) -> VolumeSet:
    """Mask (seeded by file name), ESPIRiT and SENSE images of every volume file."""
    if not paths:
        raise ValueError("load_volume_set needs at least one volume file.")
    images, spaces = [], []
    for path in paths:
        kspace = read_kspace(path)
        mask = phase_encode_mask(kspace.shape[-2:], acceleration, calib, slice_seed(seed, Path(path).name, 0))
        images.append(volume_images(kspace, mask, calib))
        spaces.append(kspace)
    inputs = torch.stack([to_channels(im.input) for im in images])
    targets = torch.stack([to_channels(im.target) for im in images])
    scales = torch.tensor([im.scale for im in images], dtype=torch.float64)
    return VolumeSet(inputs, targets, scales, [Path(p).name for p in paths], images, spaces)


def l1_wavelet_volume(kspace: np.ndarray, images: VolumeImages, lamda: float, max_iter: int = 50) -> np.ndarray:
    """3D L1-wavelet compressed sensing (``sigpy.mri.app.L1WaveletRecon``), stored scale, zero outside the maps."""
    from sigpy.mri.app import L1WaveletRecon

    if not lamda > 0:
        raise ValueError(f"The 'lamda' parameter must be > 0. Got {lamda} instead.")
    weights = np.broadcast_to(images.mask, kspace.shape[1:]).astype(np.float32)
    data = (kspace * images.mask / images.scale).astype(np.complex64)
    with fixed_numpy_seed():
        x = L1WaveletRecon(data, images.maps, lamda=lamda, weights=weights, max_iter=max_iter,
                           show_pbar=False).run()
    support = (np.abs(images.maps) ** 2).sum(axis=0) > 0
    return np.asarray(x) * support
