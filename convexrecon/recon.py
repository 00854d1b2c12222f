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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.inputcache import InputCache, initial_key, numpy_complex, precision_of
from convexrecon.data.masks import CENTER_FRACTION, MaskFunc
from convexrecon.mri.espirit import calibration_width, coil_maps
from convexrecon.mri.fft import center_crop, channels_to_complex, complex_to_channels, data_device, ifft2c
from convexrecon.mri.sense import sense_images


def mask_func_of(config: dict[str, Any]) -> MaskFunc:
    """The undersampling mask a model was trained with, from its config's ``data`` settings."""
    data = config.get("data", {})
    return MaskFunc(data.get("mask", "poisson"), data.get("acceleration", 4.0),
                    data.get("center_fraction", CENTER_FRACTION), data.get("calib", 16), data.get("seed", 0))


UNDERSAMPLED_FRACTION = 0.01  # more exactly-zero k-space entries than this: the data are already undersampled


def sampled_entries(kspace: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the k-space positions where any coil holds a nonzero value."""
    return np.asarray(kspace != 0).any(axis=0)


def mask_kind(mask: np.ndarray) -> str:
    """``"lines"`` when every row of ``mask`` is the same (whole phase-encoding columns), else ``"2D"``."""
    mask = np.asarray(mask, dtype=bool)
    return "lines" if bool((mask == mask[:1]).all()) else "2D"


def mask_acceleration(mask: np.ndarray) -> float:
    """Acceleration of a mask: positions over sampled positions (inf for an empty mask)."""
    count = int(np.count_nonzero(mask))
    return float(mask.size) / count if count else float("inf")


@dataclass(frozen=True)
class Sampling:
    """Where the masks of a volume's slices come from.

    Attributes
    ----------
    source : {"file mask", "zeroed k-space", "model mask"}
        The file's ``mask`` dataset; the zero pattern of k-space that is already
        undersampled (fastMRI challenge files without a mask); or the model's own
        training mask, applied retrospectively to fully sampled k-space.
    kind : {"lines", "2D"}
        Column (line) sampling or 2D (e.g. Poisson-disc) sampling, seen on slice 0.
    acceleration : float
        Acceleration of slice 0's mask.
    file_mask : numpy.ndarray or None
        The file's ``(H, W)`` mask when ``source == "file mask"``.
    """

    source: str
    kind: str
    acceleration: float
    file_mask: np.ndarray | None = None

    def mask(self, kspace: np.ndarray, volume: FastMRIVolume, slice_index: int, mask_func: MaskFunc,
             cache_dir: str | Path | None = None) -> np.ndarray:
        """The ``(H, W)`` mask of one slice whose k-space is ``kspace`` (already read); ``cache_dir`` keeps drawn
        Poisson-disc masks (:mod:`convexrecon.data.masks`)."""
        if self.file_mask is not None:
            return self.file_mask
        if self.source == "zeroed k-space":
            return sampled_entries(kspace)
        return mask_func.for_slice(kspace.shape[-2:], volume.path.name, slice_index, cache_dir)

    def describe(self) -> str:
        """One line for the user, e.g. ``"file mask: lines, 4.0x"``."""
        return f"{self.source}: {self.kind}, {self.acceleration:.1f}x"

    def mismatch(self, mask_func: MaskFunc) -> str | None:
        """Why this sampling differs from the training one (kind or acceleration off by > 10 %), or None."""
        if self.source == "model mask":
            return None
        trained = "2D" if mask_func.kind == "poisson" else "lines"
        problems = []
        if self.kind != trained:
            problems.append(f"{self.kind} sampling, the model was trained on {mask_func.kind} masks")
        if abs(self.acceleration - mask_func.acceleration) > 0.1 * mask_func.acceleration:
            problems.append(f"acceleration {self.acceleration:.1f}x, the model was trained at "
                            f"{mask_func.acceleration:g}x")
        return "; ".join(problems) or None


def volume_sampling(volume: FastMRIVolume, mask_func: MaskFunc, cache_dir: str | Path | None = None) -> Sampling:
    """Detect how a file is sampled: its ``mask`` dataset, zeroed k-space, or fully sampled.

    Already undersampled data (a ``mask`` dataset, or more than 1 % of k-space
    positions exactly zero in every coil on slice 0) keep their own sampling and
    are never undersampled again; fully sampled data get ``mask_func``'s masks.

    Raises
    ------
    ValueError
        If the file's ``mask`` fits neither ``(W,)``, ``(H, W)`` nor the k-space's shape.
    """
    shape = volume.shape[-2:]
    with h5py.File(volume.path, "r") as handle:
        stored = np.asarray(handle["mask"]).astype(bool) if "mask" in handle else None
    if stored is not None:
        if stored.size == shape[1]:
            mask = np.broadcast_to(stored.reshape(1, -1), shape).copy()
        elif stored.shape[-2:] == tuple(shape):
            mask = stored.reshape(-1, *shape)[0].copy()
        else:
            raise ValueError(f"The 'mask' dataset of '{volume.path.name}' must have shape ({shape[1]},) or "
                             f"{tuple(shape)}. Got {stored.shape} instead.")
        return Sampling("file mask", mask_kind(mask), mask_acceleration(mask), mask)
    pattern = sampled_entries(volume.kspace(0))
    if 1.0 - pattern.mean() > UNDERSAMPLED_FRACTION:
        return Sampling("zeroed k-space", mask_kind(pattern), mask_acceleration(pattern))
    first = mask_func.for_slice(shape, volume.path.name, 0, cache_dir)
    return Sampling("model mask", mask_kind(first), mask_acceleration(first))


def volume_masks(volume: FastMRIVolume, mask_func: MaskFunc, cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """The ``(H, W)`` mask of every slice (:func:`volume_sampling`): the file's own sampling when it has one
    (a ``mask`` dataset or zeroed k-space), else ``mask_func``'s (``cache_dir`` as in :meth:`Sampling.mask`)."""
    sampling = volume_sampling(volume, mask_func, cache_dir)
    if sampling.file_mask is not None:
        return [sampling.file_mask] * volume.num_slices
    if sampling.source == "zeroed k-space":
        return [sampled_entries(volume.kspace(s)) for s in range(volume.num_slices)]
    return [mask_func.for_slice(volume.shape[-2:], volume.path.name, s, cache_dir) for s in range(volume.num_slices)]


def model_crop(net: nn.Module, shape: tuple[int, int]) -> int:
    """The crop a model was trained at (``config["data"]["crop"]``, else an unrolled network's ``crop``), default
    ``min(320, H, W)``."""
    trained = getattr(net, "crop", None)
    default = int(trained) if isinstance(trained, int) else min(320, *shape)
    return int((getattr(net, "config", None) or {}).get("data", {}).get("crop", default))


@torch.no_grad()
def reconstruct_slice(net: nn.Module, kspace: np.ndarray | Tensor, mask: np.ndarray | Tensor, *,
                      crop: int | None = None, maps: np.ndarray | None = None, return_input: bool = False,
                      device: str | torch.device | None = None, cache: InputCache | None = None
                      ) -> Tensor | tuple[Tensor, Tensor]:
    """Reconstruct one slice from its k-space: ``(coils, H, W)`` complex and ``(H, W)`` mask.

    Parameters
    ----------
    net
        A trained :class:`~convexrecon.stack.network.ReconNet` (fully convolutional: it runs at any crop).
    kspace, mask
        Entries outside ``mask`` are ignored.
    crop
        Output side, for both architectures; default the model's training crop (``net.config["data"]["crop"]``,
        else ``min(320, H, W)``).
    maps
        Precomputed ESPIRiT maps; estimated from the calibration region when omitted. For a layer-wise CNN
        ``(coils, crop, crop)`` (cropped, e.g. from :class:`~convexrecon.data.mapcache.MapCache`); for an unrolled
        network (``net.needs_measurements``) full-grid ``(coils, H, W)`` (e.g. :meth:`InputCache.maps
        <convexrecon.data.inputcache.InputCache.maps>`).
    return_input
        Also return the zero-filled SENSE image the network was given.
    device
        Where ESPIRiT, the SENSE image and the network run; None: the device of ``net``'s
        parameters. With an explicit ``device``, ``net`` must already be there
        (``net.to(device)``), else ``ValueError`` naming both.
    cache
        For an unrolled network: an :class:`~convexrecon.data.inputcache.InputCache` its start images
        (:meth:`~convexrecon.stack.unrolled.UnrolledNet.initial`, the CS images) are read from or stored in, so
        that reconstructing the same data again skips them; the result is the same bit for bit. Not used by the
        layer-wise CNN.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        ``(crop, crop)`` complex64 image at physical scale (and the zero-filled one).
    """
    kspace = np.asarray(kspace.numpy() if isinstance(kspace, Tensor) else kspace)
    mask = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask).astype(bool)
    if kspace.ndim != 3 or not np.iscomplexobj(kspace):
        raise ValueError(f"The 'kspace' parameter must be complex (coils, H, W). Got {kspace.dtype} shape {kspace.shape} instead.")
    if mask.shape != kspace.shape[-2:]:
        raise ValueError(f"The 'mask' parameter must have shape {kspace.shape[-2:]}. Got {mask.shape} instead.")
    if cache is not None and not isinstance(cache, InputCache):
        raise ValueError(f"The 'cache' parameter must be an InputCache (convexrecon.data.inputcache) or None. "
                         f"Got {type(cache).__name__} instead.")
    config = getattr(net, "config", {})
    crop = model_crop(net, kspace.shape[-2:]) if crop is None else int(crop)
    if getattr(net, "needs_measurements", False):  # unrolled networks: data consistency with the k-space
        image, zero_filled = _reconstruct_with_measurements(net, kspace, mask, config, crop, maps, cache)
        return (image, zero_filled) if return_input else image
    weight = next(net.parameters())
    run = weight.device if device is None else data_device(device)
    if weight.device != run:
        raise ValueError(f"The 'device' parameter must be the device of 'net'. Got {str(run)!r} with 'net' on "
                         f"{str(weight.device)!r} instead (move it with net.to(device)).")
    if maps is None:
        images = sense_images(kspace * mask, mask, mask_func_of(config).calibration_limit(mask.shape), crop,
                              device=run)
        zero_filled, scale = images.input, images.scale
    else:
        zero_filled = cropped_adjoint(kspace * mask, maps, crop)
        scale = float(zero_filled.abs().max()) or 1.0
        zero_filled = zero_filled / scale
    x = complex_to_channels(zero_filled)[None].to(dtype=weight.dtype, device=run)
    image = channels_to_complex(net(x)[0].float().cpu()) * scale
    return (image, zero_filled.cpu() * scale) if return_input else image


