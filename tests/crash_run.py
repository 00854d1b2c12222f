"""A small training run for the kill test (``test_reliability_kill.py``): ``python -m tests.crash_run OUT``.

Trains four convex blocks layer-wise (a checkpoint per block), then the
end-to-end Adam baseline (a checkpoint per epoch), and saves both models
into ``OUT``. Prints ``ready`` once imported and ``done SECONDS`` at the end,
so the test can kill it at random moments of the training itself.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

from convexrecon.stack.baselines import train_end_to_end
from convexrecon.stack.layerwise import BlockSettings, train_layerwise
from convexrecon.stack.network import ReconNet


def main(out: Path) -> None:
    torch.set_num_threads(1)
    print("ready", flush=True)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    targets = torch.randn(6, 2, 12, 11, generator=gen)
    inputs = targets + 0.3 * torch.randn(6, 2, 12, 11, generator=gen)
    blocks = [BlockSettings(kernel_size=3, num_arrangements=3, tol=1e-4, max_iter=300)] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train_layerwise(inputs, targets, blocks, seed=1, patch_size=6, patches_per_slice=2,
                                 checkpoint_dir=out / "checkpoints")
    result.network.save(out / "convex")
    net = ReconNet.plain([4, 4], 3, seed=2)
    train_end_to_end(net, inputs, targets, epochs=12, batch_size=2, seed=3, checkpoint_dir=out / "checkpoints")
    net.save(out / "adam")
    print(f"done {time.perf_counter() - start:.3f}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
