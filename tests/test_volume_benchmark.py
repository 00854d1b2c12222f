"""``run_volume.py --quick`` and ``run_explain.py`` end to end (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_run_volume_quick(tmp_path) -> None:
    out = tmp_path / "volume"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_volume", "--quick", "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results["reconstruction"]) >= {"zero_filled", "cs_l1_wavelet", "end_to_end", "layerwise_convex"}
    assert results["memory"]["end_to_end_does_not_fit_layerwise_does"]
    assert (out / "examples.png").stat().st_size > 0


@pytest.mark.slow
def test_run_explain(tmp_path) -> None:
    out = tmp_path / "explain"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run_explain", "--out", str(out)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "explain.json").read_text())
    assert set(results["pixels"]) == {"edge", "flat tissue", "background"}
    for pixel in results["pixels"].values():
        assert pixel["max_abs_difference"] < 1e-9  # f(x) = J(x) x: no biases, positively homogeneous
    for name in ("regions.png", "filters.png", "psf.png"):
        assert (out / name).stat().st_size > 0
