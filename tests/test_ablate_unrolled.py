"""``benchmarks/ablate_unrolled.py`` and ``bench_cs.py``: usage errors name the option (runs are benchmarks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("args, message", [
    (["--variants", "{not json"], "argument --variants: expected a JSON list of objects"),
    (["--variants", '[{"stage": 3}]'], "unknown settings ['stage']"),
    (["--volumes", "2"], "argument --volumes: expected at least 3"),
])
def test_bad_arguments_name_the_option(tmp_path: Path, args: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "benchmarks.ablate_unrolled", "--out", str(tmp_path),
                          *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not any(tmp_path.iterdir())  # refused before any data are written


@pytest.mark.parametrize("args, message", [
    (["--lambdas", "0.003,-1"], "argument --lambdas: expected comma-separated numbers > 0"),
    (["--iterations", "100,x"], "argument --iterations: expected comma-separated ints >= 1"),
    (["--shifts", "0"], "argument --shifts: expected comma-separated ints >= 1"),
    (["--shifts", "9"], "argument --shifts: expected at most 8. Got 9"),
])
def test_bench_cs_bad_arguments_name_the_option(tmp_path: Path, args: list[str], message: str) -> None:
    run = subprocess.run([sys.executable, "-m", "benchmarks.bench_cs", "--out", str(tmp_path), *args],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not any(tmp_path.iterdir())
