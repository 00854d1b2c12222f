"""Validation at the package boundary: every message names the parameter,
what was expected and what was found."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch import Tensor


def as_batch(name: str, value: Any, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A finite real ``(N, C, H, W)`` (image) or ``(N, C, D, H, W)`` (volume) tensor of ``dtype`` on ``device``."""
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise TypeError(f"The '{name}' parameter must be a real numeric array. Got numpy dtype {value.dtype} instead.")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"The '{name}' parameter must be a torch.Tensor or numpy.ndarray of shape (N, C, H, W). Got {type(value).__name__} instead.")
    if value.is_complex():
        raise TypeError(f"The '{name}' parameter must be real. Got complex dtype {value.dtype} (split complex images into real and imaginary channels) instead.")
    if value.dtype == torch.bool:
        raise TypeError(f"The '{name}' parameter must be a real floating tensor. Got dtype torch.bool instead.")
    if value.ndim not in (4, 5):
        raise ValueError(f"The '{name}' parameter must have shape (N, C, H, W). Got ndim {value.ndim} with shape {tuple(value.shape)} "
                         f"instead (volumes: (N, C, D, H, W), ndim 5).")
    if value.numel() == 0:
        raise ValueError(f"The '{name}' parameter must be non-empty. Got shape {tuple(value.shape)} instead.")
    if value.device.type == "meta":
        raise ValueError(f"The '{name}' parameter must hold data. Got a tensor on the 'meta' device instead.")
    value = value.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"The '{name}' parameter must be finite. Found {bad} NaN/Inf values instead.")
    return value


def check_pair(inputs: Tensor, targets: Tensor) -> None:
    if inputs.ndim != targets.ndim:
        raise ValueError(f"The 'inputs' and 'targets' must both be images (N, C, H, W) or both volumes "
                         f"(N, C, D, H, W). Got shapes {tuple(inputs.shape)} and {tuple(targets.shape)} instead.")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"The 'inputs' and 'targets' must have the same number of images N. Got {inputs.shape[0]} and {targets.shape[0]} instead.")
    if inputs.shape[2:] != targets.shape[2:]:
        raise ValueError(
            f"The 'inputs' and 'targets' must have the same spatial size (H, W). Got {tuple(inputs.shape[2:])} and {tuple(targets.shape[2:])} instead."
        )


def positive_int(name: str, value: Any, *, odd: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"The '{name}' parameter must be an int. Got {type(value).__name__} {value!r} instead.")
    if value < 1:
        raise ValueError(f"The '{name}' parameter must be an int >= 1. Got {value} instead.")
    if odd and value % 2 == 0:
        raise ValueError(f"The '{name}' parameter must be odd (padding k//2 keeps the image size only for odd k). Got {value} instead.")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"The '{name}' parameter must be a float > 0. Got {type(value).__name__} {value!r} instead.")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"The '{name}' parameter must be a finite float > 0. Got {value} instead.")
    return value


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"The '{name}' parameter must be one of {', '.join(repr(o) for o in options)}. Got {value!r} instead.")
    return value


def device_of(value: Any) -> torch.device:
    if value is None:
        return torch.device("cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"The 'device' parameter must be a torch device such as 'cpu' or 'cuda:0'. Got {value!r} instead.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter must name a device of this machine. Got {value!r} instead "
                         f"(CUDA is not available on this machine).")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"The 'device' parameter must name a device of this machine. Got {value!r} instead "
                         f"(this machine has {torch.cuda.device_count()} CUDA device(s)).")
    return device


def float_dtype(value: Any) -> torch.dtype:
    if value not in (torch.float32, torch.float64):
        raise ValueError(f"The 'dtype' parameter must be torch.float32 or torch.float64. Got {value!r} instead.")
    return value


def check_images(name: str, x: Any) -> Tensor:
    """A non-empty, finite float tensor: images ``(N, 2, H, W)`` or volumes ``(N, 2, D, H, W)`` (then every
    block is 3D), with data (not on the ``meta`` device)."""
    if not isinstance(x, Tensor) or x.ndim not in (4, 5) or x.shape[1] != 2 or not x.is_floating_point():
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"The '{name}' parameter must be a float tensor (N, 2, H, W) (volumes: (N, 2, D, H, W)). "
                         f"Got {shape} instead.")
    return as_batch(name, x, dtype=x.dtype, device=x.device)  # non-empty, holds data, finite


def check_same_device(**tensors: Tensor) -> None:
    """All ``tensors`` on one device (the trainers never move data behind the caller's back)."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        found = ", ".join(f"'{name}' on {device}" for name, device in devices.items())
        raise ValueError(f"The training tensors must be on one device. Got {found}.")


def training_device(device: Any, **tensors: Tensor | None) -> torch.device:
    """The device a trainer runs on: ``device``, or where ``tensors`` are when ``device`` is None.

    With ``device=None`` every tensor must already be on one device (:func:`check_same_device`);
    an explicit ``device`` is validated (:func:`device_of`) and the caller moves its tensors
    there once, at the boundary.
    """
    present = {name: t for name, t in tensors.items() if isinstance(t, Tensor)}
    if device is None:
        check_same_device(**present)
        return next(iter(present.values())).device if present else torch.device("cpu")
    return device_of(device)


def bool_flag(name: str, value: Any) -> bool:
    """A plain bool (``allow_tf32``, ``progress``): numbers and strings are refused."""
    if not isinstance(value, bool):
        raise TypeError(f"The '{name}' parameter must be a bool. Got {type(value).__name__} {value!r} instead.")
    return value