def cropped_adjoint(kspace: np.ndarray, maps: np.ndarray, crop: int) -> Tensor:
    """``center_crop(A^H kspace)`` from maps already cropped to ``(coils, crop, crop)``.

    The coil combination is pixel-wise, so cropping the coil images first gives the
    same image as the full-size adjoint followed by the crop.
    """
    coil_images = center_crop(ifft2c(torch.from_numpy(np.asarray(kspace, dtype=np.complex64))), (crop, crop))
    maps_t = torch.from_numpy(np.asarray(maps, dtype=np.complex64))
    if tuple(maps_t.shape) != tuple(coil_images.shape):
        raise ValueError(f"The 'maps' parameter must have shape {tuple(coil_images.shape)}. "
                         f"Got {tuple(maps_t.shape)} instead.")
    return (maps_t.conj() * coil_images).sum(dim=0)


def _reconstruct_with_measurements(net: nn.Module, kspace: np.ndarray, mask: np.ndarray, config: dict[str, Any],
                                   crop: int, maps: np.ndarray | None = None, cache: InputCache | None = None
                                   ) -> tuple[Tensor, Tensor]:
    """An unrolled network (``net.needs_measurements``): full-grid ESPIRiT maps (``maps``, else estimated) and the
    masked k-space divided by the slice scale (as in training, :func:`convexrecon.data.problems.slice_problem`, at
    the output crop), passed to ``net.reconstruct_measured`` with its start images (from ``cache`` when given);
    the ``(crop, crop)`` result and the zero-filled image, scaled back."""
    limit = mask_func_of(config).calibration_limit(mask.shape)
    masked = kspace * mask
    if maps is None:
        maps = coil_maps(masked, calibration_width(mask, limit))
    elif np.shape(maps) != kspace.shape:
        raise ValueError(f"The 'maps' parameter of an unrolled network must be full-grid ESPIRiT maps of shape "
                         f"{kspace.shape}. Got {np.shape(maps)} instead.")
    images = sense_images(masked, mask, limit, crop, maps=maps)
    measured = np.asarray(masked / images.scale, dtype=np.complex64)
    initial = None
    if cache is not None and net.stage_inputs.precomputed:
        initial = _cached_initial(net, cache, measured, maps, mask, images.scale, crop)
    image = net.reconstruct_measured(measured, maps, mask, crop=crop, initial=initial) * images.scale
    return image, images.input * images.scale


def _cached_initial(net: nn.Module, cache: InputCache, measured: np.ndarray, maps: np.ndarray, mask: np.ndarray,
                    scale: float, crop: int) -> Tensor:
    """``net.initial`` of one slice at ``crop`` (``(1, StageInputs.images, H, W)``), from ``cache`` or computed
    from the tensors ``net.reconstruct_measured`` builds, so that the result equals its own computation."""
    k = torch.as_tensor(np.asarray(measured, dtype=np.complex64))[None]
    s = torch.as_tensor(np.asarray(maps, dtype=np.complex64))[None]
    m = torch.as_tensor(np.asarray(mask, dtype=np.float32))[None]
    x1 = net.start(k, s, m)
    shape = (net.stage_inputs.images, *x1.shape[-2:])
    key = initial_key(net.stage_inputs.options(), measured, maps, mask, scale, crop, precision_of(x1))

    def compute() -> np.ndarray:
        with net.at_crop(crop):  # the CS weights are relative to the maximum of the cropped x1
            return net.initial(x1, k, s, m)[0].cpu().numpy()

    return torch.from_numpy(cache.initial(key, shape, numpy_complex(x1), compute))[None]
