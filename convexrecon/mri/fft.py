"""Centred FFTs and the array conventions of ``docs/design.md`` §8.

FFT convention: centred and orthonormal over the last axes, ``fftshift(fftn(ifftshift(x), norm="ortho"))``
(fastMRI's ``fft2c`` and sigpy's default). Images are cropped around the centre ``n // 2``
(:func:`center_crop`, as ``sigpy.resize``); networks see a complex image as 2 real channels (real,
imaginary). :func:`data_device` validates where the physics runs.
"""

from __future__ import annotations

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


def data_device(device: str | torch.device | None) -> torch.device:
    """A validated torch device (None: the CPU)."""
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"The 'device' parameter must be a torch device such as 'cpu' or 'cuda:0'. "
                         f"Got {device!r} instead.") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"The 'device' parameter must be a CPU or CUDA device. Got {str(device)!r} instead.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter must name a device of this machine. Got {str(device)!r} instead "
                         f"(CUDA is not available on this machine).")
    return device
