"""Reductions over data shards, so that one solver code serves one process or many.

A solver sees its data through an operator whose outputs (predictions,
constraint values, residuals) live on the local shard, while the variable
``v`` is replicated. Every quantity that sums over the data — a squared
residual norm, an inner product of data-space tensors, the adjoint ``A^T r`` —
is reduced with the ``Comm`` passed to the solver. :class:`Local` does
nothing; :class:`TorchDistributed` all-reduces over a ``torch.distributed``
process group (gloo on CPU, NCCL on GPU), so every rank takes the same steps
and returns the same ``v``.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Local:
    """One process holds all the data: reductions are the identity."""

    world_size = 1

    def sum(self, value: float) -> float:
        return value

    def max(self, value: float) -> float:
        return value

    def sum_tensor(self, tensor: Tensor) -> Tensor:
        return tensor

    def broadcast(self, tensor: Tensor) -> Tensor:
        """Rank 0's ``tensor`` on every rank."""
        return tensor


class TorchDistributed(Local):
    """All-reduce over a ``torch.distributed`` group; scalars travel in float64 on ``device``."""

    def __init__(self, device: torch.device | str = "cpu", group=None) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("TorchDistributed needs torch.distributed to be initialized (init_process_group)")
        self._dist = dist
        self.group = group
        self.device = torch.device(device)
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)

    def _reduce(self, value: float, op) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        self._dist.all_reduce(t, op=op, group=self.group)
        return float(t)

    def sum(self, value: float) -> float:
        return self._reduce(value, self._dist.ReduceOp.SUM)

    def max(self, value: float) -> float:
        return self._reduce(value, self._dist.ReduceOp.MAX)

    def sum_tensor(self, tensor: Tensor) -> Tensor:
        tensor = tensor.contiguous()
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM, group=self.group)
        return tensor

    def broadcast(self, tensor: Tensor) -> Tensor:
        tensor = tensor.contiguous()
        source = 0 if self.group is None else self._dist.get_global_rank(self.group, 0)
        self._dist.broadcast(tensor, src=source, group=self.group)
        return tensor


class ShardedOperator:
    """An operator on the local shard whose adjoint is summed over all shards.

    ``forward`` stays local (its output is shard-sized); ``adjoint`` returns
    the full ``A^T r`` (and ``+ C^T mu``), identical on every rank.
    """

    def __init__(self, operator, comm: Local) -> None:
        self.operator = operator
        self.comm = comm

    def forward(self, v: Tensor):
        return self.operator.forward(v)

    def adjoint(self, *args) -> Tensor:
        return self.comm.sum_tensor(self.operator.adjoint(*args))

    def to(self, dtype: torch.dtype) -> "ShardedOperator":
        return ShardedOperator(self.operator.to(dtype), self.comm)

    def zeros(self) -> Tensor:
        return self.operator.zeros()


def sharded(operator, comm: Local):
    """``operator`` with its adjoint summed over shards (unchanged for one process, and for None)."""
    if operator is None or comm.world_size == 1:
        return operator
    return ShardedOperator(operator, comm)
