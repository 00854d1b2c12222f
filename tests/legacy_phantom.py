"""A nearly piecewise-constant synthetic phantom, kept as a test fixture: the contrast case for the generator.

A smooth limb with flat ellipses and weak texture: nearly piecewise constant, so
very sparse in wavelets. ``tests/test_data_synthetic.py`` checks that the texture
statistics of the package's generator exceed what this phantom reaches, and
``benchmarks/bench_synthetic.py`` shows both side by side in ``docs/``.
It is not part of the package: nothing in ``convexrecon`` imports it.
"""

from __future__ import annotations

import numpy as np


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


def legacy_phantom_slice(
    shape: tuple[int, int], subject: int, z: float, texture_seed: int
) -> np.ndarray:
    """One slice of the former phantom at position ``z`` in [-1, 1] of ``subject``.

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


