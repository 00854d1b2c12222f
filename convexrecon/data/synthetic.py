"""Deterministic synthetic multi-coil data in the fastMRI HDF5 layout.

The project's default data set: no real MRI data may be downloaded, so
:func:`make_synthetic` writes ``file_synth_XXXX.h5`` files that the fastMRI
reader reads exactly like real ones (``kspace`` slices × coils × H × W
complex64 with a 2× oversampled readout, ``reconstruction_rss``,
``ismrmrd_header`` XML, attributes ``acquisition``, ``max``, ``norm``,
``patient_id``).

The phantom (one "subject" per volume seed) is a knee-like cross-section:

* a lobed limb outline with a subcutaneous fat ring;
* muscle with fibre texture and thin dark fascial septa (level lines of a
  smooth random field);
* two or three bones with a dark cortical rim, fatty marrow and trabecular
  texture, capped by a thin bright cartilage band;
* small vessels and fluid pockets (a few pixels across);
* smooth multiplicative intensity variation (receive-bias-like contrast) and
  a smooth background phase (up to about ±π);
* anatomy that changes continuously from slice to slice.

Coils: birdcage-like ring of loops around the limb (three rows along z),
sensitivity falling off with distance as a loop's near field, with a phase
that winds around each loop; normalised to unit root-sum-of-squares, so the
SENSE combination of noiseless data is exactly the phantom image.
Noise: complex white Gaussian in k-space with per-coil standard deviation
``mean(|x| over the object) / snr`` (orthonormal FFT: the same in image space).

What it lacks: real tissue relaxation contrast and partial-volume physics,
anatomically correct topology, motion, flow and chemical-shift artefacts,
noise correlation between coils, fastMRI's zero-padded phase-encode edges,
and the detailed texture statistics of real tissue. Learned reconstructions
trained on it should not be expected to transfer to real scans.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch

from convexrecon.io import atomic_path
from convexrecon.data.masks import slice_seed
from convexrecon.data.sense import center_crop, fft2c, ifft2c

FULL_SHAPE = (640, 368)
INTENSITY = 3e-4  # order of magnitude of fastMRI knee image values


class SyntheticVolume(NamedTuple):
    """One synthetic volume: ground truth, coil maps and k-space.

    Attributes
    ----------
    images : numpy.ndarray
        ``(slices, H, W)`` complex64 ground-truth images (with background phase).
    maps : numpy.ndarray
        ``(coils, H, W)`` complex64 coil sensitivities, unit root-sum-of-squares.
    kspace : numpy.ndarray
        ``(slices, coils, H, W)`` complex64 fully sampled k-space (noisy unless
        ``snr`` is None).
    """

    images: np.ndarray
    maps: np.ndarray
    kspace: np.ndarray


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in units of a quarter readout: the recon crop is [-1, 1]."""
    height, width = shape
    unit = height / 4
    y = (np.arange(height, dtype=np.float32) - height // 2) / unit
    x = (np.arange(width, dtype=np.float32) - width // 2) / unit
    return np.meshgrid(y, x, indexing="ij")


def _smooth_field(
    rng: np.random.Generator, y: np.ndarray, x: np.ndarray, z: float, modes: int, max_freq: float
) -> np.ndarray:
    """Zero-mean, unit-scale random field continuous in (y, x, z)."""
    freq = rng.uniform(-max_freq, max_freq, size=(modes, 3)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=modes).astype(np.float32)
    amp = rng.standard_normal(modes).astype(np.float32) / np.sqrt(modes)
    field = np.zeros_like(y)
    for (fy, fx, fz), p, a in zip(freq, phase, amp):
        field += a * np.cos(2 * np.pi * (fy * y + fx * x + fz * z) + p)
    return field


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale: float, anisotropy: float) -> np.ndarray:
    """Band-limited Gaussian noise of correlation length ``scale`` pixels, unit std."""
    noise = rng.standard_normal(shape).astype(np.float32)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.rfftfreq(shape[1])[None, :]
    envelope = np.exp(-0.5 * ((ky * scale * anisotropy) ** 2 + (kx * scale / anisotropy) ** 2) * (2 * np.pi) ** 2)
    field = np.fft.irfft2(np.fft.rfft2(noise) * envelope, s=shape).astype(np.float32)
    return field / (field.std() + 1e-12)


def _soft(d: np.ndarray, width: float) -> np.ndarray:
    """Smooth step: 1 inside (d < 0), 0 outside, edge ``width`` wide."""
    return 0.5 * (1 - np.tanh(d / width))


def phantom_slice(
    shape: tuple[int, int], subject: int, z: float, texture_seed: int
) -> np.ndarray:
    """One complex knee-like slice at position ``z`` in [-1, 1] of ``subject``.

    Parameters
    ----------
    shape : tuple of int
        Image grid ``(H, W)``; the object lies in the central ``H/2 × H/2``.
    subject : int
        Subject seed: anatomy, contrast and phase are functions of it.
    z : float
        Slice position; anatomy changes continuously with ``z``.
    texture_seed : int
        Seed of the fine texture of this slice.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` complex64 image, values of order 1.
    """
    y, x = _grid(shape)
    px = 4 / shape[0]  # one pixel in grid units
    rng = np.random.default_rng([subject, 17])  # subject-level anatomy, same for every slice
    tex = np.random.default_rng([subject, texture_seed, 29])

    # Limb outline: lobed ellipse that slowly changes with z.
    theta, radius = np.arctan2(y, x), np.hypot(y / 0.88, x / 0.8)
    lobes = sum(rng.normal(0, 0.04) * np.cos(k * theta + rng.uniform(0, 6.3) + 0.5 * z * k) for k in range(2, 6))
    outline = radius - (0.9 + 0.05 * z) * (1 + lobes)
    body = _soft(outline, 1.2 * px)
    muscle_region = _soft(outline + 0.07 + 0.02 * np.cos(3 * theta + rng.uniform(0, 6.3)), 1.5 * px)
    fat = body - muscle_region

    # Muscle: fibre texture and fascial septa.
    septa_field = _smooth_field(rng, y, x, z, 12, 1.6)
    septa = np.exp(-((septa_field / (0.6 * px * 12)) ** 2))
    fibres = _texture(tex, shape, scale=2.0, anisotropy=2.5)
    image = fat * (0.9 + 0.05 * _texture(tex, shape, 3.0, 1.0))
    image += muscle_region * (0.45 + 0.04 * fibres) * (1 - 0.6 * septa)

    # Bones: cortical rim, marrow with trabeculae, cartilage cap.
    trabeculae = _texture(tex, shape, scale=1.2, anisotropy=1.0)
    for b in range(int(rng.integers(2, 4))):
        cy, cx = rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35) + 0.25 * (b - 1)
        ry, rx = rng.uniform(0.14, 0.24) * (1 + 0.3 * z * (-1) ** b), rng.uniform(0.12, 0.2)
        d_bone = np.hypot((y - cy) / ry, (x - cx) / rx) - 1
        bone_outer = _soft(d_bone * min(ry, rx), 0.8 * px)
        marrow = _soft((d_bone + 0.12) * min(ry, rx), 0.8 * px)
        cortex = bone_outer - marrow
        cap = _soft(np.abs(d_bone * min(ry, rx) - 0.02) - 0.008, 0.6 * px) * (
            np.cos(np.arctan2(y - cy, x - cx) - rng.uniform(0, 6.3)) > 0.2
        )
        inside = muscle_region * bone_outer
        image = image * (1 - inside) + inside * (0.04 * cortex + marrow * (0.78 + 0.12 * np.tanh(trabeculae)))
        image = image * (1 - muscle_region * cap) + muscle_region * cap * 0.72

    # Vessels and fluid pockets: small structures of a few pixels.
    for _ in range(int(rng.integers(6, 12))):
        cy, cx = rng.uniform(-0.7, 0.7), rng.uniform(-0.6, 0.6)
        r = rng.uniform(1.5, 5.0) * px
        level = rng.choice([0.05, 1.0])
        drift = 0.05 * z * rng.normal()
        spot = _soft(np.hypot(y - cy - drift, x - cx) - r, 0.5 * px) * muscle_region
        image = image * (1 - spot) + spot * level

    # Smooth contrast variation and background phase.
    bias = np.exp(0.2 * _smooth_field(rng, y, x, z, 8, 0.5))
    phase = 0.7 * np.pi * _smooth_field(rng, y, x, z, 6, 0.4)
    return (np.clip(image, 0, None) * bias * np.exp(1j * phase)).astype(np.complex64)


