"""The structure :func:`solvers.admm.solve_relu_program_admm` needs from a block's operator.

For the exact ReLU program of a conv block (DESIGN.md §2) the cone block of
every group is ``C_g = (2 D_i - I) X``, so ``C_g^T C_g = X^T X`` (the Gram
matrix of the zero-padded patches, ``d x d`` with ``d = C_in k^2``), and the
prediction reads the cone values: ``D_i X u = D_i (2 D_i - I) X u``, i.e.
``A = M C`` with ``M z = sum_i D_i (z_{u,i} - z_{w,i})``. Neither ``X`` nor
``D`` is materialised: the Gram matrix is accumulated chunk by chunk from
unfolded patches, and ``M`` is a mask multiply.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from solvers.comm import Local

from .arrangements import ArrangementConv, patch_matrix
from .streaming import ChunkSource, StreamingArrangementConv

PATCH_CHUNK_BYTES = 32 * 2**20


def patch_gram(x: Tensor, kernel_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``X^T X`` of the zero-padded ``k``-patches of ``x`` (``(N, C_in, *spatial)``), accumulated in ``dtype``."""
    d = x.shape[1] * kernel_size ** (x.ndim - 2)
    per_image = max(1, x[0, 0].numel() * d * torch.empty((), dtype=dtype).element_size())
    step = max(1, PATCH_CHUNK_BYTES // per_image)
    gram = torch.zeros(d, d, dtype=dtype, device=x.device)
    for start in range(0, x.shape[0], step):
        patches = patch_matrix(x[start:start + step].to(dtype), kernel_size)
        gram += patches.T @ patches
    return gram


def admm_structure(operator: ArrangementConv | StreamingArrangementConv, x: Tensor | ChunkSource, kernel_size: int,
                   comm: Local | None = None) -> tuple[Tensor, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(gram, pick, spread)`` for :func:`solvers.admm.solve_relu_program_admm`.

    ``gram`` is ``X^T X`` summed over all shards, in the operator's precision;
    for streamed inputs it is accumulated chunk by chunk, and the masks must be
    cached (booleans within the streaming mask budget).
    """
    comm = comm or Local()
    if isinstance(x, ChunkSource):
        gram = sum(patch_gram(x.load(i), kernel_size) for i in range(len(x)))
        dtype = x.dtype
    else:
        gram, dtype = patch_gram(x, kernel_size), x.dtype
    return comm.sum_tensor(gram).to(dtype), *selection(operator)


def relu_prediction(operator: ArrangementConv | StreamingArrangementConv) -> Callable[[Tensor, Tensor], Tensor]:
    """``(v, C v) -> sum_i (X u_i)_+ - (X w_i)_+``: the predictions of the ReLU block made from ``v``.

    Read off the cone values: on a row with ``D_i = 1`` the cone value is
    ``X u``, on a row with ``D_i = 0`` it is ``-X u``; so ``(X u)_+`` is
    ``(C u)_+`` where the mask is on and ``(-C u)_+`` where it is off. Equals
    the convex model's ``A v`` when ``C v >= 0``.
    """
    pick, _ = selection(operator)

    def prediction(v: Tensor, cone: Tensor) -> Tensor:
        return pick(torch.clamp(cone, min=0.0)) - pick(torch.clamp(-cone, min=0.0), complement=True)

    return prediction


def selection(operator: ArrangementConv | StreamingArrangementConv
              ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """``(pick, spread)``: ``z -> M z`` (cone values to predictions) and its adjoint ``theta -> M^T theta``."""
    if isinstance(operator, StreamingArrangementConv) and operator.relu:
        if operator._masks is None:
            raise ValueError("relu_method='admm' on streamed inputs needs the arrangement masks cached (they exceed "
                             f"the mask budget of {operator.mask_cache_bytes} bytes): pass a smaller data set per "
                             "process (shard it) or use relu_method='pdhg'")
        masks = torch.cat(operator._masks)
    elif isinstance(operator, ArrangementConv) and operator.relu:
        masks = operator.masks  # (N, P, *spatial) booleans
    else:
        raise TypeError(f"operator must be a relu ArrangementConv or StreamingArrangementConv; "
                        f"got {type(operator).__name__}")
    values: dict[tuple[torch.dtype, torch.device], Tensor] = {}  # the masks as numbers, made once per precision

    def numbers(like: Tensor) -> Tensor:
        key = (like.dtype, like.device)
        if key not in values:
            values[key] = masks[:, :, None].to(device=like.device, dtype=like.dtype)
        return values[key]

    def pick(z: Tensor, complement: bool = False) -> Tensor:  # (N, 2, P, C, *spatial) -> (N, C, *spatial)
        m = numbers(z)
        return ((z[:, 0] - z[:, 1]) * (1 - m if complement else m)).sum(dim=1)

    def spread(theta: Tensor) -> Tensor:  # (N, C, *spatial) -> (N, 2, P, C, *spatial)
        part = numbers(theta) * theta[:, None]
        return torch.stack([part, -part], dim=1)

    return pick, spread
