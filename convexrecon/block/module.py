r"""The solved two-layer block as an ordinary torch module.

A solution ``v`` of the convex program (groups ``(s, i, c)``, see
:mod:`convexrecon.block.arrangements`) becomes a network ``second(relu(first(x)))``:
every nonzero group gives one hidden neuron with first-layer filter
``v_{sic} / sqrt(||v_{sic}||)`` and second-layer weight
``(+/-) sqrt(||v_{sic}||)`` to output ``c`` (sign ``-`` for the ``w``
groups). Zero groups give no neuron. Then the weight-decay objective

.. math:: \tfrac12\|f(X) - Y\|^2 + \tfrac\beta2(\|W_1\|_F^2 + \|W_2\|_F^2)

equals the convex objective, and on the training data the ReLU network
reproduces the convex model wherever the cone constraints hold
(Pilanci & Ergen, ICML 2020).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from solvers.report import SolveReport

from convexrecon.block.arrangements import arrangement_masks


class ConvexBlock(nn.Module):
    """Two-layer convolutional block ``k x k conv -> ReLU -> 1 x 1 conv``.

    For volumes every convolution is 3D (``nn.Conv3d``, ``k x k x k`` kernels,
    inputs ``(N, C_in, D, H, W)``); the attributes are written for images.

    Attributes
    ----------
    first
        ``nn.Conv2d(C_in, m, k, padding=k // 2, bias=False)`` (``nn.Conv3d`` for volumes).
    second
        ``nn.Conv2d(m, C_out, 1, bias=False)`` (``nn.Conv3d`` for volumes).
    gates
        Buffer ``(P, C_in, k, k)`` (or ``(P, C_in, k, k, k)``): the arrangements the block was solved with.
    neuron_arrangement
        Buffer ``(m,)``: index of the gate each neuron came from.
    activation
        ``"relu"``: ``hidden(x) = relu(first(x))``. ``"gated"``: the gated
        ReLU of the relaxed program, ``hidden(x)_j = 1[conv(x, g_{a(j)}) >= 0]
        * first(x)_j`` with ``a(j)`` = ``neuron_arrangement[j]``; the gates
        are part of the model.
    beta
        Weight-decay / group-norm weight.
    report
        The :class:`~solvers.report.SolveReport` of the solve (None when
        built by hand).
    """

    def __init__(self, first: nn.Conv2d | nn.Conv3d, second: nn.Conv2d | nn.Conv3d, gates: Tensor, neuron_arrangement: Tensor,
                 activation: str, beta: float, report: SolveReport | None = None) -> None:
        super().__init__()
        self.first = first
        self.second = second
        self.register_buffer("gates", gates)
        self.register_buffer("neuron_arrangement", neuron_arrangement)
        self.activation = activation
        self.beta = float(beta)
        self.report = report

    @property
    def width(self) -> int:
        """Hidden width ``m`` (number of nonzero groups)."""
        return self.first.out_channels

    @property
    def kernel_size(self) -> int:
        return self.first.kernel_size[0]

    @property
    def spatial_dims(self) -> int:
        """2 for an image block (``Conv2d``), 3 for a volume block (``Conv3d``)."""
        return self.gates.ndim - 2

    def hidden(self, x: Tensor) -> Tensor:
        """Hidden features ``(N, m, H, W)`` (or ``(N, m, D, H, W)``): ``relu(first(x))`` (or gated, see class doc)."""
        if self.width == 0:  # every group was zero: no hidden neuron (torch cannot run a 0-channel conv)
            return x.new_zeros((x.shape[0], 0) + tuple(x.shape[2:]))
        return activate(self.first(x), x, self.activation, self.gates, self.neuron_arrangement)

    def forward(self, x: Tensor) -> Tensor:
        if self.width == 0:
            return x.new_zeros((x.shape[0], self.second.out_channels) + tuple(x.shape[2:]))
        return self.second(self.hidden(x))

    @torch.no_grad()
    def objective(self, inputs: Tensor, targets: Tensor) -> float:
        """Weight-decay objective ``1/2||f(X) - Y||^2 + beta/2 (||W1||^2 + ||W2||^2)`` in float64."""
        residual = (self(inputs) - targets).double()
        decay = self.first.weight.double().pow(2).sum() + self.second.weight.double().pow(2).sum()
        return float(0.5 * residual.pow(2).sum() + 0.5 * self.beta * decay)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}, beta={self.beta:.4g}, width={self.width}"


CONV_MODULES = {2: nn.Conv2d, 3: nn.Conv3d}


def activate(pre: Tensor, x: Tensor, activation: str, gates: Tensor | None = None,
             neuron_arrangement: Tensor | None = None) -> Tensor:
    """The hidden activation of a block or kept layer, given its pre-activation ``pre = first(x)``.

    ``"relu"``: ``relu(pre)``. ``"gated"``: ``pre_j * 1[conv(x, g_{a(j)}) >= 0]`` with ``a(j)`` =
    ``neuron_arrangement[j]``, the gated ReLU of the relaxed program.
    """
    if activation == "gated":
        masks = arrangement_masks(x, gates)
        return pre * masks[:, neuron_arrangement].to(pre.dtype)
    return F.relu(pre)


def block_from_solution(v: Tensor, gates: Tensor, num_outputs: int, activation: str, beta: float,
                        report: SolveReport | None = None) -> ConvexBlock:
    """Convert a convex solution ``v`` of shape ``(S * P * C_out, C_in, k, ..., k)`` into a block.

    ``Conv2d`` layers for 2D gates ``(P, C_in, k, k)``, ``Conv3d`` for 3D gates ``(P, C_in, k, k, k)``.
    """
    num_gates, channels, k = gates.shape[0], gates.shape[1], gates.shape[-1]
    kernel = tuple(gates.shape[2:])
    conv = CONV_MODULES[len(kernel)]
    signs = 2 if activation == "relu" else 1
    groups = v.reshape(signs, num_gates, num_outputs, -1)
    norms = torch.linalg.vector_norm(groups, dim=-1)
    s_idx, i_idx, c_idx = torch.nonzero(norms > 0, as_tuple=True)
    scale = norms[s_idx, i_idx, c_idx].sqrt()
    filters = groups[s_idx, i_idx, c_idx] / scale[:, None]
    alpha = scale * (1.0 - 2.0 * s_idx.to(scale.dtype))  # +sqrt for v, -sqrt for w
    m = int(scale.numel())
    first = conv(channels, m, k, padding=k // 2, bias=False).to(device=v.device, dtype=v.dtype)
    second = conv(m, num_outputs, 1, bias=False).to(device=v.device, dtype=v.dtype)
    with torch.no_grad():
        first.weight.copy_(filters.reshape(m, channels, *kernel))
        weight = torch.zeros(num_outputs, m, dtype=v.dtype, device=v.device)
        weight[c_idx, torch.arange(m, device=v.device)] = alpha
        second.weight.copy_(weight.reshape(num_outputs, m, *(1,) * len(kernel)))
    return ConvexBlock(first, second, gates.to(v.dtype), i_idx.clone(), activation, beta, report)
