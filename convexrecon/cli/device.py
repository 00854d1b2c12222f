"""The ``--device`` option shared by every command (``prepare``, ``train``, ``reconstruct``, ``evaluate``).

Default ``cuda`` when CUDA is available, else ``cpu``. The value is checked when the
arguments are parsed, so an unknown device (``--device nosuch``) or one this machine lacks
(``--device cuda`` without CUDA) is a usage error: ``argument --device: ...``, exit code 2.
"""

from __future__ import annotations

import argparse

import torch


def default_device() -> str:
    """``"cuda"`` when CUDA is available, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_device(value: str) -> torch.device:
    """``value`` as a torch device of this machine (CPU or CUDA); ``argparse.ArgumentTypeError`` otherwise."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a device such as 'cpu', 'cuda' or 'cuda:0'. Got {value!r}.")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"expected a CPU or CUDA device. Got {value!r}.")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"CUDA is not available on this machine. Got {value!r}; use --device cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"this machine has {torch.cuda.device_count()} CUDA device(s). "
                                             f"Got {value!r}.")
    return device


def add_device_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Register ``--device`` on ``parser``; ``what`` says what runs on it (for ``--help``)."""
    default = default_device()
    parser.add_argument("--device", type=parse_device, default=parse_device(default), metavar="DEVICE",
                        help=f"{what}: cpu, cuda or cuda:N (default {default}; cuda when available)")
