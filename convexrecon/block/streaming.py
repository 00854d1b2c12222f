r"""Block problems whose inputs do not fit in memory: the operator streams them chunk by chunk.

``fit_layer`` accepts, instead of one ``(N, C_in, H, W)`` tensor, a *chunked*
data set: a list or tuple of tensors/arrays ``(N_i, C_in, H, W)`` (e.g.
memory-mapped files), or an ``h5py.Dataset`` of shape ``(N, C_in, H, W)``
read ``chunk_size`` images at a time. Every forward and adjoint of the solver
then passes over the chunks once: each chunk is loaded, moved to the device,
its arrangement masks are recomputed from the gates (or taken from a compact
boolean cache when it fits in ``mask_cache_bytes``), and it is dropped. The
problem solved is exactly the full one — nothing is subsampled.

Memory (in numbers of the working precision unless stated), with ``b`` the
largest chunk, ``n = N H W`` all patches, ``S = 1`` (gated) or 2 (relu):

* resident: about 6 ``n C_out`` (targets, predictions, FISTA/PDHG
  iterates), plus ``n P`` *bytes* when the masks are cached; for relu also
  about 6 ``n S P C_out`` for the constraint values and their multipliers —
  the exact program's dual lives on every patch, so streaming relu removes
  the inputs, not the multipliers, from memory;
* per chunk: ``b C_in H W`` (the chunk) + about 3 ``b S P C_out H W`` (the
  convolution with all gates and its masked copy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from convexrecon import checks
from convexrecon.block.arrangements import ArrangementConv, arrangement_masks

DEFAULT_STREAM_CHUNK = 8
DEFAULT_MASK_CACHE_BYTES = 2**30


def is_chunked(value: Any) -> bool:
    """True for the chunked data-set kinds ``fit_layer`` streams."""
    if isinstance(value, (list, tuple)):  # a list of arrays is chunks; a nested list of numbers is not
        return all(isinstance(chunk, (Tensor, np.ndarray)) for chunk in value)
    return _is_h5_dataset(value)


def _is_h5_dataset(value: Any) -> bool:
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py is a dependency
        return False
    return isinstance(value, h5py.Dataset)


class ChunkSource:
    """Validated, lazily loaded chunks of a data set of ``(N, C, H, W)`` images.

    Construction reads every chunk once to check shape, dtype and finiteness
    (so a bad chunk fails before the solve starts, naming its index).
    """

    def __init__(self, name: str, value: Any, *, chunk_size: int | None, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.name = name
        self.dtype = dtype
        self.device = device
        if _is_h5_dataset(value):
            if value.ndim not in (4, 5):
                raise ValueError(f"{name} must be an HDF5 dataset of shape (N, C, H, W) or (N, C, D, H, W); "
                                 f"got shape {value.shape}")
            step = chunk_size or DEFAULT_STREAM_CHUNK
            self._items = [(value, slice(s, min(s + step, value.shape[0]))) for s in range(0, value.shape[0], step)]
        else:
            if len(value) == 0:
                raise ValueError(f"The '{name}' parameter must hold at least one chunk. Got an empty {type(value).__name__} instead.")
            self._items = [(chunk, None) for chunk in value]
        self.counts: list[int] = []
        shape = None
        for i in range(len(self._items)):
            chunk = self.load(i, validate=True)
            if shape is not None and chunk.shape[1:] != shape:
                raise ValueError(f"{name} chunk {i} has shape {tuple(chunk.shape)}; every chunk must be "
                                 f"(N_i, {', '.join(map(str, shape))}) like chunk 0")
            shape = chunk.shape[1:]
            self.counts.append(chunk.shape[0])
        self.channels, self.spatial = shape[0], tuple(shape[1:])

    def __len__(self) -> int:
        return len(self._items)

    @property
    def num_images(self) -> int:
        return sum(self.counts)

    def load(self, i: int, *, validate: bool = False) -> Tensor:
        """Chunk ``i`` on the device in the working precision (checked when ``validate``)."""
        source, rows = self._items[i]
        raw = source[rows] if rows is not None else source
        if validate:  # chunks are tensors or arrays: is_chunked admits nothing else, h5py returns arrays
            return checks.as_batch(f"{self.name} chunk {i}", raw, dtype=self.dtype, device=self.device)
        return torch.as_tensor(raw).to(device=self.device, dtype=self.dtype)

    def gather(self) -> Tensor:
        """All chunks concatenated (for the targets, which are ``C_out / C_in`` the inputs' size)."""
        return torch.cat([self.load(i) for i in range(len(self))])

    def with_dtype(self, dtype: torch.dtype) -> "ChunkSource":
        clone = object.__new__(ChunkSource)
        clone.__dict__.update(self.__dict__, dtype=dtype)
        return clone


class StreamingArrangementConv:
    """:class:`~convexrecon.block.arrangements.ArrangementConv` over a :class:`ChunkSource`.

    Outputs (predictions, constraint values) are concatenated over chunks in
    order; adjoints are summed. Masks are cached as booleans when all of them
    fit in ``mask_cache_bytes`` and recomputed from ``gates`` otherwise.
    """

    def __init__(self, source: ChunkSource, gates: Tensor, kernel_size: int, num_outputs: int, *, relu: bool,
                 mask_cache_bytes: int = DEFAULT_MASK_CACHE_BYTES, _masks: list[Tensor] | None = None) -> None:
        self.source = source
        self.gates = gates
        self.k = kernel_size
        self.num_outputs = num_outputs
        self.relu = relu
        self.mask_cache_bytes = mask_cache_bytes
        signs = 2 if relu else 1
        self.var_shape = (signs * gates.shape[0] * num_outputs,) + tuple(gates.shape[1:])
        mask_bytes = source.num_images * gates.shape[0] * math.prod(source.spatial)
        if _masks is not None:
            self._masks = _masks
        elif mask_bytes <= mask_cache_bytes:
            self._masks = [arrangement_masks(source.load(i), gates) for i in range(len(source))]
        else:
            self._masks = None

    def to(self, dtype: torch.dtype) -> "StreamingArrangementConv":
        return StreamingArrangementConv(self.source.with_dtype(dtype), self.gates, self.k, self.num_outputs,
                                        relu=self.relu, mask_cache_bytes=self.mask_cache_bytes, _masks=self._masks)

    def zeros(self) -> Tensor:
        return torch.zeros(self.var_shape, dtype=self.source.dtype, device=self.source.device)

    def _chunk_operator(self, i: int) -> ArrangementConv:
        x = self.source.load(i)
        masks = self._masks[i] if self._masks is not None else arrangement_masks(x, self.gates)
        return ArrangementConv(x, masks, self.k, self.num_outputs, relu=self.relu)

    def _rows(self):
        start = 0
        for i, count in enumerate(self.source.counts):
            yield i, slice(start, start + count)
            start += count

    def forward(self, v: Tensor):
        outputs = [self._chunk_operator(i).forward(v) for i in range(len(self.source))]
        if self.relu:
            return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])
        return torch.cat(outputs)

    def adjoint(self, r: Tensor, mu: Tensor | None = None) -> Tensor:
        total = None
        for i, rows in self._rows():
            part = self._chunk_operator(i).adjoint(r[rows], None if mu is None else mu[rows])
            total = part if total is None else total + part
        return total


def stream_shapes_match(source: ChunkSource, targets: Tensor) -> None:
    if targets.shape[0] != source.num_images or tuple(targets.shape[2:]) != source.spatial:
        size = ", ".join(map(str, source.spatial))
        raise ValueError(f"targets must hold one (C_out, {size}) image per input image ({source.num_images}); "
                         f"got shape {tuple(targets.shape)}")
