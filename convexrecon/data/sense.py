r"""Centred FFTs, ESPIRiT sensitivity maps and the SENSE operator.

FFT convention (``docs/design.md`` §8): centred and orthonormal over the last two
axes, ``fftshift(fftn(ifftshift(x), norm="ortho"))`` — fastMRI's ``fft2c`` and
sigpy's default.

The SENSE model of one slice with coil maps :math:`S_c` and mask :math:`M` is

.. math::  A x = (M \, F (S_c x))_{c=1}^{C}, \qquad
           A^H y = \sum_c \overline{S_c} \, F^{-1} (M y_c),

so the zero-filled input is :math:`A^H (M k)` and the fully sampled target is
:math:`\sum_c \overline{S_c} F^{-1} k_c`. Both are centre-cropped after the
inverse FFT.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def fftnc(x: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centred orthonormal FFT over the last ``ndim`` axes (``ifftshift → fftn(norm="ortho") → fftshift``)."""
    dims = tuple(range(-ndim, 0))
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifftnc(x: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centred orthonormal inverse FFT over the last ``ndim`` axes."""
    dims = tuple(range(-ndim, 0))
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D FFT over the last two axes (fastMRI's ``fft2c``)."""
    return fftnc(x, 2)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2D inverse FFT over the last two axes."""
    return ifftnc(x, 2)


def center_crop(x: Array, shape: tuple[int, int]) -> Array:
    """Crop the last two axes of ``x`` to ``shape`` around the centre ``n // 2``.

    Raises
    ------
    ValueError
        If ``shape`` is larger than the image in either axis.
    """
    height, width = x.shape[-2:]
    if shape[0] > height or shape[1] > width or min(shape) < 1:
        raise ValueError(
            f"The 'crop' parameter must fit the image: at most {(height, width)}. Got {tuple(shape)} instead."
        )
    top = height // 2 - shape[0] // 2
    left = width // 2 - shape[1] // 2
    return x[..., top : top + shape[0], left : left + shape[1]]


def complex_to_channels(x: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """``(..., H, W)`` complex → ``(..., 2, H, W)`` real (real, imaginary); volumes (``spatial_dims=3``):
    ``(..., D, H, W)`` → ``(..., 2, D, H, W)``."""
    return torch.stack((x.real, x.imag), dim=-spatial_dims - 1)


def channels_to_complex(x: torch.Tensor, spatial_dims: int = 2) -> torch.Tensor:
    """``(..., 2, H, W)`` real → ``(..., H, W)`` complex (volumes: ``(..., 2, D, H, W)``, ``spatial_dims=3``)."""
    axis = -spatial_dims - 1
    if x.ndim < spatial_dims + 1 or x.shape[axis] != 2:
        raise ValueError(f"The input must have 2 channels (real, imaginary) at axis {axis}. "
                         f"Got shape {tuple(x.shape)} instead.")
    return torch.complex(x.select(axis, 0), x.select(axis, 1))


def calibration_width(mask: np.ndarray, limit: int) -> int:
    """Side of the largest fully sampled centred square, at most ``limit``.

    The square is placed as ``sigpy.resize`` (and so ``EspiritCalib``) crops:
    from ``n // 2 - w // 2`` in each axis. For Poisson-disc masks this is the
    calibration square; for line masks it is the width of the sampled centre
    band, so ESPIRiT never sees zeros inside its calibration window.

    Raises
    ------
    ValueError
        If not even the centre sample is acquired.
    """
    mask = np.asarray(mask, dtype=bool)
    best = 0
    for width in range(1, min(limit, *mask.shape) + 1):
        if not center_crop(mask, (width, width)).all():
            break
        best = width
    if best == 0:
        raise ValueError("The mask does not sample the k-space centre; ESPIRiT needs a calibration region.")
    return best


def espirit_maps(
    kspace: np.ndarray,
    calib_width: int,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = 0.95,
    max_iter: int = 100,
) -> np.ndarray:
    """ESPIRiT coil sensitivities from the centre of (undersampled) k-space.

    Wraps ``sigpy.mri.app.EspiritCalib``. Its ``crop`` zeroes the maps where
    the leading eigenvalue is below ``crop``, i.e. outside the object, so the
    SENSE images have a zero background. Phases are relative to coil 0.

    Parameters
    ----------
    kspace : numpy.ndarray
        ``(coils, H, W)`` complex k-space (masked; the calibration square must be
        fully sampled, see :func:`calibration_width`).
    calib_width : int
        Side of the calibration square (> ``kernel_width``).
    kernel_width, thresh, crop, max_iter
        ESPIRiT parameters, sigpy's defaults.

    Returns
    -------
    numpy.ndarray
        ``(coils, H, W)`` complex64 maps.
    """
    from sigpy.mri.app import EspiritCalib

    if calib_width <= kernel_width:
        raise ValueError(
            f"The fully sampled calibration region is {calib_width} wide, but ESPIRiT with kernel width "
            f"{kernel_width} needs more than {kernel_width}: increase 'calib' (Poisson disc) or "
            f"'center_fraction' (lines)."
        )
    kspace = np.asarray(kspace, dtype=np.complex64)
    peak = float(np.abs(kspace).max())
    # ESPIRiT is scale invariant; unit-scale data keeps OpenBLAS's complex64 SVD fast
    # (fastMRI's ~1e-4 values make it up to 40x slower on small problems).
    maps = EspiritCalib(
        kspace / peak if peak > 0 else kspace, calib_width=calib_width, kernel_width=kernel_width,
        thresh=thresh, crop=crop, max_iter=max_iter, show_pbar=False,
    ).run()
    return np.asarray(maps, dtype=np.complex64)


class SenseOperator:
    r"""Multi-coil SENSE operator :math:`A x = M F (S x)` and its adjoint, for images and volumes.

    Follows the project's operator protocol (``forward``, ``adjoint``).
    Works in the dtype of ``maps`` (complex64 or complex128) on its device.

    Parameters
    ----------
    maps : torch.Tensor
        ``(coils, H, W)`` complex sensitivities of an image, or ``(coils, X, Y, Z)`` of a volume
        (3D Cartesian: ``F`` is the 3D centred FFT).
    mask : torch.Tensor, optional
        Sampling mask (bool or real) of the image's shape ``(H, W)``; for a volume ``(Y, Z)``
        (phase encodes, repeated along the fully sampled readout ``X``) or ``(X, Y, Z)``.
        None means fully sampled.
    """

    def __init__(self, maps: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if not torch.is_tensor(maps) or not maps.is_complex() or maps.ndim not in (3, 4):
            raise TypeError("The 'maps' parameter must be a complex torch.Tensor of shape (coils, H, W) "
                            "(volumes: (coils, X, Y, Z)).")
        spatial = tuple(maps.shape[1:])
        if mask is not None and tuple(mask.shape) not in (spatial, spatial[-2:]):
            expected = f"{spatial}" if len(spatial) == 2 else f"{spatial[-2:]} (ky, kz) or {spatial}"
            raise ValueError(f"The 'mask' parameter must have shape {expected}. Got {tuple(mask.shape)} instead.")
        self.maps = maps
        self.ndim = len(spatial)
        self.mask = None if mask is None else mask.to(device=maps.device, dtype=maps.real.dtype)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W)`` (volumes: ``(X, Y, Z)``)."""
        return tuple(self.maps.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``(..., H, W)`` → masked multi-coil k-space ``(..., coils, H, W)`` (volumes alike)."""
        y = fftnc(self.maps * x.unsqueeze(-self.ndim - 1), self.ndim)
        return y if self.mask is None else y * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Multi-coil k-space ``(..., coils, H, W)`` → image ``(..., H, W)`` (volumes alike)."""
        if self.mask is not None:
            y = y * self.mask
        return (self.maps.conj() * ifftnc(y, self.ndim)).sum(dim=-self.ndim - 1)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """:math:`A^H A x`."""
        return self.adjoint(self.forward(x))


class SenseImages(NamedTuple):
    """The SENSE images of one slice, cropped, divided by ``scale``.

    Attributes
    ----------
    input : torch.Tensor
        Zero-filled SENSE image ``(crop, crop)`` complex64.
    target : torch.Tensor
        Fully sampled SENSE image ``(crop, crop)`` complex64.
    maps : torch.Tensor
        ESPIRiT maps cropped to ``(coils, crop, crop)`` complex64.
    scale : float
        Physical image = stored image × ``scale``; ``scale`` is the maximum
        magnitude of the cropped zero-filled image (no target information).
    calib_width : int
        Calibration square side used for ESPIRiT.
    """

    input: torch.Tensor
    target: torch.Tensor
    maps: torch.Tensor
    scale: float
    calib_width: int


def sense_images(
    kspace: np.ndarray, mask: np.ndarray, calib: int, crop: int, maps: np.ndarray | None = None
) -> SenseImages:
    """Zero-filled input and fully sampled target of one slice.

    Parameters
    ----------
    kspace : numpy.ndarray
        Fully sampled ``(coils, H, W)`` complex k-space.
    mask : numpy.ndarray
        ``(H, W)`` boolean sampling mask, applied retrospectively.
    calib : int
        Largest calibration square to use; the actual side is the fully
        sampled centre (:func:`calibration_width`).
    crop : int
        Output side (centre crop after the inverse FFT).
    maps : numpy.ndarray, optional
        Precomputed ``(coils, H, W)`` maps; ESPIRiT runs when omitted.

    Returns
    -------
    SenseImages
    """
    if tuple(mask.shape) != tuple(kspace.shape[-2:]):
        raise ValueError(
            f"The 'mask' must have the k-space shape {tuple(kspace.shape[-2:])}. Got {tuple(mask.shape)} instead."
        )
    center_crop(mask, (crop, crop))  # validates the crop before the expensive part
    masked = kspace * mask
    width = calibration_width(mask, calib)
    if maps is None:
        maps = espirit_maps(masked, width)
    maps_t = torch.from_numpy(np.asarray(maps, dtype=np.complex64))
    op = SenseOperator(maps_t)
    zero_filled = center_crop(op.adjoint(torch.from_numpy(masked.astype(np.complex64))), (crop, crop))
    target = center_crop(op.adjoint(torch.from_numpy(kspace.astype(np.complex64))), (crop, crop))
    scale = float(zero_filled.abs().max())
    if not scale > 0:
        scale = 1.0
    return SenseImages(
        input=(zero_filled / scale).contiguous(),
        target=(target / scale).contiguous(),
        maps=center_crop(maps_t, (crop, crop)).contiguous(),
        scale=scale,
        calib_width=width,
    )
