r"""ReLU hyperplane arrangements of convolutional patches, as matrix-free operators.

For a batch ``x`` of shape ``(N, C_in, H, W)`` (images) or ``(N, C_in, D, H, W)``
(volumes), the patch matrix ``X`` has one row per output pixel (voxel)
(``torch.nn.functional.unfold(x, k, padding=k//2)`` order in 2D,
``d = C_in k^2`` or ``C_in k^3`` columns). A gate ``g_i`` of shape ``(C_in, k, k)``
(or ``(C_in, k, k, k)``) defines the arrangement ``D_i = diag(1[X g_i >= 0])``,
i.e. the mask ``conv(x, g_i) >= 0``. The convex two-layer program (``docs/design.md`` §3) needs

.. math:: v \mapsto \Big(\sum_i D_i X v_{ic}\Big)_c, \qquad
          r \mapsto (X^\top D_i r_c)_{i,c},

which are one convolution with ``P * C_out`` output channels, a mask multiply
and a sum over ``i``, and the weight gradient of that convolution. The number
of spatial dimensions is read from the input (``x.ndim - 2``): ``conv2d`` /
``conv2d_weight`` for images, ``conv3d`` / ``conv3d_weight`` for volumes, one
code path for both (:func:`conv_functions`). Neither
``X`` nor ``D`` is ever materialised (except by :func:`patch_problem`, for the
small reference problems).

The variable is a tensor of conv weights of shape ``(S * P * C_out, C_in, k, ..., k)``,
groups ordered ``(s, i, c)``; ``S = 1`` for the gated program and ``S = 2`` for
the exact ReLU program (``v`` then ``w``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_weight, conv3d_weight

SPATIAL_DIMS = (2, 3)
_CONV = {2: (F.conv2d, conv2d_weight), 3: (F.conv3d, conv3d_weight)}


def conv_functions(spatial_dims: int):
    """``(conv, conv_weight)`` for 2 (images) or 3 (volumes) spatial dimensions.

    ``conv`` is ``torch.nn.functional.conv2d`` / ``conv3d``; ``conv_weight`` is
    its weight gradient ``torch.nn.grad.conv2d_weight`` / ``conv3d_weight``.
    """
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial dimensions must be one of {SPATIAL_DIMS} (inputs (N, C, H, W) or (N, C, D, H, W)); "
                         f"got {spatial_dims}")
    return _CONV[spatial_dims]


GATE_SAMPLINGS = ("gaussian", "antithetic")


def draw_gates(num: int, channels: int, kernel_size: int, seed: int, *, spatial_dims: int = 2,
               dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu",
               sampling: str = "gaussian") -> Tensor:
    """``num`` N(0, I) gate filters ``(num, channels, k, k)`` (or ``k, k, k``) from a seeded generator.

    ``sampling="gaussian"``: i.i.d. (``docs/design.md`` §3.3). ``"antithetic"``: ``ceil(num / 2)``
    i.i.d. gates followed by the negatives of the first ``floor(num / 2)``, so the
    arrangements come in complementary pairs ``D`` and ``I - D`` (equal up to the
    measure-zero pixels where ``X g = 0``). A pair of gated neurons with equal weights
    then computes the plain linear map ``X u``: a gated block holds every linear
    convolution of its input — in the layer-wise stack, the previous block's 1x1
    read-out too, so an added block can always reproduce what its predecessor
    predicted. Every gate is still N(0, I); only their independence is given up.

    Drawn in float64 on the CPU and then cast, so a seed gives the same gates
    on every device and in every precision.
    """
    conv_functions(spatial_dims)
    if sampling not in GATE_SAMPLINGS:
        raise ValueError(f"The 'sampling' of gates must be one of {GATE_SAMPLINGS}. Got {sampling!r} instead.")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    drawn = num if sampling == "gaussian" else (num + 1) // 2
    gates = torch.randn((drawn, channels) + (kernel_size,) * spatial_dims, generator=gen, dtype=torch.float64)
    if sampling == "antithetic":
        gates = torch.cat([gates, -gates[: num - drawn]])
    return gates.to(device=device, dtype=dtype)


def arrangement_masks(x: Tensor, gates: Tensor, gate_chunk: int | None = None) -> Tensor:
    """Boolean masks ``conv(x, g_i) >= 0`` of shape ``(N, P, H, W)`` (or ``(N, P, D, H, W)``).

    ``gate_chunk`` gates are convolved at a time (bounds the float intermediate).
    """
    if gates.ndim != x.ndim:
        raise ValueError(f"gates must have {x.ndim} dimensions for inputs of shape {tuple(x.shape)}; "
                         f"got shape {tuple(gates.shape)}")
    conv, _ = conv_functions(x.ndim - 2)
    step = gate_chunk or gates.shape[0]
    return torch.cat([conv(x, g.to(x.dtype), padding=gates.shape[-1] // 2) >= 0 for g in gates.split(step)], dim=1)


CHUNK_BYTES = 2 * 2**20


def default_chunk_size(input_shape: tuple[int, ...], out_channels: int, kernel_size: int, itemsize: int) -> int:
    """Images per chunk so that a chunk's conv output and unfolded patches stay near ``CHUNK_BYTES`` (2 MiB).

    Bigger buffers gain nothing (the work is the same) and, past the C
    allocator's mmap threshold, are returned to the system and faulted in again
    at every call: unchunked solves on 3e5 patches were 3-4x slower per
    iteration than chunked ones.
    """
    voxels = math.prod(input_shape[2:])
    per_image = max(out_channels, input_shape[1] * kernel_size ** (len(input_shape) - 2)) * voxels * itemsize
    return max(1, min(int(input_shape[0]), CHUNK_BYTES // max(per_image, 1)))


class ArrangementConv:
    """Matrix-free data operator (and, for ReLU, cone operator) of one block.

    Parameters
    ----------
    x
        Inputs ``(N, C_in, H, W)``, or ``(N, C_in, D, H, W)`` for volumes
        (then every convolution below is 3D; written for 2D).
    masks
        Arrangement masks ``(N, P, H, W)`` (see :func:`arrangement_masks`).
    kernel_size, num_outputs
        ``k`` and ``C_out``.
    relu
        True for the exact program: ``forward`` returns ``(A v, C v)`` with
        ``C v = ((2 D_i - I) X v_{sic})`` of shape ``(N, 2, P, C_out, H, W)``
        and ``adjoint(r, mu)``; False for the gated program: ``forward``
        returns ``A v`` and ``adjoint(r)``.
    chunk_size
        Images per chunk (bounds the ``N * S * P * C_out * H * W``
        intermediate); default :func:`default_chunk_size` (about 2 MiB).
    gate_chunk
        Arrangements per chunk: the convolution runs for ``gate_chunk`` gates
        at a time, so the intermediate is ``S * gate_chunk * C_out`` channels
        instead of ``S * P * C_out``, and the masks are kept only as booleans
        (converted chunk by chunk). For one large volume, where ``chunk_size``
        cannot help. Default: all gates at once, with the masks cached in the
        working precision. (The relu cone output ``C v`` is ``S * P * C_out``
        channels whatever the chunking.)
    """

    def __init__(self, x: Tensor, masks: Tensor, kernel_size: int, num_outputs: int, *, relu: bool,
                 chunk_size: int | None = None, gate_chunk: int | None = None, dtype: torch.dtype | None = None) -> None:
        self.x = x
        self.dtype = dtype or x.dtype
        self.masks = masks
        self.gate_chunk = gate_chunk
        # the masks as numbers in the working precision, made once (they fit whenever x does);
        # with gate chunks, or in a precision other than x's, they are converted chunk by chunk instead
        self._mask_values = masks.to(x.dtype) if gate_chunk is None and self.dtype == x.dtype else None
        self.k = kernel_size
        self.num_outputs = num_outputs
        self.relu = relu
        self.signs = 2 if relu else 1
        self.num_arrangements = masks.shape[1]
        self.chunk_size = chunk_size or default_chunk_size(
            tuple(x.shape), self.signs * (gate_chunk or self.num_arrangements) * num_outputs, kernel_size,
            torch.empty((), dtype=self.dtype).element_size())
        self._conv, self._conv_weight = conv_functions(x.ndim - 2)
        if kernel_size == 1 and all(size == 1 for size in x.shape[2:]):  # a dense layer: plain matrix products
            self._conv, self._conv_weight = _dense_conv, _dense_conv_weight
        self.var_shape = (self.signs * self.num_arrangements * num_outputs, x.shape[1]) + (kernel_size,) * (x.ndim - 2)

    def to(self, dtype: torch.dtype) -> "ArrangementConv":
        """The same operator (same inputs and masks, no copies) computing in another precision.

        The inputs and masks are cast chunk by chunk when used, so a float64
        certificate operator for float32 iterates costs no resident memory.
        """
        widen = max(1, torch.empty((), dtype=dtype).element_size() // self.x.element_size())
        # chunks shrink by the widening factor, so the transient buffers keep their size in bytes
        return ArrangementConv(self.x, self.masks, self.k, self.num_outputs, relu=self.relu,
                               chunk_size=max(1, self.chunk_size // widen), gate_chunk=self.gate_chunk, dtype=dtype)

    def zeros(self) -> Tensor:
        return torch.zeros(self.var_shape, dtype=self.dtype, device=self.x.device)

    def _chunks(self):
        for start in range(0, self.x.shape[0], self.chunk_size):
            yield slice(start, start + self.chunk_size)

    def _gate_slices(self) -> list[slice]:
        step = self.gate_chunk or self.num_arrangements
        return [slice(start, start + step) for start in range(0, self.num_arrangements, step)]

    def _masks(self, sl: slice, gs: slice) -> Tensor:
        """Mask values ``(n, 1, Pg, 1, H, W)`` of images ``sl`` and gates ``gs``."""
        m = self._mask_values[sl][:, gs] if self._mask_values is not None else self.masks[sl][:, gs].to(self.dtype)
        return m[:, None, :, None]

    def _groups(self, t: Tensor) -> Tensor:
        """View of a variable-shaped tensor as ``(S, P, C_out, C_in, k, ...)``."""
        return t.view(self.signs, self.num_arrangements, self.num_outputs, *self.var_shape[1:])

    def forward(self, v: Tensor):
        preds, cones = [], []
        for sl in self._chunks():
            x = self.x[sl].to(self.dtype)
            pred, cone_parts = None, []
            for gs in self._gate_slices():
                weights = self._groups(v)[:, gs].reshape(-1, *self.var_shape[1:])
                z = self._conv(x, weights, padding=self.k // 2)
                z = z.view(x.shape[0], self.signs, -1, self.num_outputs, *x.shape[2:])
                m = self._masks(sl, gs)
                signed = z[:, 0] - z[:, 1] if self.relu else z[:, 0]
                part = (signed * m[:, 0]).sum(dim=1)
                pred = part if pred is None else pred + part
                if self.relu:
                    cone_parts.append(z * (2 * m - 1))
            preds.append(pred)
            if self.relu:
                cones.append(torch.cat(cone_parts, dim=2))
        pred = torch.cat(preds)
        return (pred, torch.cat(cones)) if self.relu else pred

    def adjoint(self, r: Tensor, mu: Tensor | None = None) -> Tensor:
        gate_slices = self._gate_slices()
        out = None if len(gate_slices) == 1 else self.zeros()
        for sl in self._chunks():
            x = self.x[sl].to(self.dtype)
            for gs in gate_slices:
                m = self._masks(sl, gs)
                back = m * r[sl][:, None, None]  # (n, 1, Pg, C, H, W)
                if self.relu:
                    back = torch.cat([back, -back], dim=1)
                    if mu is not None:
                        back = back + (2 * m - 1) * mu[sl][:, :, gs]
                shape = (self.signs * back.shape[2] * self.num_outputs,) + tuple(self.var_shape[1:])
                back = back.reshape(x.shape[0], -1, *x.shape[2:]).contiguous()
                grad = self._conv_weight(x, shape, back, padding=self.k // 2)
                if len(gate_slices) == 1:
                    out = grad if out is None else out + grad
                else:
                    self._groups(out)[:, gs] += grad.view(self.signs, -1, self.num_outputs, *self.var_shape[1:])
        return out


def _dense_conv(x: Tensor, weight: Tensor, padding: int = 0) -> Tensor:
    """``conv(x, weight)`` for 1 x 1 kernels on 1 x 1 images: ``X W^T`` (several times faster than conv)."""
    out = x.reshape(x.shape[0], -1) @ weight.reshape(weight.shape[0], -1).T
    return out.reshape(out.shape + (1,) * (x.ndim - 2))


def _dense_conv_weight(x: Tensor, weight_shape: tuple[int, ...], grad_output: Tensor, padding: int = 0) -> Tensor:
    """The weight gradient of :func:`_dense_conv`: ``G^T X``."""
    return (grad_output.reshape(grad_output.shape[0], -1).T @ x.reshape(x.shape[0], -1)).reshape(weight_shape)


def patch_problem(x: Tensor, masks: Tensor, targets: Tensor, kernel_size: int):
    """Explicit ``(X, D, Y)`` of a small block problem, for the cvxpy reference.

    Returns float64 numpy arrays ``X (n, C_in k^s)``, ``D (n, P)`` and
    ``Y (n, C_out)`` with rows in ``(N, H, W)`` (or ``(N, D, H, W)``) order;
    the columns of ``X`` are ordered as a flattened conv weight ``(C_in, k, ..., k)``
    (in 2D exactly ``torch.nn.functional.unfold``'s order).
    """
    X = patch_matrix(x.double(), kernel_size)
    channels_last = lambda t: t.movedim(1, -1).reshape(-1, t.shape[1])  # noqa: E731
    return X.cpu().numpy(), channels_last(masks).cpu().numpy(), channels_last(targets.double()).cpu().numpy()


def patch_matrix(x: Tensor, kernel_size: int) -> Tensor:
    """Explicit patch matrix ``(N * prod(spatial), C_in * k^s)`` of zero-padded ``k``-windows (small inputs only)."""
    dims = x.ndim - 2
    conv_functions(dims)
    pad = kernel_size // 2
    windows = F.pad(x, (pad, pad) * dims)
    for axis in range(2, 2 + dims):
        windows = windows.unfold(axis, kernel_size, 1)  # appends one window axis per spatial axis
    # (N, C, *spatial, *window) -> (N, *spatial, C, *window)
    windows = windows.movedim(1, 1 + dims)
    return windows.reshape(-1, x.shape[1] * kernel_size**dims)
