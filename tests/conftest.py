"""Shared fixtures: a small synthetic data set in the real fastMRI layout.

Sizes are odd where possible (k-space 64 × 45) so that shape bugs surface,
and small (6 coils) so that ESPIRiT runs in well under a second per slice.
"""

from __future__ import annotations

import os

# On small problems, OpenBLAS's worker threads and torch's OpenMP pool fight over the
# 2 cores: sigpy's ESPIRiT SVD of a 64 x 45 slice then takes ~1 s instead of ~10 ms and
# the data tests 4x longer. One BLAS thread (set before NumPy loads; an explicit setting
# wins) removes the contention; torch keeps its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# The same for torch's intra-op pool: CI has 2 cores and several tests start subprocesses
# (distributed ranks, the kill/resume runs); one thread per process keeps them from thrashing.
torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run, so that the test command's verdict depends on the code only
# (a random draw once failed CI on a bug unrelated to the change under test). To search new examples, run e.g.
# HYPOTHESIS_PROFILE=explore python3 -m pytest -q tests/test_reliability_files.py
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

from convexrecon.data.synthetic import make_synthetic  # noqa: E402

SHAPE = (64, 45)
RECON = (32, 32)
COILS = 6
SLICES = 3
VOLUMES = 2
CROP = 31


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two volumes of three slices, 6 coils, 64 × 45 k-space, SNR 40."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, volumes=VOLUMES, slices=SLICES, coils=COILS, seed=0, shape=SHAPE, recon=RECON, snr=40.0)
    return root


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One volume of two slices, for tests that rebuild caches several times."""
    root = tmp_path_factory.mktemp("tiny")
    make_synthetic(root, volumes=1, slices=2, coils=COILS, seed=1, shape=SHAPE, recon=RECON, snr=40.0)
    return root


def save_tiny_cnn(directory: Path, data: dict | None = None) -> Path:
    """An untrained 1-block CNN saved with the config `train` writes (``data``: its mask settings, by default
    Poisson 4x with a 16 x 16 calibration square, crop CROP), its 1x1 layer scaled down so that its output stays
    near the zero-filled input."""
    import torch

    from convexrecon.stack.network import ReconNet

    settings = data or {"mask": "poisson", "acceleration": 4.0, "crop": CROP, "calib": 16, "seed": 0}
    net = ReconNet.plain([2], 3, seed=0, config={"data": settings})
    with torch.no_grad():
        net.second.weight.mul_(0.01)
    net.save(directory)
    return directory


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny problems: the thread pool only adds contention on a busy
    machine (10x slower). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _cache_outside_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's default cache directory ($CONVEXRECON_CACHE) points into the test session's temporary tree."""
    monkeypatch.setenv("CONVEXRECON_CACHE", str(tmp_path_factory.getbasetemp() / "convexrecon-cache"))
