"""k-space → image with a trained network: the inference half of the package.

A :class:`~convexrecon.stack.network.ReconNet` maps zero-filled SENSE images to
reconstructions; :func:`reconstruct_slice` wraps it for raw multi-coil k-space as
in training: the k-space is masked, ESPIRiT maps are estimated from its
calibration region, the zero-filled SENSE image is cropped and scaled like the
training samples, passed through the network and scaled back.
:func:`mask_func_of` rebuilds the training mask from a saved model's config
(the one place that reads those settings), :func:`volume_masks` gives every
slice of a file its mask.
"""

from __future__ import annotations

from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.masks import CENTER_FRACTION, MaskFunc
from convexrecon.data.sense import (calibration_width, channels_to_complex, complex_to_channels, espirit_maps,
                                    sense_images)


def mask_func_of(config: dict[str, Any]) -> MaskFunc:
    """The undersampling mask a model was trained with, from its config's ``data`` settings."""
    data = config.get("data", {})
    return MaskFunc(data.get("mask", "poisson"), data.get("acceleration", 4.0),
                    data.get("center_fraction", CENTER_FRACTION), data.get("calib", 16), data.get("seed", 0))


def volume_masks(volume: FastMRIVolume, mask_func: MaskFunc) -> list[np.ndarray]:
    """The ``(H, W)`` mask of every slice: the file's own ``mask`` or ``mask_func``'s."""
    shape = volume.shape[-2:]
    with h5py.File(volume.path, "r") as handle:
        if "mask" in handle:
            columns = np.asarray(handle["mask"]).astype(bool).reshape(-1)
            return [np.broadcast_to(columns, shape).copy()] * volume.num_slices
    return [mask_func.for_slice(shape, volume.path.name, s) for s in range(volume.num_slices)]


@torch.no_grad()
def reconstruct_slice(net: nn.Module, kspace: np.ndarray | Tensor, mask: np.ndarray | Tensor) -> Tensor:
    """Reconstruct one slice from its k-space: ``(coils, H, W)`` complex and ``(H, W)`` mask.

    Entries outside ``mask`` are ignored. The crop is the model's training crop
    (``net.config["data"]["crop"]``, default ``min(320, H, W)``).

    Returns
    -------
    torch.Tensor
        ``(crop, crop)`` complex64 image at physical scale.
    """
    kspace = np.asarray(kspace.numpy() if isinstance(kspace, Tensor) else kspace)
    mask = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask).astype(bool)
    if kspace.ndim != 3 or not np.iscomplexobj(kspace):
        raise ValueError(f"The 'kspace' parameter must be complex (coils, H, W). Got {kspace.dtype} shape {kspace.shape} instead.")
    if mask.shape != kspace.shape[-2:]:
        raise ValueError(f"The 'mask' parameter must have shape {kspace.shape[-2:]}. Got {mask.shape} instead.")
    config = getattr(net, "config", {})
    if getattr(net, "needs_measurements", False):  # unrolled networks: data consistency with the k-space
        return _reconstruct_with_measurements(net, kspace, mask, config)
    crop = int(config.get("data", {}).get("crop", min(320, *kspace.shape[-2:])))
    images = sense_images(kspace * mask, mask, mask_func_of(config).calibration_limit(mask.shape), crop)
    weight = next(net.parameters())
    x = complex_to_channels(images.input)[None].to(dtype=weight.dtype, device=weight.device)
    return channels_to_complex(net(x)[0].float().cpu()) * images.scale


def _reconstruct_with_measurements(net: nn.Module, kspace: np.ndarray, mask: np.ndarray,
                                   config: dict[str, Any]) -> Tensor:
    """An unrolled network (``net.needs_measurements``): full-grid ESPIRiT maps and the masked k-space divided by
    the slice scale (as in training, :func:`convexrecon.data.classical.slice_problem`), passed to
    ``net.reconstruct_measured``; the ``(crop, crop)`` result is scaled back."""
    limit = mask_func_of(config).calibration_limit(mask.shape)
    masked = kspace * mask
    maps = espirit_maps(masked, calibration_width(mask, limit))
    images = sense_images(masked, mask, limit, int(net.crop), maps=maps)
    return net.reconstruct_measured(masked / images.scale, maps, mask) * images.scale