def birdcage_maps(coils: int, shape: tuple[int, int], z: float = 0.0) -> np.ndarray:
    """Birdcage-like coil sensitivities, unit root-sum-of-squares.

    Loops sit on an ellipse around the limb, in three rows along z; each has a
    near-field magnitude ``(d² + h²)^{-3/4}`` and a phase winding around it.

    Returns
    -------
    numpy.ndarray
        ``(coils, H, W)`` complex64.
    """
    if coils < 1:
        raise ValueError(f"The 'coils' parameter must be >= 1. Got {coils} instead.")
    y, x = _grid(shape)
    maps = np.empty((coils,) + tuple(shape), dtype=np.complex64)
    for c in range(coils):
        angle = 2 * np.pi * c / coils
        cy, cx = 1.25 * np.sin(angle), 1.1 * np.cos(angle)
        height = 0.4 + 0.35 * abs(((c % 3) - 1) - z)
        dy, dx = y - cy, x - cx
        magnitude = (dy**2 + dx**2 + height**2) ** -0.75
        maps[c] = magnitude * np.exp(1j * (np.arctan2(dy, dx) + angle))
    maps /= np.sqrt((np.abs(maps) ** 2).sum(axis=0, keepdims=True))
    return maps


def synthesize_volume(
    shape: tuple[int, int] = FULL_SHAPE,
    slices: int = 8,
    coils: int = 15,
    seed: int = 0,
    snr: float | None = 25.0,
) -> SyntheticVolume:
    """Ground truth, coil maps and k-space of one synthetic volume.

    Parameters
    ----------
    shape : tuple of int
        k-space (and image) grid ``(H, W)``, fastMRI knee ``(640, 368)``.
    slices, coils : int
        Volume size.
    seed : int
        Subject seed; different seeds give different anatomy.
    snr : float or None
        ``mean(|x| over the object) / noise std`` per coil; None: noiseless.

    Returns
    -------
    SyntheticVolume
    """
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"The 'shape' parameter must be two ints >= 8. Got {shape} instead.")
    if slices < 1:
        raise ValueError(f"The 'slices' parameter must be >= 1. Got {slices} instead.")
    if snr is not None and not snr > 0:
        raise ValueError(f"The 'snr' parameter must be > 0 or None. Got {snr} instead.")
    zs = np.linspace(-0.6, 0.6, slices) if slices > 1 else np.zeros(1)
    images = np.stack([phantom_slice(shape, seed, float(z), k) for k, z in enumerate(zs)]) * INTENSITY
    maps = birdcage_maps(coils, shape)
    coil_images = torch.from_numpy(images[:, None] * maps[None])
    kspace = fft2c(coil_images).numpy().astype(np.complex64)
    if snr is not None:
        magnitude = np.abs(images)
        sigma = magnitude[magnitude > 0.05 * magnitude.max()].mean() / snr
        rng = np.random.default_rng([seed, 101])
        noise = rng.standard_normal(kspace.shape + (2,), dtype=np.float32) * (sigma / np.sqrt(2))
        kspace = kspace + (noise[..., 0] + 1j * noise[..., 1]).astype(np.complex64)
    return SyntheticVolume(images.astype(np.complex64), maps, kspace.astype(np.complex64))


