r"""Reading a trained block or network as piecewise-linear filtering.

A two-layer block ``f(x) = second(sigma(first(x)))`` with ReLU (or gated
ReLU) is piecewise linear in ``x``. At a pixel ``p`` each hidden neuron ``j``
is either on or off, ``a_j(p) in {0, 1}`` (its *activation pattern*), and the
output there is one linear filter applied to the patch ``P_p x`` around ``p``:

.. math:: f(x)_c(p) = \Big\langle \sum_j a_j(p)\,\alpha_{cj}\,u_j,\ P_p x \Big\rangle,

with ``u_j`` the ``first`` filters and ``alpha_{cj}`` the ``second`` weights
(Pilanci & Ergen, ICML 2020: the block is a sum of "piecewise linear filters").
Pixels with the same pattern lie in the same *linear region*; the effective
filter is constant on a region. For the stacked network
(:class:`~convexrecon.stack.network.ReconNet`) the local linear map is the exact
Jacobian :math:`J = \partial \hat x / \partial x_0`, from autograd:

* the effective filter of the network at ``p`` is the row ``e_p^T J`` (how
  every input pixel contributes to the output at ``p``),
* its point-spread function at ``p`` is the column ``J e_p`` (how a point
  perturbation of the input at ``p`` spreads over the output).

Both include the skip connection (the identity at ``p``); gates of gated layers
are piecewise constant, so autograd's derivative through them (zero) is exact
away from the region boundaries. Everything works for images ``(N, C, H, W)``
and volumes ``(N, C, D, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convexrecon.block.arrangements import arrangement_masks


@dataclass(frozen=True)
class RegionMap:
    """Linear regions of one layer on a batch.

    Attributes
    ----------
    labels
        ``(N, *spatial)`` region index of every pixel, in ``0 .. num_regions - 1``
        (regions numbered by size, largest first).
    patterns
        ``(num_regions, m)`` boolean activation pattern of each region.
    sizes
        ``(num_regions,)`` number of pixels in each region.
    """

    labels: Tensor
    patterns: Tensor
    sizes: Tensor

    @property
    def num_regions(self) -> int:
        return int(self.sizes.numel())


def activation_patterns(layer: nn.Module, x: Tensor) -> Tensor:
    """Which hidden neurons are on at every pixel: boolean ``(N, m, *spatial)``.

    ``layer`` is a :class:`~convexrecon.block.module.ConvexBlock` or a
    :class:`~convexrecon.stack.network.HiddenLayer` (anything with ``first``,
    ``activation`` and, for ``"gated"``, ``gates`` and ``neuron_arrangement``).
    ReLU neuron ``j`` is on where ``first(x)_j > 0``; a gated neuron where its
    gate ``conv(x, g_{a(j)}) >= 0``.
    """
    _check_layer(layer, x)
    width = layer.first.out_channels
    if width == 0:
        return torch.zeros((x.shape[0], 0) + tuple(x.shape[2:]), dtype=torch.bool, device=x.device)
    with torch.no_grad():
        if layer.activation == "gated":
            return arrangement_masks(x, layer.gates)[:, layer.neuron_arrangement]
        return layer.first(x) > 0


def linear_regions(layer: nn.Module, x: Tensor) -> RegionMap:
    """Distinct activation patterns over all pixels of ``x`` and the region of every pixel."""
    patterns = activation_patterns(layer, x)
    flat = patterns.movedim(1, -1).reshape(-1, patterns.shape[1])
    if flat.shape[1] == 0:  # no neurons: one region
        unique = flat[:1]
        inverse = torch.zeros(flat.shape[0], dtype=torch.long, device=x.device)
    else:
        unique, inverse = torch.unique(flat, dim=0, return_inverse=True)
    sizes = torch.bincount(inverse, minlength=unique.shape[0])
    order = torch.argsort(sizes, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    labels = rank[inverse].reshape((x.shape[0],) + tuple(x.shape[2:]))
    return RegionMap(labels=labels, patterns=unique[order], sizes=sizes[order])


def network_regions(net: nn.Module, x: Tensor) -> list[RegionMap]:
    """Region map of every hidden layer of a :class:`~convexrecon.stack.network.ReconNet` on ``x``."""
    maps, h = [], x
    with torch.no_grad():
        for layer in net.layers:
            maps.append(linear_regions(layer, h))
            h = layer(h)
    return maps


def effective_filter(block: nn.Module, x: Tensor, pixel: Sequence[int]) -> Tensor:
    r"""The linear filter the block applies at ``pixel``: ``(C_out, C_in, k, k)`` (or ``k, k, k``).

    ``W_c = \sum_j a_j(p)\,\alpha_{cj}\,u_j``; the block's output at ``p`` is
    :func:`apply_filter` of it to the zero-padded patch of ``x`` around ``p``
    (exactly, since the block is linear on the region of ``p``).

    Parameters
    ----------
    block
        A :class:`~convexrecon.block.module.ConvexBlock` (``first``, ``second``, activation).
    x
        ``(N, C_in, *spatial)`` inputs.
    pixel
        ``(n, h, w)`` (or ``(n, d, h, w)``): sample and position.
    """
    n, *position = _check_pixel(x, pixel)
    pattern = activation_patterns(block, x[n:n + 1])[(0, slice(None), *position)]
    first = block.first.weight.detach()
    alpha = block.second.weight.detach().reshape(block.second.out_channels, -1)
    return torch.einsum("cm,m...->c...", alpha * pattern.to(alpha.dtype), first)


def apply_filter(filters: Tensor, x: Tensor, pixel: Sequence[int]) -> Tensor:
    """``<W_c, patch>`` for every output ``c``: filters ``(C_out, C_in, k, ...)`` at ``pixel`` of zero-padded ``x``."""
    n, *position = _check_pixel(x, pixel)
    k = filters.shape[-1]
    pad = k // 2
    padded = F.pad(x[n], (pad, pad) * (x.ndim - 2))
    patch = padded[(slice(None), *(slice(p, p + k) for p in position))]
    return torch.einsum("c...,...->c", filters, patch.to(filters.dtype))


def network_filter(net: nn.Module, x: Tensor, pixel: Sequence[int]) -> Tensor:
    r"""Effective filter of the whole network at ``pixel``: ``\partial \hat x_c(p) / \partial x``.

    Exact local Jacobian row from autograd, shape ``(C_out, C_in, *spatial)``
    (zero outside the receptive field), skip connection included.
    """
    n, *position = _check_pixel(x, pixel)
    x_n = x[n:n + 1].detach().clone().requires_grad_(True)
    out = net(x_n)
    rows = []
    for c in range(out.shape[1]):
        (grad,) = torch.autograd.grad(out[(0, c, *position)], x_n, retain_graph=c + 1 < out.shape[1])
        rows.append(grad[0].detach())
    return torch.stack(rows)


def point_spread_function(net: nn.Module, x: Tensor, pixel: Sequence[int]) -> Tensor:
    r"""Response of the network's local linearisation to a point at ``pixel``: ``J e_p``.

    Shape ``(C_out, C_in, *spatial)``: entry ``[c, c', q]`` is
    ``\partial \hat x_c(q) / \partial x_{c'}(p)`` (forward-mode autograd, one
    pass per input channel). For a network that were shift-invariant and
    linear this would be its impulse response; here it depends on ``x``.
    """
    n, *position = _check_pixel(x, pixel)
    x_n = x[n:n + 1].detach()
    columns = []
    for c in range(x.shape[1]):
        impulse = torch.zeros_like(x_n)
        impulse[(0, c, *position)] = 1.0
        _, tangent = torch.func.jvp(net, (x_n,), (impulse,))
        columns.append(tangent[0].detach())
    return torch.stack(columns, dim=1)


def crop_around(t: Tensor, position: Sequence[int], radius: int) -> Tensor:
    """The last ``len(position)`` axes of ``t`` cut to ``2 radius + 1`` around ``position`` (zero-padded)."""
    dims = len(position)
    padded = F.pad(t, (radius, radius) * dims)
    window = tuple(slice(p, p + 2 * radius + 1) for p in position)
    return padded[(Ellipsis, *window)]


def _check_layer(layer: nn.Module, x: Tensor) -> None:
    if not all(hasattr(layer, name) for name in ("first", "activation")):
        raise TypeError(f"layer must be a ConvexBlock or HiddenLayer (with 'first' and 'activation'); "
                        f"got {type(layer).__name__}")
    if not isinstance(x, Tensor) or x.ndim != layer.first.weight.ndim or x.shape[1] != layer.first.in_channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        expected = "(N, {}, {})".format(layer.first.in_channels,
                                        ", ".join("DHW"[-(layer.first.weight.ndim - 2):]))
        raise ValueError(f"The 'x' parameter must have shape {expected} for this layer. Got {shape} instead.")


def _check_pixel(x: Tensor, pixel: Sequence[int]) -> tuple[int, ...]:
    if not isinstance(x, Tensor) or x.ndim not in (4, 5):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"The 'x' parameter must have shape (N, C, H, W) or (N, C, D, H, W). Got {shape} instead.")
    pixel = tuple(int(p) for p in pixel)
    bounds = (x.shape[0],) + tuple(x.shape[2:])
    if len(pixel) != len(bounds) or not all(0 <= p < b for p, b in zip(pixel, bounds)):
        names = "(n, h, w)" if x.ndim == 4 else "(n, d, h, w)"
        raise ValueError(f"The 'pixel' parameter must be {names} within {bounds}. Got {pixel} instead.")
    return pixel
