"""Data-parallel solves over torch.distributed (gloo, 2 CPU processes) equal single-process solves."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import convexrecon as cr
from convexrecon.block.arrangements import draw_gates

ROOT = Path(__file__).resolve().parents[1]


def _problem():
    """Three 7x5 two-channel images from a planted ReLU conv net, plus noise."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 2, 7, 5, generator=gen, dtype=torch.float64)
    hidden = torch.relu(torch.nn.functional.conv2d(x, torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64), padding=1))
    y = torch.nn.functional.conv2d(hidden, torch.randn(2, 3, 1, 1, generator=gen, dtype=torch.float64))
    y = y + 0.1 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    return x, y, draw_gates(4, 2, 3, seed=5)


def _fit(x, y, gates, activation):
    return cr.fit_layer(x, y, kernel_size=3, gates=gates, beta=0.5, activation=activation, dtype=torch.float64, tol=1e-9)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, activation: str, out: str) -> None:
    import torch.distributed as dist

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, gates = _problem()
        shard = slice(0, 1) if rank == 0 else slice(1, 3)  # uneven shards
        if rank == 1:
            gates = torch.zeros_like(gates)  # ignored: rank 0's gates are broadcast
        block = _fit(x[shard], y[shard], gates, activation)
        torch.save({"state": block.state_dict(), "primal": block.report.primal, "status": block.report.status.value,
                    "message": block.report.message}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_two_gloo_ranks_equal_one_process(tmp_path, activation):
    mp.start_processes(_worker, args=(2, _free_port(), activation, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for key, value in results[0]["state"].items():  # every rank returns the same block, bit for bit
        assert torch.equal(value, results[1]["state"][key]), key
    assert results[0]["primal"] == results[1]["primal"]
    assert results[0]["status"] == "optimal"
    if activation == "gated":  # the sharded Newton-CG steps (all-reduced Hessian products) are exercised too
        assert "Newton-CG steps" in results[0]["message"]
    x, y, gates = _problem()
    single = _fit(x, y, gates, activation)
    assert results[0]["primal"] == pytest.approx(single.report.primal, rel=1e-8)
    # the same network (same neurons): its predictions on all the data match the single-process block's
    with torch.no_grad():
        expected = single(x)
        single.load_state_dict(results[0]["state"])
        torch.testing.assert_close(single(x), expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_shard_true_without_process_group_is_refused():
    x, y, gates = _problem()
    with pytest.raises(ValueError, match="torch.distributed to be initialized"):
        cr.fit_layer(x, y, kernel_size=3, gates=gates, beta=0.5, activation="gated", shard=True)
