"""``benchmarks/probe_stage.py``: its stage features and its argument checks (the run itself is a benchmark)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import probe_stage as probe  # an import error fails these tests, never skips them

ROOT = Path(__file__).resolve().parents[1]


def test_box_blur_keeps_constants_and_is_a_low_pass() -> None:
    h = torch.full((1, 2, 9, 11), 3.0)
    assert torch.allclose(probe.box_blur(h, 2), h)
    g = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = probe.box_blur(g, 4)
    assert out.shape == g.shape
    assert float(out.std()) < 0.5 * float(g.std())  # a low-pass: white noise loses most of its energy


@pytest.mark.parametrize("args, message", [
    (["--features", "x+wavelets"], "--features"),
    (["--thresholds", "a,b"], "--thresholds"),
    (["--chain", "-1"], "--chain"),
    (["--chain-lambda", "0"], "--chain-lambda"),
])
def test_bad_arguments_name_the_option(args: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "benchmarks.probe_stage", *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
