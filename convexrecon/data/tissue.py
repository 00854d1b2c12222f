"""Rendering primitives for the synthetic anatomy: a fine grid, random texture fields, soft shapes.

The anatomy generators (:mod:`convexrecon.data.knee`, :mod:`convexrecon.data.brain`)
draw on a :class:`Canvas`, a grid finer than the acquired one (``oversample`` ×
in each axis). Coordinates are in units of half the reconstruction field of view:
the 320 × 320 crop of a fastMRI knee slice is ``[-1, 1]²``, so one unit is 70 mm
(:data:`MM` converts millimetres). ``y`` runs down the rows (the readout), ``x``
along the columns (phase encoding).

Shapes are signed distance functions (negative inside), rasterised with an
analytic partial-volume coverage (:func:`inside`, :func:`thin_line`); level sets
of random fields are turned into approximate distances by :func:`level_distance`.
:func:`band_limit` then reduces the fine image to the acquired grid by cropping
its k-space, which is what an MR acquisition does to a continuous object
(partial volume and Gibbs ringing included).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from convexrecon.mri.fft import center_crop, fft2c, ifft2c

MM = 1 / 70.0  # one millimetre in grid units (the 140 mm crop spans [-1, 1])


@dataclass(frozen=True)
class Canvas:
    """A fine sampling grid over the whole field of view.

    Attributes
    ----------
    y, x : numpy.ndarray
        ``(H·s, W·s)`` float32 coordinates in units of half the crop (see module doc).
    px : float
        One fine pixel in grid units.
    """

    y: np.ndarray
    x: np.ndarray
    px: float

    @classmethod
    def for_shape(cls, shape: tuple[int, int], oversample: int) -> Canvas:
        """The canvas ``oversample`` times finer than the acquired grid ``shape``.

        Pixel ``j`` of the acquired grid sits at fine pixel ``oversample · j`` offset so
        that both grids share their centre sample (index ``n // 2``), as the centred FFT
        in :func:`band_limit` requires.
        """
        height, width = (int(n) * oversample for n in shape)
        unit = height / 4  # fine pixels per grid unit: the crop (central half of the readout) is [-1, 1]
        y = (np.arange(height, dtype=np.float32) - height // 2) / unit
        x = (np.arange(width, dtype=np.float32) - width // 2) / unit
        yy, xx = np.meshgrid(y, x, indexing="ij")
        return cls(yy, xx, float(1 / unit))

    @property
    def shape(self) -> tuple[int, int]:
        """Fine grid shape."""
        return self.y.shape  # type: ignore[return-value]

    def window(self, y_range: tuple[float, float], x_range: tuple[float, float]) -> tuple[slice, slice]:
        """Index slices of the fine pixels whose coordinates lie in the given ranges."""
        rows, cols = self.y[:, 0], self.x[0]
        r = np.searchsorted(rows, y_range[0]), np.searchsorted(rows, y_range[1], side="right")
        c = np.searchsorted(cols, x_range[0]), np.searchsorted(cols, x_range[1], side="right")
        return slice(int(r[0]), int(r[1])), slice(int(c[0]), int(c[1]))


class Painter:
    """Paints tissues in layers onto a value map and a texture-amplitude map.

    ``paint(coverage, value, amplitude)`` blends ``value`` in where ``coverage`` (0 … 1)
    is positive, later layers over earlier ones; ``amplitude`` is the relative strength
    of the fractal texture that :meth:`render` applies to that tissue.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.value = np.zeros(shape, np.float32)
        self.amplitude = np.zeros(shape, np.float32)

    def paint(
        self, coverage: np.ndarray, value: float | np.ndarray, amplitude: float, region: tuple[slice, slice] | None = None
    ) -> None:
        """Blend one tissue in (on the sub-window ``region`` of the maps, when given)."""
        region = region or (slice(None), slice(None))
        keep = 1 - coverage
        self.value[region] = self.value[region] * keep + coverage * value
        self.amplitude[region] = self.amplitude[region] * keep + coverage * amplitude

    def render(self, texture: np.ndarray) -> np.ndarray:
        """The painted image with the texture field applied, clipped at zero, float32."""
        return np.clip(self.value * (1 + self.amplitude * texture), 0, None).astype(np.float32)


def wave(rng: np.random.Generator, t: np.ndarray, modes: int, max_freq: float) -> np.ndarray:
    """Zero-mean smooth 1-D random function of ``t`` (a sum of ``modes`` cosines), unit scale.

    Evaluated on 1024 nodes and interpolated, so its cost does not grow with ``t``.
    """
    nodes = np.linspace(float(t.min()) - 1e-3, float(t.max()) + 1e-3, 1024)
    values = np.zeros_like(nodes)
    for _ in range(modes):
        f, p, a = rng.uniform(0.2, max_freq), rng.uniform(0, 2 * np.pi), rng.standard_normal() / np.sqrt(modes)
        values += a * np.cos(2 * np.pi * f * nodes + p)
    return np.interp(t.ravel(), nodes, values).reshape(t.shape).astype(np.float32)


def chord(z: float, centre: float, half_extent: float) -> float:
    """Relative width of a roughly round structure cut at ``z``: 1 through its centre, 0 beyond its ends."""
    return float(np.sqrt(np.clip(1 - ((z - centre) / half_extent) ** 2, 0.0, 1.0)))


def slow_field(
    rng: np.random.Generator, canvas: Canvas, z: float, correlation: float, anisotropy: float = 1.0
) -> np.ndarray:
    """A smooth subject-level random field that changes continuously with the slice position ``z``.

    Two independent fields are rotated into each other (``cos(1.3 z) a + sin(1.3 z) b``), so
    the field keeps unit variance and adjacent slices see nearly the same structures.
    """
    a = smooth_field(rng, canvas.shape, canvas.px, correlation, anisotropy)
    b = smooth_field(rng, canvas.shape, canvas.px, correlation, anisotropy)
    return np.cos(1.3 * z) * a + np.sin(1.3 * z) * b


def flare(y: np.ndarray, x: np.ndarray, half_width: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """Distance-like function of ``{|x| < half_width(y)}`` for a width profile of local slope ``slope``."""
    return (np.abs(x) - half_width) / np.sqrt(1 + slope**2)


def smoothstep(t: np.ndarray) -> np.ndarray:
    """``3t² − 2t³`` on ``[0, 1]``, clipped outside."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def inside(d: np.ndarray, px: float) -> np.ndarray:
    """Partial-volume coverage of ``{d < 0}``: 1 inside, 0 outside, linear over one pixel."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def thin_line(distance: np.ndarray, half_width: float, px: float) -> np.ndarray:
    """Coverage of a line ``half_width`` wide on either side of ``distance = 0``.

    Lines thinner than a pixel keep their partial-volume share (a 0.1-pixel line has
    coverage 0.2 at most), as thin septa and trabeculae do in real images.
    """
    full = np.clip(0.5 - (np.abs(distance) - half_width) / px, 0.0, 1.0)
    return full * min(1.0, 2 * half_width / px) if half_width < px / 2 else full


def level_distance(field: np.ndarray, px: float) -> np.ndarray:
    """Approximate signed distance to the zero level set of ``field``: ``field / |∇field|``."""
    gy, gx = np.gradient(field, px)
    return field / (np.hypot(gy, gx) + 1e-6)


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two distance functions (polynomial blend over ``k``)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def ellipse(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Approximate signed distance to an ellipse (exact on the axes, good near its boundary)."""
    py, px_ = (y - cy) / ry, (x - cx) / rx
    k0 = np.hypot(py, px_)
    k1 = np.hypot(py / ry, px_ / rx)
    return k0 * (k0 - 1) / (k1 + 1e-6)


def capsule(y: np.ndarray, x: np.ndarray, a: tuple[float, float], b: tuple[float, float], radius: float) -> np.ndarray:
    """Signed distance to the segment ``a``–``b`` (``(y, x)`` points) thickened by ``radius``."""
    ay, ax = a
    by, bx = b
    vy, vx = by - ay, bx - ax
    t = np.clip(((y - ay) * vy + (x - ax) * vx) / (vy * vy + vx * vx + 1e-12), 0.0, 1.0)
    return np.hypot(y - ay - t * vy, x - ax - t * vx) - radius


def triangle(y: np.ndarray, x: np.ndarray, corners: list[tuple[float, float]]) -> np.ndarray:
    """Signed distance-like function of a triangle (exact inside and off its edges)."""
    (y0, x0), (y1, x1), (y2, x2) = corners
    orientation = np.sign((y1 - y0) * (x2 - x0) - (x1 - x0) * (y2 - y0)) or 1.0
    d = None
    for (ay, ax), (by, bx) in (((y0, x0), (y1, x1)), ((y1, x1), (y2, x2)), ((y2, x2), (y0, x0))):
        length = np.hypot(by - ay, bx - ax) + 1e-12
        side = -orientation * ((by - ay) * (x - ax) - (bx - ax) * (y - ay)) / length
        d = side if d is None else np.maximum(d, side)
    return d


def gaussian_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    px: float,
    correlation: float,
    anisotropy: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Gaussian random field, unit standard deviation, Gaussian spectrum.

    Parameters
    ----------
    correlation : float
        Correlation length in grid units (the spacing of its zero crossings is of this order).
    anisotropy : float
        Ratio of the correlation lengths along ``angle`` and across it (> 1: streaks).
    angle : float
        Direction of the long axis, radians from the ``y`` axis.
    """
    noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    ky, kx = _frequencies(shape, px)
    c, s = np.cos(angle), np.sin(angle)
    along, across = ky * c + kx * s, -ky * s + kx * c
    envelope = np.exp(-2 * np.pi**2 * correlation**2 * (anisotropy * along**2 + across**2 / anisotropy))
    return _filtered(noise, envelope, shape)


def smooth_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    px: float,
    correlation: float,
    anisotropy: float = 1.0,
    factor: int = 4,
) -> np.ndarray:
    """:func:`gaussian_field` drawn on a grid ``factor`` times coarser and interpolated (bilinear).

    For fields that are smooth on the scale of ``factor`` fine pixels (large structures):
    the same statistics at a fraction of the cost.
    """
    coarse = (-(-shape[0] // factor), -(-shape[1] // factor))
    field = gaussian_field(rng, coarse, px * factor, correlation, anisotropy)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(field)[None, None], size=tuple(shape), mode="bilinear", align_corners=False
    )
    return up[0, 0].numpy()


def fractal_field(
    rng: np.random.Generator, shape: tuple[int, int], px: float, exponent: float = 3.0, largest: float = 1.0
) -> np.ndarray:
    """Gaussian random field with power spectrum ``|k|^-exponent`` (texture at every scale), unit std.

    Scales larger than ``largest`` grid units are suppressed; the spectrum runs
    up to the fine grid's Nyquist frequency.
    """
    noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    ky, kx = _frequencies(shape, px)
    k = np.hypot(ky, kx)
    envelope = (k**2 + 1 / largest**2) ** (-exponent / 4)
    return _filtered(noise, envelope, shape)


def _frequencies(shape: tuple[int, int], px: float) -> tuple[np.ndarray, np.ndarray]:
    ky = (np.fft.fftfreq(shape[0]) / px)[:, None].astype(np.float32)
    kx = (np.fft.rfftfreq(shape[1]) / px)[None, :].astype(np.float32)
    return ky, kx


def _filtered(noise: torch.Tensor, envelope: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    spectrum = torch.fft.rfft2(noise) * torch.from_numpy(envelope.astype(np.float32))
    field = torch.fft.irfft2(spectrum, s=shape).numpy()
    return field / (field.std() + 1e-12)


def band_limit(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Reduce a fine image to the acquired grid ``shape`` by keeping its central k-space.

    The orthonormal FFTs are rescaled so that a constant keeps its value.
    """
    fine = torch.from_numpy(np.ascontiguousarray(image, dtype=np.complex64))
    kspace = center_crop(fft2c(fine), tuple(shape))
    factor = np.sqrt(shape[0] * shape[1] / (image.shape[0] * image.shape[1]))
    return (ifft2c(kspace) * factor).numpy()
