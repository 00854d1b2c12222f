"""Data-parallel block solve: one process against ``torchrun`` ranks, same problem, same gates.

    python -m benchmarks.bench_distributed                                # 1 process, 1 thread
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_distributed.py   # 2 ranks, 1 thread each

Every rank builds the same seeded problem (``--images`` images of 2 x 64 x 64,
a planted ReLU conv net plus noise), keeps its contiguous share of the images,
and calls ``fit_layer`` (which sees the initialized process group and shards the
objective). Rank 0 prints one JSON line: world size, seconds, iterations,
status, primal objective and relative gap. ``--out FILE`` also writes it there.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import torch

import convexrecon as cr  # noqa: E402
from convexrecon.io import write_text  # noqa: E402


def problem(images: int, size: int, k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(images, 2, size, size, generator=gen)
    teacher = torch.randn(8, 2, k, k, generator=gen) / k
    y = torch.nn.functional.conv2d(torch.relu(torch.nn.functional.conv2d(x, teacher, padding=k // 2)),
                                   torch.randn(2, 8, 1, 1, generator=gen) / 3)
    return x, y + 0.1 * y.std() * torch.randn(y.shape, generator=gen)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=5)
    parser.add_argument("--arrangements", type=int, default=16)
    parser.add_argument("--activation", choices=["gated", "relu"], default="gated")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rank, world = 0, 1
    if "RANK" in os.environ:  # launched by torchrun
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    x, y = problem(args.images, args.size, args.kernel_size)
    share = torch.arange(args.images).tensor_split(world)[rank]
    x, y = x[share], y[share]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        # beta from the full data set: a fixed ratio of beta_max (computed sharded, the same on every rank)
        start = time.perf_counter()
        block = cr.fit_layer(x, y, kernel_size=args.kernel_size, num_arrangements=args.arrangements, seed=1,
                             activation=args.activation, tol=args.tol, beta=None)
        seconds = time.perf_counter() - start
    rep = block.report
    row = {"world_size": world, "threads_per_rank": args.threads, "images": args.images, "size": args.size,
           "k": args.kernel_size, "P": args.arrangements, "activation": args.activation, "seconds": seconds,
           "iterations": rep.iterations, "status": rep.status.value, "primal": rep.primal,
           "relative_gap": rep.relative_gap}
    if rank == 0:
        print(json.dumps(row))
        if args.out:
            write_text(args.out, json.dumps(row) + "\n")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
