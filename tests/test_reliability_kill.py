"""Crash safety: SIGKILL a training run at random moments, restart the same command, get the same model.

``tests/crash_run.py`` trains four convex blocks (a checkpoint per block) and
the end-to-end Adam baseline (a checkpoint per epoch) and saves both models.
For several seeds, the run is killed at a random moment of its training, then
the same command is run again until it completes; the saved models must equal
an uninterrupted run's bitwise (CPU, one thread). Every file the package writes
goes through a temporary name and a rename, so a kill leaves at most a hidden
``.*.tmp`` file, which no reader picks up.

This test is in the default suite (about 20-30 s on two busy cores).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import crash_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _start(out: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tests.crash_run", str(out)], cwd=ROOT, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # imports done: the training starts now
    assert line.strip() == "ready", (line, process.stderr.read() if process.stderr else "")
    return process


def _models(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: torch.load(out / name / "model.pt", weights_only=True) for name in ("convex", "adam")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, float]:
    """An uninterrupted run (in this process, one thread, as in the subprocesses) and its duration."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        crash_run.main(out)
    finally:
        torch.set_num_threads(threads)
    return _models(out), time.perf_counter() - start


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_killed_and_restarted_run_ends_with_the_same_model(reference, tmp_path: Path, seed: int) -> None:
    expected, duration = reference
    rng = np.random.default_rng(seed)
    out = tmp_path / "run"
    process = _start(out)
    time.sleep(float(rng.uniform(0.05, 0.85)) * duration)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    killed_during_training = process.returncode == -signal.SIGKILL
    assert killed_during_training, "the run ended before the kill; the kill point must lie inside the training"
    left = sorted(p.name for p in (out / "checkpoints").glob("*.pt")) if (out / "checkpoints").is_dir() else []
    # no visible half-written file: only complete checkpoints/models, or hidden temporaries
    for path in out.rglob("*"):
        if path.is_file() and path.name.startswith("."):
            assert path.name.endswith(".tmp"), path
    finished = subprocess.run([sys.executable, "-m", "tests.crash_run", str(out)], cwd=ROOT, env=ENV,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.splitlines()[-1].startswith("done")
    got = _models(out)
    for name, state in expected.items():
        assert state.keys() == got[name].keys()
        for key in state:
            assert torch.equal(state[key], got[name][key]), (name, key, "checkpoints at the kill:", left)
