r"""Training memory per step, counted device-independently (the paper's Fig. 4).

The peak of one Adam step of a module is taken as

.. math:: M(B) = \text{params} + \text{grads} + \text{Adam state } (2\times)
          + \text{input batch} + \text{tensors saved for backward},

where the saved tensors are counted with
:func:`torch.autograd.graph.saved_tensors_hooks` (each tensor once, parameters
excluded; an input batch that autograd saves is counted once, not also as an input). Run on the ``meta`` device, no memory is allocated and no
arithmetic is done, so the paper's full architecture (256 channels, 7 x 7,
320 x 320) is measured on any machine. ``M`` is affine in the batch size;
:func:`max_batch` solves ``M(B) <= budget`` from ``M(1)`` and ``M(2)``.
Transient buffers of the backward pass (convolution workspaces, gradient
temporaries) are not counted, so real peaks are somewhat higher; on a GPU,
:func:`cuda_peak_bytes` gives ``torch.cuda.max_memory_allocated`` instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

GIB = 2**30


@dataclass(frozen=True)
class StepMemory:
    """Bytes of one training step, by kind."""

    params: int
    grads: int
    optimizer: int
    inputs: int
    saved: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.inputs + self.saved

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def step_memory(module: nn.Module, forward: Callable[[], tuple[Tensor, Tensor]],
                extra_inputs: int = 0, held: tuple[Tensor, ...] = ()) -> StepMemory:
    """Count one step's memory: ``forward()`` returns ``(prediction, target)`` (with graph).

    Only parameters with ``requires_grad`` get gradients and Adam state.
    ``extra_inputs`` adds bytes held outside autograd (e.g. the input batch).
    ``held`` are tensors held outside autograd (the input batch, the targets):
    counted as inputs unless autograd saved them too, so that a batch that the
    first convolution saves for backward is counted once.
    """
    param_ids = {id(p) for p in module.parameters()}
    saved: dict[int, Tensor] = {}

    def pack(t: Tensor) -> Tensor:
        if id(t) not in param_ids:
            saved[id(t)] = t
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        prediction, target = forward()
        loss = 0.5 * (prediction - target).pow(2).sum()
    loss.backward()
    trainable = [p for p in module.parameters() if p.requires_grad]
    params = sum(_nbytes(p) for p in module.parameters()) + sum(_nbytes(b) for b in module.buffers())
    grads = sum(_nbytes(p) for p in trainable)
    module.zero_grad(set_to_none=True)
    held_bytes = sum(_nbytes(t) for t in held if id(t) not in saved)
    return StepMemory(params=params, grads=grads, optimizer=2 * grads, inputs=int(extra_inputs) + held_bytes,
                      saved=sum(_nbytes(t) for t in saved.values()))


def max_batch(at_one: int, at_two: int, budget: int = 12 * GIB) -> int:
    """Largest ``B`` with ``M(1) + (B - 1) (M(2) - M(1)) <= budget`` (0 if even ``B = 1`` does not fit)."""
    per_sample = at_two - at_one
    if per_sample <= 0:
        raise ValueError(f"Memory must grow with the batch. Got M(1)={at_one}, M(2)={at_two}.")
    if at_one > budget:
        return 0
    return 1 + (budget - at_one) // per_sample


def end_to_end_memory(widths: list[int], kernel_size: int, size: int, batch: int,
                      device: str | torch.device = "meta", spatial_dims: int = 2) -> StepMemory:
    """One end-to-end step of a ReLU :class:`~convexrecon.stack.network.ReconNet` on ``size^spatial_dims`` inputs."""
    from convexrecon.stack.network import ReconNet

    net = ReconNet.plain(widths, kernel_size, spatial_dims=spatial_dims).to(device)
    x = torch.zeros((batch, 2) + (size,) * spatial_dims, device=device)
    target = torch.zeros_like(x)
    return step_memory(net, lambda: (net(x), target), held=(x, target))


def block_memory(in_channels: int, width: int, kernel_size: int, size: int, batch: int,
                 device: str | torch.device = "meta", spatial_dims: int = 2) -> StepMemory:
    """One step of a layer-wise block ``first -> relu -> second`` on precomputed features.

    The input features ``h_{i-1}`` (``in_channels``) and the residual target are
    counted as inputs; the frozen earlier layers run without autograd and their
    temporaries are freed before the step.
    """
    from convexrecon.block.module import CONV_MODULES

    conv = CONV_MODULES[spatial_dims]
    block = nn.Sequential(conv(in_channels, width, kernel_size, padding=kernel_size // 2, bias=False),
                          nn.ReLU(), conv(width, 2, 1, bias=False)).to(device)
    h = torch.zeros((batch, in_channels) + (size,) * spatial_dims, device=device)
    y = torch.zeros((batch, 2) + (size,) * spatial_dims, device=device)
    return step_memory(block, lambda: (block(h), y), held=(h, y))


def memory_table(widths: list[int], kernel_size: int, size: int, budget: int = 12 * GIB) -> dict[str, Any]:
    """End-to-end and per-block memory at batch 1 and 2, and the largest batch within ``budget``."""
    e1, e2 = (end_to_end_memory(widths, kernel_size, size, b) for b in (1, 2))
    blocks = []
    for i, width in enumerate(widths):
        c_in = 2 if i == 0 else widths[i - 1]
        b1, b2 = (block_memory(c_in, width, kernel_size, size, b) for b in (1, 2))
        blocks.append({"block": i + 1, "batch_1": b1.to_dict(), "batch_2": b2.to_dict(),
                       "max_batch_12gb": max_batch(b1.total, b2.total, budget)})
    worst = max(blocks, key=lambda b: b["batch_1"]["total"] + b["batch_2"]["total"])
    return {
        "architecture": {"widths": list(widths), "kernel_size": kernel_size, "size": size},
        "budget_bytes": budget,
        "method": "meta-device count: params + grads + Adam state + inputs + saved_tensors_hooks",
        "end_to_end": {"batch_1": e1.to_dict(), "batch_2": e2.to_dict(),
                       "max_batch_12gb": max_batch(e1.total, e2.total, budget)},
        "layerwise": {"blocks": blocks, "max_batch_12gb": min(b["max_batch_12gb"] for b in blocks),
                      "worst_block": worst["block"]},
    }


def cuda_peak_bytes(step: Callable[[], None]) -> int | None:
    """``torch.cuda.max_memory_allocated`` over one call of ``step`` (None without CUDA)."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def measured_max_batch(step: Callable[[int], None], budget: int = 12 * GIB, device: str | torch.device = "cuda",
                       limit: int = 4096, refusals: tuple[type[BaseException], ...] = ()) -> dict[str, Any]:
    """The largest batch whose step runs within ``budget`` bytes on a CUDA device, found by real allocation.

    ``step(b)`` runs one training step (or solve) at batch ``b``. The peak
    (``torch.cuda.max_memory_allocated``) at batches 1 and 2 gives an affine prediction ``B``;
    then, with the process capped at ``budget`` (``torch.cuda.set_per_process_memory_fraction``),
    real steps confirm it: upward while they fit, downward (bisection) after an out-of-memory
    error, so the answer is the largest batch that ran, never an extrapolation. Exceptions in
    ``refusals`` (e.g. :class:`~convexrecon.errors.MemoryBudgetError`, raised by a solve's memory
    guard before it allocates) count as "does not fit" too.

    Returns
    -------
    dict
        ``max_batch``, ``peak_batch_1``, ``peak_batch_2``, ``predicted``, ``tried`` (batch -> "ok"/"oom"),
        ``method``.
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter must be an available CUDA device. Got {str(device)!r} instead.")
    total = torch.cuda.get_device_properties(device).total_memory
    if budget > total:
        raise ValueError(f"The 'budget' parameter must be at most the device's {total} bytes. Got {budget} instead.")

    def peak(b: int) -> int | None:
        torch.cuda.empty_cache()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        try:
            step(b)
            torch.cuda.synchronize(device)
        except (torch.cuda.OutOfMemoryError, *refusals):
            torch.cuda.empty_cache()
            return None
        return int(torch.cuda.max_memory_allocated(device)) - base

    torch.cuda.set_per_process_memory_fraction(budget / total, device)
    tried: dict[int, str] = {}
    try:
        p1, p2 = peak(1), peak(2)
        tried.update({1: "ok" if p1 is not None else "oom", 2: "ok" if p2 is not None else "oom"})
        if p1 is None:
            return {"max_batch": 0, "peak_batch_1": None, "peak_batch_2": None, "predicted": 0, "tried": tried,
                    "method": "measured: batch 1 does not fit"}
        predicted = 1 if p2 is None else (limit if p2 <= p1 else max_batch(p1, p2, budget))
        predicted = min(predicted, limit)
        good, bad = 1 if p2 is None else 2, 2 if p2 is None else None
        b = max(predicted, good)
        while bad is None or bad - good > 1:
            if b in tried:
                b = good + 1 if bad is None else (good + bad) // 2
                if b in tried or b > limit:
                    break
            ok = peak(b) is not None
            tried[b] = "ok" if ok else "oom"
            if ok:
                good = max(good, b)
                if bad is None and b >= limit:
                    break
                b = b + max(1, b // 16) if bad is None else (good + bad) // 2
            else:
                bad = b if bad is None else min(bad, b)
                b = (good + bad) // 2
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    return {"max_batch": good, "peak_batch_1": p1, "peak_batch_2": p2, "predicted": predicted,
            "tried": {str(k): v for k, v in sorted(tried.items())},
            "method": "measured on CUDA: max_memory_allocated at batches 1 and 2 predicts B, real steps under "
                      "set_per_process_memory_fraction(budget) confirm it (largest batch that ran)"}
