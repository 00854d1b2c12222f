"""Fig. 4 by measurement on CUDA: the largest batch of the paper's full architecture that trains in a memory budget.

On the CPU, ``run_knee.py`` reports the meta-device count instead
(:func:`convexrecon.analysis.memory.memory_table`).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from convexrecon import fit_layer
from convexrecon.analysis.memory import measured_max_batch, memory_table
from convexrecon.errors import MemoryBudgetError
from convexrecon.stack.baselines import pixel_loss
from convexrecon.stack.network import ReconNet


def measured_memory_table(device: torch.device, budget: int = 12 * 2**30) -> dict[str, Any]:
    """Fig. 4 by measurement on CUDA: the largest batch of 320x320 slices that runs within ``budget`` for one
    end-to-end Adam step, one Adam step of every layer-wise block, and one in-memory convex block solve
    (the paper's width: C_in 256, P 128 gated, k 7; a 2-iteration solve allocates what a full one does). Streaming
    (inputs as chunks) removes the convex solve's limit; it is not measured here."""
    widths, k, size = [256] * 4, 7, 320

    def adam_step(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
        loss = pixel_loss(module(x), y)
        loss.backward()
        optimizer.step()
        del optimizer, loss

    def end_to_end(b: int) -> None:
        net = ReconNet.plain(widths, k).to(device)
        x = torch.zeros(b, 2, size, size, device=device)
        adam_step(net, x, x)

    def block(c_in: int):
        def step(b: int) -> None:
            module = torch.nn.Sequential(torch.nn.Conv2d(c_in, 256, k, padding=k // 2, bias=False), torch.nn.ReLU(),
                                         torch.nn.Conv2d(256, 2, 1, bias=False)).to(device)
            h = torch.zeros(b, c_in, size, size, device=device)
            adam_step(module, h, torch.zeros(b, 2, size, size, device=device))
        return step

    def convex(b: int) -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.rand(b, 256, size, size, device=device, generator=gen)
        y = torch.randn(b, 2, size, size, device=device, generator=gen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_layer(x, y, kernel_size=k, num_arrangements=128, activation="gated", max_iter=2, device=device,
                      allow_tf32=True)

    rows = {"end_to_end": measured_max_batch(end_to_end, budget, device, limit=256)}
    blocks = []
    for i in range(len(widths)):
        result = measured_max_batch(block(2 if i == 0 else widths[i - 1]), budget, device, limit=256)
        blocks.append({"block": i + 1, "max_batch_12gb": result["max_batch"], "measurement": result})
    rows["convex_solve"] = measured_max_batch(convex, budget, device, limit=256, refusals=(MemoryBudgetError,))
    count = memory_table(widths, k, size, budget)  # kept next to the measurement, labelled as a count
    for b, c in zip(blocks, count["layerwise"]["blocks"]):
        b["batch_1"], b["batch_2"] = c["batch_1"], c["batch_2"]
    return {
        "architecture": count["architecture"], "budget_bytes": budget,
        "method": "measured on CUDA (" + str(torch.cuda.get_device_name(device)) + "): largest batch whose real step "
                  "ran under torch.cuda.set_per_process_memory_fraction(12 GiB); batch_1/batch_2 byte columns are "
                  "the meta-device count",
        "end_to_end": {"max_batch_12gb": rows["end_to_end"]["max_batch"], "measurement": rows["end_to_end"],
                       "batch_1": count["end_to_end"]["batch_1"], "batch_2": count["end_to_end"]["batch_2"]},
        "layerwise": {"blocks": blocks, "max_batch_12gb": min(b["max_batch_12gb"] for b in blocks),
                      "worst_block": min(blocks, key=lambda b: b["max_batch_12gb"])["block"]},
        "convex_solve": {"max_slices_12gb": rows["convex_solve"]["max_batch"], "measurement": rows["convex_solve"],
                         "note": "one in-memory fit_layer solve, C_in 256, P 128 gated, k 7, TF32; streaming "
                                 "inputs (lists of chunks, HDF5) remove this limit"},
        "count": count,
    }
