r"""The multi-coil SENSE operator, batched, and the SENSE images of a slice.

The SENSE model with coil maps :math:`S_c`, sampling mask :math:`M` and the centred orthonormal
FFT :math:`F` (``docs/design.md`` §8) is

.. math::  A x = (M \, F (S_c x))_{c=1}^{C}, \qquad
           A^H y = \sum_c \overline{S_c} \, F^{-1} (M y_c),

so the zero-filled input is :math:`A^H (M k)` and the fully sampled target is
:math:`\sum_c \overline{S_c} F^{-1} k_c`. Both are centre-cropped after the
inverse FFT.

:class:`SenseOperator` is the one implementation of :math:`A`: of one slice, of one 3D Cartesian
volume, or of a batch of slices each with its own maps and mask (the preprocessing, data
consistency, L1-wavelet CS and the unrolled network all use it). :func:`sense_forward`,
:func:`sense_adjoint` and :func:`sense_normal` are its shortcuts for a batch of slices.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import Tensor

from convexrecon.mri.espirit import calibration_width, coil_maps
from convexrecon.mri.fft import center_crop, data_device, fftnc, ifftnc


class SenseOperator:
    r"""SENSE operator :math:`A x = M F (S x)`, its adjoint and normal operator.

    Follows the project's operator protocol (``forward``, ``adjoint``). Works in the dtype of
    ``maps`` (complex64 or complex128) on its device, differentiably.

    Parameters
    ----------
    maps : torch.Tensor
        Complex sensitivities ``(*batch, coils, *spatial)``: ``(coils, H, W)`` of one slice,
        ``(B, coils, H, W)`` of a batch of slices (with ``spatial_dims=2``), ``(coils, X, Y, Z)``
        of a volume (3D Cartesian: ``F`` is the 3D centred FFT).
    mask : torch.Tensor, optional
        Sampling mask (bool or real weights) over k-space, converted to the real dtype of
        ``maps``: of shape ``spatial`` (shared by the batch), ``(*batch, *spatial)`` (one per
        batch element), or for a volume ``(Y, Z)`` (phase encodes, repeated along the fully
        sampled readout ``X``). None means fully sampled.
    spatial_dims : {2, 3}, optional
        The number of spatial axes; by default 2 for 3-D maps (one slice) and 3 for 4-D maps
        (one volume).
    """

    def __init__(self, maps: Tensor, mask: Tensor | None = None, *, spatial_dims: int | None = None) -> None:
        if spatial_dims is not None and (isinstance(spatial_dims, bool) or spatial_dims not in (2, 3)):
            raise ValueError(f"The 'spatial_dims' parameter must be 2, 3 or None. Got {spatial_dims!r} instead.")
        ndim = spatial_dims if spatial_dims is not None else getattr(maps, "ndim", 0) - 1
        if not torch.is_tensor(maps) or not maps.is_complex() or ndim not in (2, 3) or maps.ndim < ndim + 1:
            got = f"{maps.dtype} {tuple(maps.shape)}" if torch.is_tensor(maps) else type(maps).__name__
            raise TypeError("The 'maps' parameter must be a complex torch.Tensor of shape (coils, H, W) (volumes: "
                            "(coils, X, Y, Z); a batch of slices: (B, coils, H, W) with spatial_dims=2). "
                            f"Got {got} instead.")
        self.maps = maps
        self.ndim = ndim
        self.mask: Tensor | None = None
        self._weight: Tensor | None = None  # the mask, shaped to broadcast over k-space (*batch, coils, *spatial)
        if mask is None:
            return
        spatial, batch = tuple(maps.shape[-ndim:]), tuple(maps.shape[:-ndim - 1])
        shape = tuple(getattr(mask, "shape", ()))
        per_element = bool(batch) and len(shape) == len(batch) + ndim and shape[len(batch):] == spatial \
            and _broadcastable(shape[:len(batch)], batch)
        if not torch.is_tensor(mask) or not (per_element or shape == spatial or (ndim == 3 and shape == spatial[-2:])):
            expected = [spatial] + ([spatial[-2:]] if ndim == 3 else []) + ([batch + spatial] if batch else [])
            raise ValueError(f"The 'mask' parameter must be a tensor of shape {' or '.join(map(str, expected))}. "
                             f"Got {type(mask).__name__} {shape} instead.")
        self.mask = mask.to(device=maps.device, dtype=maps.real.dtype)
        self._weight = self.mask.unsqueeze(-ndim - 1) if per_element else self.mask

    @property
    def image_shape(self) -> tuple[int, ...]:
        """``(H, W)`` (volumes: ``(X, Y, Z)``)."""
        return tuple(self.maps.shape[-self.ndim:])

    def forward(self, x: Tensor) -> Tensor:
        """Images ``(*batch, H, W)`` → masked multi-coil k-space ``(*batch, coils, H, W)`` (volumes alike)."""
        y = fftnc(self.maps * x.unsqueeze(-self.ndim - 1), self.ndim)
        return y if self._weight is None else y * self._weight

    def adjoint(self, y: Tensor) -> Tensor:
        """Multi-coil k-space ``(*batch, coils, H, W)`` → images ``(*batch, H, W)`` (volumes alike)."""
        if self._weight is not None:
            y = y * self._weight
        return (self.maps.conj() * ifftnc(y, self.ndim)).sum(dim=-self.ndim - 1)

    def normal(self, x: Tensor) -> Tensor:
        """:math:`A^H A x` (the mask enters squared)."""
        return self.adjoint(self.forward(x))

    def shifted_normal(self) -> Callable[[Tensor], Tensor]:
        r""":math:`A^H A` in ifftshifted image coordinates: the function ``u ↦ ifftshift(A^H A fftshift(u))``.

        :math:`F^{-1} M^2 F u` is ``fftshift(ifft(ifftshift(M²) fft(ifftshift(u))))``, so with maps, mask
        and images shifted once, an iterative solver's loop needs no shifts (they cost more than the FFTs).
        """
        dims = tuple(range(-self.ndim, 0))
        coil_axis = -self.ndim - 1
        maps = torch.fft.ifftshift(self.maps, dim=dims)
        weight = None if self._weight is None else torch.fft.ifftshift(self._weight, dim=dims).pow(2)

        def gram(u: Tensor) -> Tensor:
            k = torch.fft.fftn(maps * u.unsqueeze(coil_axis), dim=dims, norm="ortho")
            coil = torch.fft.ifftn(k if weight is None else weight * k, dim=dims, norm="ortho")
            return (maps.conj() * coil).sum(dim=coil_axis)

        return gram


def _broadcastable(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        return False
    return True


def sense_forward(x: Tensor, maps: Tensor, mask: Tensor | None) -> Tensor:
    """:math:`A x` of a batch of slices: images ``(B, H, W)`` complex → masked k-space ``(B, C, H, W)``.

    ``maps`` ``(B, C, H, W)`` complex, ``mask`` ``(B, H, W)`` (or ``(H, W)``, shared) bool or real weights;
    :class:`SenseOperator` with ``spatial_dims=2``.
    """
    return SenseOperator(maps, mask, spatial_dims=2).forward(x)


def sense_adjoint(y: Tensor, maps: Tensor, mask: Tensor | None) -> Tensor:
    """:math:`A^H y` of a batch of slices: k-space ``(B, C, H, W)`` → images ``(B, H, W)`` (:func:`sense_forward`)."""
    return SenseOperator(maps, mask, spatial_dims=2).adjoint(y)


def sense_normal(x: Tensor, maps: Tensor, mask: Tensor | None) -> Tensor:
    """:math:`A^H A x` of a batch of slices (the mask enters squared; see :func:`sense_forward`)."""
    return SenseOperator(maps, mask, spatial_dims=2).normal(x)


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
    kspace: np.ndarray, mask: np.ndarray, calib: int, crop: int, maps: np.ndarray | None = None,
    device: str | torch.device | None = None,
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
    device : str or torch.device, optional
        Where ESPIRiT (:func:`~convexrecon.mri.espirit.coil_maps`) and the SENSE adjoints run (None: the CPU).
        The returned tensors are on the host either way.

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
    device = data_device(device)
    if maps is None:
        maps = coil_maps(masked, width, device=device)
    maps_t = torch.from_numpy(np.asarray(maps, dtype=np.complex64))
    op = SenseOperator(maps_t.to(device))
    zero_filled = center_crop(op.adjoint(torch.from_numpy(masked.astype(np.complex64)).to(device)), (crop, crop)).cpu()
    target = center_crop(op.adjoint(torch.from_numpy(kspace.astype(np.complex64)).to(device)), (crop, crop)).cpu()
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
