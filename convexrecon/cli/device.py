"""The ``--device`` option shared by every command (``prepare``, ``train``, ``reconstruct``, ``evaluate``).

Default ``cuda`` when CUDA is available, else ``cpu``. The value is checked when the
arguments are parsed, so an unknown device (``--device nosuch``) or one this machine lacks
(``--device cuda`` without CUDA) is a usage error: ``argument --device: ...``, exit code 2.
"""

from __future__ import annotations

import argparse

from convexrecon.devices import default_device, parse_device  # noqa: F401  (re-exported)


def add_device_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Register ``--device`` on ``parser``; ``what`` says what runs on it (for ``--help``)."""
    default = default_device()
    parser.add_argument("--device", type=parse_device, default=parse_device(default), metavar="DEVICE",
                        help=f"{what}: cpu, cuda or cuda:N (default {default}; cuda when available)")
