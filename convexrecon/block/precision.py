"""Floating-point precision switches shared by every solver and trainer."""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def tf32_mode(allowed: bool):
    """Set torch's TF32 switches (cuDNN convolutions, CUDA matrix products) inside the block; restore them after.

    The package's default everywhere is ``allowed=False`` (full float32), so that solves, trainers and
    baselines compare at the same precision; no effect on the CPU.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
