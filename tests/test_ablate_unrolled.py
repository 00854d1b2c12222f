"""``benchmarks/ablate_unrolled.py``: usage errors name the option (the runs themselves are benchmarks)."""

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
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablate_unrolled.py"), "--out", str(tmp_path),
                          *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not any(tmp_path.iterdir())  # refused before any data are written
