"""Run metadata (time, machine, the command line that reproduces a run) and results files."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from convexrecon.io import write_text


def utc_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU, core count, torch version and whether CUDA is present."""
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}")


def command(script: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run from the repository root (``script``: e.g. ``"run_knee.py"``)."""
    module = "benchmarks." + script.removesuffix(".py")
    return " ".join(["python", "-m", module, *(argv if argv is not None else sys.argv[1:])])


def write_results(out: Path, results: dict[str, Any], markdown: str, stem: str = "results") -> None:
    """``out/<stem>.json`` and ``out/<stem>.md``, each written atomically."""
    write_text(out / f"{stem}.json", json.dumps(results, indent=2, default=str))
    write_text(out / f"{stem}.md", markdown)
