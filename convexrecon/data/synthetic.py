"""Deterministic synthetic multi-coil data in the fastMRI HDF5 layout.

The project's default data set: no real MRI data may be downloaded, so
:func:`make_synthetic` writes ``file_synth_XXXX.h5`` files that the fastMRI
reader reads exactly like real ones (``kspace`` slices × coils × H × W
complex64 with a 2× oversampled readout, ``reconstruction_rss``,
``ismrmrd_header`` XML, attributes ``acquisition``, ``max``, ``norm``,
``patient_id``).

Two families of subjects (``anatomy=``):

* ``"knee"`` (default): coronal proton-density knee-like slices
  (:mod:`convexrecon.data.knee`): bones with cortex and trabecular marrow,
  cartilage, menisci, ligaments, muscle with fibres, fat with septa, vessels;
* ``"brain"``: axial T2-weighted brain-like slices (:mod:`convexrecon.data.brain`):
  scalp, skull, cerebrospinal fluid, folded cortex, white matter, nuclei,
  ventricles.

Each slice is drawn on a grid twice as fine as the acquired one, with
analytic partial-volume edges, multiplied by a smooth receive-bias field and a
smooth phase, and reduced to the acquired grid by keeping the central k-space
(:func:`convexrecon.data.tissue.band_limit`): what an acquisition does to a
continuous object, partial volume and Gibbs ringing included.

Coils: birdcage-like ring of loops around the object (three rows along z),
sensitivity falling off with distance as a loop's near field, with a phase
that winds around each loop; normalised to unit root-sum-of-squares, so the
SENSE combination of noiseless data is exactly the phantom image.
Noise: complex Gaussian in k-space, white in k-space, with per-coil standard
deviation ``mean(|x| over the object) / snr`` (orthonormal FFT: the same in
image space) and correlation ``0.25^d`` between coils ``d`` places apart on
the ring (receive arrays' noise is correlated between neighbours).

What it lacks: relaxation physics (contrasts are typical relative values),
anatomically exact shapes, motion, flow and chemical-shift artefacts, and
fastMRI's zero-padded phase-encode edges. Learned reconstructions trained on
it should not be expected to transfer to real scans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch

from convexrecon.data.brain import brain_slice
from convexrecon.data.knee import knee_slice
from convexrecon.io import atomic_path
from convexrecon.data.masks import slice_seed
from convexrecon.mri.fft import center_crop, fft2c, ifft2c
from convexrecon.data.tissue import Canvas, band_limit, slow_field

FULL_SHAPE = (640, 368)
INTENSITY = 3e-4  # order of magnitude of fastMRI knee image values
OVERSAMPLE = 2  # the phantom is drawn on a grid this many times finer, then band-limited
PHASE_RAMP = 1.0  # radians per unit (a recon half-width) of the coils' linear phase ramps
COIL_CORRELATION = 0.25  # noise correlation of neighbouring coils (0.25^d at ring distance d)

ANATOMIES: dict[str, Callable[[Canvas, int, float, np.random.Generator], np.ndarray]] = {
    "knee": knee_slice,
    "brain": brain_slice,
}
ACQUISITION = {"knee": "CORPD_FBK", "brain": "AXT2"}


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


def _check_anatomy(anatomy: str) -> None:
    if anatomy not in ANATOMIES:
        raise ValueError(f"The 'anatomy' parameter must be one of {sorted(ANATOMIES)}. Got {anatomy!r} instead.")


def phantom_slice(
    shape: tuple[int, int], subject: int, z: float, texture_seed: int, anatomy: str = "knee"
) -> np.ndarray:
    """One complex slice of ``subject`` at position ``z`` in [-1, 1].

    Parameters
    ----------
    shape : tuple of int
        Image grid ``(H, W)``; the reconstruction crop is the central ``H/2 × H/2``.
    subject : int
        Subject seed: anatomy, contrast variation and phase are functions of it.
    z : float
        Slice position; anatomy changes continuously with ``z``.
    texture_seed : int
        Seed of the fine texture of this slice (fibres, trabeculae, septa, 1/f texture).
    anatomy : {"knee", "brain"}
        Family of subjects (see the module doc).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` complex64 image, band-limited to the grid; magnitudes of order 1
        (knee: subcutaneous fat ≈ 1; brain: cerebrospinal fluid ≈ 1).
    """
    _check_anatomy(anatomy)
    canvas = Canvas.for_shape(shape, OVERSAMPLE)
    texture = np.random.default_rng([subject, texture_seed, 29])
    magnitude = ANATOMIES[anatomy](canvas, subject, z, texture)
    rng = np.random.default_rng([subject, 31])
    bias = np.exp(0.15 * slow_field(rng, canvas, z, 0.35))
    ramp = rng.normal(0, 1.0) * canvas.y + rng.normal(0, 1.0) * canvas.x
    phase = 0.8 * np.pi * slow_field(rng, canvas, z, 0.3) + ramp
    return band_limit(magnitude * bias * np.exp(1j * phase), shape).astype(np.complex64)


def birdcage_maps(coils: int, shape: tuple[int, int], z: float = 0.0) -> np.ndarray:
    """Birdcage-like coil sensitivities, unit root-sum-of-squares.

    Loops sit on an ellipse around the limb, in three rows along z; each has a
    near-field magnitude ``(d² + h²)^{-3/4}`` (``d`` the in-plane distance to the loop,
    ``h`` its height above the slice) and a smooth phase: the loop's angle on the ring
    plus a slow linear ramp along the ring's radius through it (about one radian per
    recon half-width), the slowly varying phase of a real receive field. The phase has
    no vortex: a map whose phase winds around a point where its magnitude does not
    vanish is discontinuous there, which no receive field is and which single-set
    ESPIRiT cannot represent (it put maps nearly orthogonal to the truth over a
    20-pixel disc under each loop of the knee's oversampled readout).

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
        maps[c] = magnitude * np.exp(1j * (angle + PHASE_RAMP * (x * np.cos(angle) + y * np.sin(angle))))
    maps /= np.sqrt((np.abs(maps) ** 2).sum(axis=0, keepdims=True))
    return maps


def coil_noise_correlation(coils: int, rho: float = COIL_CORRELATION) -> np.ndarray:
    """Noise correlation matrix of the coil ring: ``rho ** d``, ``d`` the distance of two coils on the ring.

    Positive definite for ``rho < 1/3`` at any number of coils (the matrix is diagonally dominant).
    """
    index = np.arange(coils)
    distance = np.abs(index[:, None] - index[None, :])
    distance = np.minimum(distance, coils - distance)
    return (rho ** distance).astype(np.float64)


def synthesize_volume(
    shape: tuple[int, int] = FULL_SHAPE,
    slices: int = 8,
    coils: int = 15,
    seed: int = 0,
    snr: float | None = 25.0,
    anatomy: str = "knee",
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
        ``mean(|x| over the object) / noise std`` per coil, the object being where
        ``|x|`` exceeds 5 % of its maximum; None: noiseless.
    anatomy : {"knee", "brain"}
        Family of subjects (see the module doc).

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
    _check_anatomy(anatomy)
    zs = np.linspace(-0.6, 0.6, slices) if slices > 1 else np.zeros(1)
    images = np.stack([phantom_slice(shape, seed, float(z), k, anatomy) for k, z in enumerate(zs)]) * INTENSITY
    maps = birdcage_maps(coils, shape)
    coil_images = torch.from_numpy(images[:, None] * maps[None])
    kspace = fft2c(coil_images).numpy().astype(np.complex64)
    if snr is not None:
        magnitude = np.abs(images)
        sigma = magnitude[magnitude > 0.05 * magnitude.max()].mean() / snr
        rng = np.random.default_rng([seed, 101])
        white = rng.standard_normal(kspace.shape + (2,), dtype=np.float32) * (sigma / np.sqrt(2))
        mix = torch.from_numpy(np.linalg.cholesky(coil_noise_correlation(coils)).astype(np.float32))
        noise = torch.einsum("ij,sjhwc->sihwc", mix, torch.from_numpy(white.astype(np.float32))).numpy()
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


def write_fastmri(
    path: str | Path, kspace: np.ndarray, recon: tuple[int, int], patient_id: str, acquisition: str = "CORPD_FBK"
) -> Path:
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
        handle.attrs["acquisition"] = acquisition
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
    anatomy: str = "knee",
    only: Sequence[int] | None = None,
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
    anatomy : {"knee", "brain"}
        Family of subjects: knee-like (the default) or brain-like (see the module doc).
        The two families draw their subjects from different seeds.
    only : sequence of int, optional
        Write only these volume indices (each volume depends on its index alone, so
        several processes can write one data set in parts).

    Returns
    -------
    list of Path
        The files written, ``file_synth_{seed}_{v:04d}.h5`` (knee) or
        ``file_synth_brain_{seed}_{v:04d}.h5`` (brain).
    """
    _check_anatomy(anatomy)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recon = recon or (shape[0] // 2, shape[0] // 2)
    if recon[0] > shape[0] or recon[1] > shape[1]:
        raise ValueError(f"The 'recon' size must fit the shape {shape}. Got {recon} instead.")
    paths = []
    family = "" if anatomy == "knee" else f"{anatomy}_"
    indices = range(volumes) if only is None else [int(v) for v in only]
    if any(not 0 <= v < volumes for v in indices):
        raise ValueError(f"The 'only' parameter must hold volume indices in [0, {volumes}). Got {list(only)} instead.")
    for v in indices:
        subject = slice_seed(seed, "volume" if anatomy == "knee" else anatomy, v)
        volume = synthesize_volume(shape, slices, coils, subject, snr, anatomy)
        name = f"file_synth_{family}{seed}_{v:04d}.h5"
        patient = f"synthetic-{anatomy}-seed{seed}-subject{subject}"
        paths.append(write_fastmri(root / name, volume.kspace, recon, patient, ACQUISITION[anatomy]))
    return paths
