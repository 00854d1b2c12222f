r"""ReLU hyperplane arrangements of convolutional patches, as matrix-free operators.

For a batch ``x`` of shape ``(N, C_in, H, W)``, the patch matrix ``X`` has one
row per output pixel (``torch.nn.functional.unfold(x, k, padding=k//2)``
order, ``d = C_in k^2`` columns). A gate ``g_i`` of shape ``(C_in, k, k)``
defines the arrangement ``D_i = diag(1[X g_i >= 0])``, i.e. the mask
``conv2d(x, g_i) >= 0``. The convex two-layer program (DESIGN.md §2) needs

.. math:: v \mapsto \Big(\sum_i D_i X v_{ic}\Big)_c, \qquad
          r \mapsto (X^\top D_i r_c)_{i,c},

which are one ``conv2d`` with ``P * C_out`` output channels, a mask multiply
and a sum over ``i``, and the weight gradient of that convolution. Neither
``X`` nor ``D`` is ever materialised (except by :func:`patch_problem`, for the
small reference problems).

The variable is a tensor of conv weights of shape ``(S * P * C_out, C_in, k, k)``,
groups ordered ``(s, i, c)``; ``S = 1`` for the gated program and ``S = 2`` for
the exact ReLU program (``v`` then ``w``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_weight


def draw_gates(num: int, channels: int, kernel_size: int, seed: int, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu") -> Tensor:
    """``num`` i.i.d. N(0, I) gate filters ``(num, channels, k, k)`` from a seeded generator.

    Drawn in float64 on the CPU and then cast, so a seed gives the same gates
    on every device and in every precision.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    gates = torch.randn((num, channels, kernel_size, kernel_size), generator=gen, dtype=torch.float64)
    return gates.to(device=device, dtype=dtype)


def arrangement_masks(x: Tensor, gates: Tensor) -> Tensor:
    """Boolean masks ``conv2d(x, g_i) >= 0`` of shape ``(N, P, H, W)``."""
    return F.conv2d(x, gates.to(x.dtype), padding=gates.shape[-1] // 2) >= 0


class ArrangementConv:
    """Matrix-free data operator (and, for ReLU, cone operator) of one block.

    Parameters
    ----------
    x
        Inputs ``(N, C_in, H, W)``.
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
        intermediate); default all at once.
    """

    def __init__(self, x: Tensor, masks: Tensor, kernel_size: int, num_outputs: int, *, relu: bool,
                 chunk_size: int | None = None) -> None:
        self.x = x
        self.masks = masks
        # the masks as numbers in the working precision, made once (they fit whenever x does)
        self._mask_values = masks.to(x.dtype)
        self.k = kernel_size
        self.num_outputs = num_outputs
        self.relu = relu
        self.signs = 2 if relu else 1
        self.num_arrangements = masks.shape[1]
        self.chunk_size = chunk_size or x.shape[0]
        self.var_shape = (self.signs * self.num_arrangements * num_outputs, x.shape[1], kernel_size, kernel_size)

    def to(self, dtype: torch.dtype) -> "ArrangementConv":
        """The same operator (same masks) in another precision."""
        return ArrangementConv(self.x.to(dtype), self.masks, self.k, self.num_outputs, relu=self.relu,
                               chunk_size=self.chunk_size)

    def zeros(self) -> Tensor:
        return torch.zeros(self.var_shape, dtype=self.x.dtype, device=self.x.device)

    def _chunks(self):
        for start in range(0, self.x.shape[0], self.chunk_size):
            yield slice(start, start + self.chunk_size)

    def _expand(self, v: Tensor, sl: slice) -> tuple[Tensor, Tensor]:
        x, m = self.x[sl], self._mask_values[sl]
        n, _, h, w = x.shape
        z = F.conv2d(x, v, padding=self.k // 2).view(n, self.signs, self.num_arrangements, self.num_outputs, h, w)
        return z, m[:, None, :, None]

    def forward(self, v: Tensor):
        preds, cones = [], []
        for sl in self._chunks():
            z, m = self._expand(v, sl)
            signed = z[:, 0] - z[:, 1] if self.relu else z[:, 0]
            preds.append((signed * m[:, 0]).sum(dim=1))
            if self.relu:
                cones.append(z * (2 * m - 1))
        pred = torch.cat(preds)
        return (pred, torch.cat(cones)) if self.relu else pred

    def adjoint(self, r: Tensor, mu: Tensor | None = None) -> Tensor:
        out = None
        for sl in self._chunks():
            x, m = self.x[sl], self._mask_values[sl][:, None, :, None]
            n, _, h, w = x.shape
            back = m * r[sl][:, None, None]  # (n, 1, P, C, H, W)
            if self.relu:
                back = torch.cat([back, -back], dim=1)
                if mu is not None:
                    back = back + (2 * m - 1) * mu[sl]
            grad = conv2d_weight(x, self.var_shape, back.reshape(n, -1, h, w).contiguous(), padding=self.k // 2)
            out = grad if out is None else out + grad
        return out


def patch_problem(x: Tensor, masks: Tensor, targets: Tensor, kernel_size: int):
    """Explicit ``(X, D, Y)`` of a small block problem, for the cvxpy reference.

    Returns float64 numpy arrays ``X (n, C_in k^2)``, ``D (n, P)`` and
    ``Y (n, C_out)`` with rows in ``(N, H, W)`` order.
    """
    X = F.unfold(x.double(), kernel_size, padding=kernel_size // 2)  # (N, d, H*W)
    X = X.transpose(1, 2).reshape(-1, X.shape[1])
    D = masks.permute(0, 2, 3, 1).reshape(-1, masks.shape[1])
    Y = targets.double().permute(0, 2, 3, 1).reshape(-1, targets.shape[1])
    return X.cpu().numpy(), D.cpu().numpy(), Y.cpu().numpy()
