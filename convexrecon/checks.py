"""Validation at the package boundary: every message names the parameter,
what was expected and what was found."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from torch import Tensor


FLOAT_DTYPES = (torch.float32, torch.float64)
"""The input dtypes the solvers take. Half precision (float16, bfloat16) is refused rather than computed in float32:
the block would come back in float32 and could not run on the caller's half-precision images."""


def _looks_channels_last(shape: tuple[int, ...]) -> bool:
    """``(N, H, W, C)`` (or ``(N, D, H, W, C)``) with a handful of channels last and image-sized axes before."""
    return shape[-1] <= 3 and min(shape[1:-1]) >= 8


def as_batch(name: str, value: Any, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A finite real ``(N, C, H, W)`` (image) or ``(N, C, D, H, W)`` (volume) tensor of ``dtype`` on ``device``.

    Float32 and float64 tensors and NumPy arrays are accepted (NumPy arrays are converted); a tensor that
    requires grad is detached (the solvers never backpropagate into their data). Integer, bool and
    half-precision data, complex data and channels-last shapes are refused with the conversion to use.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise TypeError(f"The '{name}' parameter must be a real numeric array. Got numpy dtype {value.dtype} instead.")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"The '{name}' parameter must be a torch.Tensor or numpy.ndarray of shape (N, C, H, W). Got {type(value).__name__} instead.")
    value = value.detach()
    if value.is_complex():
        raise TypeError(f"The '{name}' parameter must be real. Got complex dtype {value.dtype} (split complex images into real and imaginary channels) instead.")
    if value.dtype == torch.bool:
        raise TypeError(f"The '{name}' parameter must be a real floating tensor. Got dtype torch.bool instead.")
    if value.dtype not in FLOAT_DTYPES:
        hint = ("half precision is not supported: the solvers and the returned block work in float32 or float64"
                if value.is_floating_point() else "integer images are refused rather than guessed at")
        raise TypeError(f"The '{name}' parameter must be a floating tensor of dtype torch.float32 or torch.float64. "
                        f"Got dtype {value.dtype} instead ({hint}; convert with .float() or .double()).")
    if value.ndim not in (4, 5):
        raise ValueError(f"The '{name}' parameter must have shape (N, C, H, W). Got ndim {value.ndim} with shape {tuple(value.shape)} "
                         f"instead (volumes: (N, C, D, H, W), ndim 5).")
    if _looks_channels_last(tuple(value.shape)):
        raise ValueError(f"The '{name}' parameter must be channels-first (N, C, H, W). Got shape {tuple(value.shape)}, "
                         f"which looks channels-last (N, H, W, C), instead: pass x.permute(0, 3, 1, 2) "
                         f"(volumes: x.permute(0, 4, 1, 2, 3)).")
    if value.numel() == 0:
        raise ValueError(f"The '{name}' parameter must be non-empty. Got shape {tuple(value.shape)} instead.")
    if value.device.type == "meta":
        raise ValueError(f"The '{name}' parameter must hold data. Got a tensor on the 'meta' device instead.")
    value = value.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"The '{name}' parameter must be finite. Found {bad} NaN/Inf values instead.")
    return value


def check_pair(inputs: Tensor, targets: Tensor, kernel_size: int | None = None) -> None:
    """Images and targets of one problem: same N and spatial size; ``kernel_size`` (when given) fits the image."""
    if inputs.ndim != targets.ndim:
        raise ValueError(f"The 'inputs' and 'targets' must both be images (N, C, H, W) or both volumes "
                         f"(N, C, D, H, W). Got shapes {tuple(inputs.shape)} and {tuple(targets.shape)} instead.")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"The 'inputs' and 'targets' must have the same number of images N. Got {inputs.shape[0]} and {targets.shape[0]} instead.")
    if inputs.shape[2:] != targets.shape[2:]:
        raise ValueError(
            f"The 'inputs' and 'targets' must have the same spatial size (H, W). Got {tuple(inputs.shape[2:])} and {tuple(targets.shape[2:])} instead."
        )
    check_kernel_fits(kernel_size, tuple(inputs.shape[2:]))


def check_kernel_fits(kernel_size: int | None, spatial: tuple[int, ...]) -> None:
    """A ``kernel_size`` no larger than the image's smaller in-plane side ``min(H, W)`` (None: nothing to check).

    The depth of a volume is not checked: a one-slice volume with a 3D kernel is the image problem (zero padding).
    """
    side = min(spatial[-2:])
    if kernel_size is not None and int(kernel_size) > side:
        raise ValueError(f"The 'kernel_size' parameter must be at most the image's smaller side {side} (images "
                         f"{'x'.join(str(n) for n in spatial)}). Got {kernel_size} instead.")


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
    expected = f"The '{name}' parameter must be a float tensor (N, 2, H, W) (volumes: (N, 2, D, H, W))"
    if isinstance(x, np.ndarray):
        raise TypeError(f"{expected}. Got a numpy.ndarray {x.dtype} {x.shape} instead (convert with "
                        f"torch.from_numpy(x).float()).")
    if not isinstance(x, Tensor) or x.ndim not in (4, 5) or not x.is_floating_point():
        shape = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{expected}. Got {shape} instead.")
    if x.shape[1] != 2:
        last = " (it looks channels-last: pass x.permute(0, 3, 1, 2))" if x.shape[-1] == 2 else ""
        raise ValueError(f"{expected}. Got shape {tuple(x.shape)}{last} instead.")
    return as_batch(name, x, dtype=x.dtype, device=x.device)  # float32/64, non-empty, holds data, finite, detached


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