def ismrmrd_header(shape: tuple[int, int], recon: tuple[int, int]) -> bytes:
    """A minimal ISMRMRD XML header with fastMRI's encoding fields."""
    height, width = shape
    fov_y = 140.0 * width / recon[1]
    enc = (
        f"<matrixSize><x>{height}</x><y>{width}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>280.0</x><y>{fov_y:.1f}</y><z>4.5</z></fieldOfView_mm>"
    )
    rec = (
        f"<matrixSize><x>{recon[0]}</x><y>{recon[1]}</y><z>1</z></matrixSize>"
        f"<fieldOfView_mm><x>140.0</x><y>140.0</y><z>3.0</z></fieldOfView_mm>"
    )
    limits = (
        f"<kspace_encoding_step_1><minimum>0</minimum><maximum>{width - 1}</maximum>"
        f"<center>{width // 2}</center></kspace_encoding_step_1>"
        "<kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>"
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<acquisitionSystemInformation><systemFieldStrength_T>2.9</systemFieldStrength_T>"
        "<receiverChannels>{}</receiverChannels></acquisitionSystemInformation>"
        "<encoding><encodedSpace>{}</encodedSpace><reconSpace>{}</reconSpace>"
        "<encodingLimits>{}</encodingLimits><trajectory>cartesian</trajectory></encoding>"
        "</ismrmrdHeader>"
    ).format("{coils}", enc, rec, limits).encode()


