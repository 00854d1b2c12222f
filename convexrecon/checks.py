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
            raise TypeError(f"{name} must be a real numeric array; got numpy dtype {value.dtype}")
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, C, H, W); got {type(value).__name__}")
    if value.is_complex():
        raise TypeError(f"{name} must be real; got complex dtype {value.dtype} (split complex images into real and imaginary channels)")
    if value.dtype == torch.bool:
        raise TypeError(f"{name} must be a real floating tensor; got dtype torch.bool")
    if value.ndim not in (4, 5):
        raise ValueError(f"{name} must have shape (N, C, H, W); got ndim {value.ndim} with shape {tuple(value.shape)} "
                         f"(volumes: (N, C, D, H, W), ndim 5)")
    if value.numel() == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(value.shape)}")
    if value.device.type == "meta":
        raise ValueError(f"{name} must hold data; got a tensor on the 'meta' device")
    value = value.to(device=device, dtype=dtype)
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"{name} must be finite; found {bad} NaN/Inf values")
    return value


def check_pair(inputs: Tensor, targets: Tensor) -> None:
    if inputs.ndim != targets.ndim:
        raise ValueError(f"inputs and targets must both be images (N, C, H, W) or both volumes (N, C, D, H, W); "
                         f"got shapes {tuple(inputs.shape)} and {tuple(targets.shape)}")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets must have the same number of images N; got {inputs.shape[0]} and {targets.shape[0]}")
    if inputs.shape[2:] != targets.shape[2:]:
        raise ValueError(
            f"inputs and targets must have the same spatial size (H, W); got {tuple(inputs.shape[2:])} and {tuple(targets.shape[2:])}"
        )


def positive_int(name: str, value: Any, *, odd: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value}")
    if odd and value % 2 == 0:
        raise ValueError(f"{name} must be odd (padding k//2 keeps the image size only for odd k); got {value}")
    return int(value)


def positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float > 0; got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite float > 0; got {value}")
    return value


def choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return value


def device_of(value: Any) -> torch.device:
    if value is None:
        return torch.device("cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda:0'; got {value!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {value!r} was requested but CUDA is not available on this machine")
    return device


def float_dtype(value: Any) -> torch.dtype:
    if value not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {value!r}")
    return value
