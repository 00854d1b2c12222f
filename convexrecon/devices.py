"""Which device to run on: the default (CUDA when available) and a checked device from its name.

Used by the command line's ``--device`` option and by the benchmark scripts; :func:`parse_device` is an
``argparse`` type as it stands (its :class:`DeviceError` is both a ``ValueError`` and an
``argparse.ArgumentTypeError``, so a parser reports its message as ``argument --device: ...``).
"""

from __future__ import annotations

import argparse

import torch


class DeviceError(argparse.ArgumentTypeError, ValueError):
    """A device name that is not a CPU or CUDA device of this machine."""


def default_device() -> str:
    """``"cuda"`` when CUDA is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(value: str) -> torch.device:
    """``value`` as a torch device of this machine (CPU or CUDA); :class:`DeviceError` otherwise."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"expected a device such as 'cpu', 'cuda' or 'cuda:0'. Got {value!r}.") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"expected a CPU or CUDA device. Got {value!r}.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"CUDA is not available on this machine. Got {value!r}; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"this machine has {torch.cuda.device_count()} CUDA device(s). Got {value!r}.")
    return device