def write_fastmri(path: str | Path, kspace: np.ndarray, recon: tuple[int, int], patient_id: str) -> Path:
    """Write one volume in the fastMRI multi-coil layout, atomically.

    The file is written to a temporary name in the target directory and renamed.
    """
    path = Path(path)
    kspace = np.asarray(kspace, dtype=np.complex64)
    coil_images = ifft2c(torch.from_numpy(kspace)).numpy()
    rss = center_crop(np.sqrt((np.abs(coil_images) ** 2).sum(axis=1)), recon).astype(np.float32)
    header = ismrmrd_header(kspace.shape[-2:], recon).replace(b"{coils}", str(kspace.shape[1]).encode())
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("kspace", data=kspace)
        handle.create_dataset("reconstruction_rss", data=rss)
        handle.create_dataset("ismrmrd_header", data=np.bytes_(header))
        handle.attrs["acquisition"] = "CORPD_FBK"
        handle.attrs["max"] = float(rss.max())
        handle.attrs["norm"] = float(np.linalg.norm(rss))
        handle.attrs["patient_id"] = patient_id
    return path


def make_synthetic(
    root: str | Path,
    volumes: int = 4,
    slices: int = 8,
    coils: int = 15,
    seed: int = 0,
    shape: tuple[int, int] = FULL_SHAPE,
    recon: tuple[int, int] | None = None,
    snr: float | None = 25.0,
) -> list[Path]:
    """Write a deterministic synthetic data set in the fastMRI multi-coil layout.

    Parameters
    ----------
    root : str or Path
        Output directory (created if missing).
    volumes, slices, coils : int
        Data set size; fastMRI knee has 15 coils.
    seed : int
        Data set seed; volume ``v`` is subject ``slice_seed(seed, "volume", v)``.
    shape : tuple of int
        k-space shape ``(H, W)``; fastMRI knee's is ``(640, 368)``.
    recon : tuple of int, optional
        ``reconstruction_rss`` size; default ``(H // 2, H // 2)`` (320×320).
    snr : float or None
        Per-coil SNR (see :func:`synthesize_volume`); None: noiseless.

    Returns
    -------
    list of Path
        The files written, ``file_synth_{seed}_{v:04d}.h5``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recon = recon or (shape[0] // 2, shape[0] // 2)
    if recon[0] > shape[0] or recon[1] > shape[1]:
        raise ValueError(f"The 'recon' size must fit the shape {shape}. Got {recon} instead.")
    paths = []
    for v in range(volumes):
        subject = slice_seed(seed, "volume", v)
        volume = synthesize_volume(shape, slices, coils, subject, snr)
        name = f"file_synth_{seed}_{v:04d}.h5"
        paths.append(write_fastmri(root / name, volume.kspace, recon, f"synthetic-seed{seed}-subject{subject}"))
    return paths
