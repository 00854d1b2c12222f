"""A block's convex program, posed: validated data and gates, the communicator and the masked-conv operator.

:func:`block_program` is the one place that turns ``fit_layer``'s arguments into the program its solvers
take; :func:`beta_max` is the program's largest useful weight. Benchmarks that run a solver on the same
program as ``fit_layer`` (``benchmarks/bench_relu.py``) build it here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from solvers.comm import Local, ShardedOperator, TorchDistributed

from convexrecon import checks
from convexrecon.block import guard, streaming
from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates
from convexrecon.block.options import FitOptions


@dataclass(frozen=True)
class BlockProgram:
    """The program of one two-layer block, as :func:`~convexrecon.block.fit.fit_layer` poses it.

    Attributes
    ----------
    inputs
        ``(N, C_in, ...)`` tensor in the solve's dtype and device, or a
        :class:`~convexrecon.block.streaming.ChunkSource` for chunked inputs.
    targets
        ``(N, C_out, ...)`` tensor (chunked targets are gathered).
    gates
        ``(P, C_in, k, k)`` (volumes ``(P, C_in, k, k, k)``) gate filters, the same on every rank.
    comm
        :class:`solvers.comm.Local`, or the ``torch.distributed`` communicator of a sharded solve.
    operator
        The masked-conv operator ``v -> sum_i D_i X v_i`` on this process's data
        (:class:`~convexrecon.block.arrangements.ArrangementConv`, or its streaming twin).
    """

    inputs: Any
    targets: Tensor
    gates: Tensor
    comm: Local
    operator: ArrangementConv

    @property
    def streamed(self) -> bool:
        """Whether the inputs are read chunk by chunk (not in memory)."""
        return isinstance(self.inputs, streaming.ChunkSource)

    @property
    def sharded_operator(self) -> ShardedOperator:
        """The operator with every reduction summed over the ranks (the operator itself in one process)."""
        return ShardedOperator(self.operator, self.comm)


def block_program(inputs: Any, targets: Any, *, gates: Any = None, options: FitOptions | None = None,
                  **settings: Any) -> BlockProgram:
    """The program :func:`~convexrecon.block.fit.fit_layer` would solve with these arguments.

    ``inputs``, ``targets``, ``gates``, ``options`` and ``settings`` are those of ``fit_layer`` (settings:
    the fields of :class:`~convexrecon.block.options.FitOptions`); they are validated with the same messages,
    and the memory guard is checked as before a solve.
    """
    o = FitOptions.of(options, **settings)
    device, dtype, kernel_size, chunk_size, gate_chunk = o.device, o.dtype, o.kernel_size, o.chunk_size, o.gate_chunk
    if streaming.is_chunked(inputs):
        x = streaming.ChunkSource("inputs", inputs, chunk_size=chunk_size, dtype=dtype, device=device)
        y = (streaming.ChunkSource("targets", targets, chunk_size=chunk_size, dtype=dtype, device=device).gather()
             if streaming.is_chunked(targets) else checks.as_batch("targets", targets, dtype=dtype, device=device))
        streaming.stream_shapes_match(x, y)
        channels, spatial_dims = x.channels, len(x.spatial)
    else:
        x = checks.as_batch("inputs", inputs, dtype=dtype, device=device)
        y = checks.as_batch("targets", targets, dtype=dtype, device=device)
        checks.check_pair(x, y, kernel_size)
        channels, spatial_dims = x.shape[1], x.ndim - 2
    if gates is None:
        gates = draw_gates(o.num_arrangements, channels, kernel_size, o.seed, spatial_dims=spatial_dims, dtype=dtype,
                           device=device, sampling=o.gate_sampling)
    else:
        gates = _check_gates(gates, (channels,) + (kernel_size,) * spatial_dims, dtype, device)
    comm = _communicator(o.shard, device)
    if comm.world_size > 1:
        _check_shards(comm, channels, y)
        gates = comm.broadcast(gates.contiguous())
    relu = o.relu
    if isinstance(x, streaming.ChunkSource):  # streamed: only the masks may be resident, within their own budget
        operator = streaming.StreamingArrangementConv(x, gates, kernel_size, y.shape[1], relu=relu)
    else:
        guard.check_fit_memory(tuple(x.shape), y.shape[1], gates.shape[0], kernel_size, relu=relu,
                               chunk_size=chunk_size, gate_chunk=gate_chunk, dtype=dtype, device=device)
        operator = ArrangementConv(x, arrangement_masks(x, gates, gate_chunk), kernel_size, y.shape[1], relu=relu,
                                   chunk_size=chunk_size, gate_chunk=gate_chunk)
    return BlockProgram(x, y, gates, comm, operator)


def beta_max(operator: ArrangementConv, y: Tensor) -> float:
    """``max_{i,c} ||X^T D_i y_c||``: the gated solution is zero for ``beta >= beta_max``."""
    direction = operator.adjoint(y)  # for relu the w groups repeat the v groups with a sign flip
    return float(torch.linalg.vector_norm(direction.reshape(direction.shape[0], -1).double(), dim=1).max())


def _communicator(shard: bool | None, device: torch.device) -> Local:
    """The communicator of the solve: one process, or every rank of the initialized process group."""
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if shard is None:
        shard = initialized and dist.get_world_size() > 1
    if not shard:
        return Local()
    if not initialized:
        raise ValueError("shard=True needs torch.distributed to be initialized (torch.distributed.init_process_group)")
    return TorchDistributed(device)


def _check_shards(comm: TorchDistributed, input_channels: int, y: Tensor) -> None:
    """Every rank must hold images with the same channel counts."""
    for name, channels in (("inputs", input_channels), ("targets", y.shape[1])):
        low, high = -comm.max(-float(channels)), comm.max(float(channels))
        if low != high:
            raise ValueError(f"{name} must have the same number of channels on every rank; "
                             f"rank {comm.rank} has {channels}, others range from {int(low)} to {int(high)}")


def _check_gates(gates: Any, filter_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``filter_shape`` is ``(C_in, k, k)`` or ``(C_in, k, k, k)``."""
    expected = "(P, " + ", ".join(str(n) for n in filter_shape) + ")"
    if not isinstance(gates, (Tensor,)) and not hasattr(gates, "__array__"):
        raise TypeError(f"The 'gates' parameter must be a tensor of shape {expected}. Got {type(gates).__name__} instead.")
    gates = torch.as_tensor(gates)
    if gates.ndim != 1 + len(filter_shape) or tuple(gates.shape[1:]) != filter_shape or gates.shape[0] < 1:
        raise ValueError(f"The 'gates' parameter must have shape {expected} with P >= 1. Got {tuple(gates.shape)} instead.")
    if not bool(torch.isfinite(gates).all()):
        raise ValueError("The 'gates' parameter must be finite. Found NaN/Inf values instead.")
    return gates.to(device=device, dtype=dtype)
