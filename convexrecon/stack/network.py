r"""The stacked reconstruction network of layer-wise training (``docs/design.md`` §9).

.. math:: \hat x = x_0 + W_{K+1}\,\sigma_K(W_K \cdots \sigma_1(W_1 x_0))

``first_1 .. first_K`` are ``k x k`` convolutions, ``second`` the final
``1 x 1`` convolution and ``x_0`` (the zero-filled image, 2 channels) the skip.
``sigma_i`` is the ReLU, or for a block solved with the gated relaxation the
gated ReLU of :class:`~convexrecon.block.module.ConvexBlock` (the gates are buffers of
the layer). The same module serves the convex layer-wise network and the
baselines (end-to-end and non-convex layer-wise Adam), so all three are
saved, loaded and applied in one way (:mod:`convexrecon.stack.modelfiles`,
:mod:`convexrecon.stack.persist`, :func:`convexrecon.recon.reconstruct_slice`). Its architecture is
called ``"layerwise-cnn"`` in saved configs and on the command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from convexrecon.block.module import CONV_MODULES, ConvexBlock, activate
from convexrecon.block.options import ACTIVATIONS
from convexrecon.stack.modelfiles import LAYERWISE_CNN, write_model


class HiddenLayer(nn.Module):
    """One kept layer ``sigma(first(h))``: a ``k x k`` conv and its activation.

    Parameters
    ----------
    first
        ``nn.Conv2d(C_in, m, k, padding=k // 2, bias=False)``.
    activation
        ``"relu"`` or ``"gated"``.
    gates, neuron_arrangement
        For ``"gated"``: the ``(P, C_in, k, k)`` gates and the gate index of each
        of the ``m`` neurons (see :class:`~convexrecon.block.module.ConvexBlock`).
    """

    def __init__(self, first: nn.Conv2d, activation: str = "relu", gates: Tensor | None = None,
                 neuron_arrangement: Tensor | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"The 'activation' parameter must be one of {ACTIVATIONS}. Got {activation!r} instead.")
        if activation == "gated" and (gates is None or neuron_arrangement is None):
            raise ValueError("A gated layer needs 'gates' and 'neuron_arrangement'. Got None instead.")
        self.first = first
        self.activation = activation
        if activation == "gated":
            self.register_buffer("gates", gates)
            self.register_buffer("neuron_arrangement", neuron_arrangement)

    @classmethod
    def from_block(cls, block: ConvexBlock) -> "HiddenLayer":
        """The kept half of a solved block (its ``first`` and activation)."""
        if block.activation == "gated":
            return cls(block.first, "gated", block.gates, block.neuron_arrangement)
        return cls(block.first, "relu")

    def forward(self, h: Tensor) -> Tensor:
        if self.first.out_channels == 0:  # a block whose groups were all zero (torch cannot run a 0-channel conv)
            return h.new_zeros((h.shape[0], 0) + tuple(h.shape[2:]))
        return activate(self.first(h), h, self.activation, getattr(self, "gates", None),
                        getattr(self, "neuron_arrangement", None))

    def spec(self) -> dict[str, Any]:
        """Shape description, enough to rebuild the module before loading weights."""
        spec: dict[str, Any] = {
            "in_channels": self.first.in_channels, "width": self.first.out_channels,
            "kernel_size": self.first.kernel_size[0], "activation": self.activation,
        }
        if isinstance(self.first, nn.Conv3d):  # volumes; an image layer's spec has no spatial_dims
            spec["spatial_dims"] = 3
        if self.activation == "gated":
            spec["num_gates"] = int(self.gates.shape[0])
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "HiddenLayer":
        k, c, m = int(spec["kernel_size"]), int(spec["in_channels"]), int(spec["width"])
        dims = int(spec.get("spatial_dims", 2))
        first = CONV_MODULES[dims](c, m, k, padding=k // 2, bias=False)
        if spec["activation"] == "gated":
            gates = torch.zeros((int(spec["num_gates"]), c) + (k,) * dims)
            return cls(first, "gated", gates, torch.zeros(m, dtype=torch.long))
        return cls(first, "relu")


class ReconNet(nn.Module):
    """``first_1 -> sigma -> ... -> first_K -> sigma -> second`` plus the skip from the input.

    Parameters
    ----------
    layers
        The ``K`` hidden layers in order.
    second
        ``nn.Conv2d(m_K, 2, 1, bias=False)``, the output layer.
    config
        JSON-serialisable metadata saved with the model (method, β per block,
        gate seeds, data settings, solve reports, ...).
    """

    def __init__(self, layers: Sequence[HiddenLayer], second: nn.Conv2d, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError("The 'layers' parameter must hold at least one layer. Got none.")
        for i in range(1, len(layers)):
            if layers[i].first.in_channels != layers[i - 1].first.out_channels:
                raise ValueError(
                    f"Layer {i + 1} expects {layers[i].first.in_channels} input channels; "
                    f"layer {i} gives {layers[i - 1].first.out_channels}."
                )
        if second.in_channels != layers[-1].first.out_channels:
            raise ValueError(
                f"The 'second' layer expects {second.in_channels} channels; the last layer gives "
                f"{layers[-1].first.out_channels}."
            )
        self.layers = nn.ModuleList(layers)
        self.second = second
        self.config: dict[str, Any] = dict(config or {})

    @classmethod
    def plain(cls, widths: Sequence[int], kernel_size: int, channels: int = 2, seed: int = 0,
              config: dict[str, Any] | None = None, spatial_dims: int = 2) -> "ReconNet":
        """A ReLU network of the same architecture with PyTorch's default init (seeded).

        ``spatial_dims=3``: ``Conv3d`` layers for volumes ``(N, C, D, H, W)``.
        """
        if spatial_dims not in CONV_MODULES:
            raise ValueError(f"The 'spatial_dims' parameter must be 2 or 3. Got {spatial_dims!r} instead.")
        conv = CONV_MODULES[spatial_dims]
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            layers, c_in = [], channels
            for m in widths:
                layers.append(HiddenLayer(conv(c_in, m, kernel_size, padding=kernel_size // 2, bias=False)))
                c_in = m
            second = conv(c_in, channels, 1, bias=False)
        finally:
            torch.random.set_rng_state(generator_state)
        return cls(layers, second, config)

    @property
    def num_blocks(self) -> int:
        return len(self.layers)

    def features(self, x: Tensor, depth: int | None = None) -> Tensor:
        """``h_depth``: the input passed through the first ``depth`` layers (default all)."""
        h = x
        for layer in self.layers[: self.num_blocks if depth is None else depth]:
            h = layer(h)
        return h

    def forward(self, x: Tensor) -> Tensor:
        if self.second.in_channels == 0:  # no hidden neuron left: the network is the skip connection
            return x + x.new_zeros((x.shape[0], self.second.out_channels) + tuple(x.shape[2:]))
        return x + self.second(self.features(x))

    @torch.no_grad()
    def predict(self, inputs: Tensor, chunk_size: int = 8) -> Tensor:
        """Forward pass chunk by chunk without autograd."""
        return torch.cat([self(inputs[i:i + chunk_size]) for i in range(0, len(inputs), chunk_size)])

    def spec(self) -> dict[str, Any]:
        return {"kind": LAYERWISE_CNN, "layers": [layer.spec() for layer in self.layers],
                "out_channels": self.second.out_channels}

    @classmethod
    def from_spec(cls, spec: dict[str, Any], config: dict[str, Any] | None = None) -> "ReconNet":
        """An untrained network of the architecture ``spec`` (:meth:`spec`; without ``kind`` in older files)."""
        layers = [HiddenLayer.from_spec(s) for s in spec["layers"]]
        second = type(layers[-1].first)(layers[-1].first.out_channels, int(spec.get("out_channels", 2)), 1,
                                        bias=False)
        return cls(layers, second, config)

    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt`` and ``config.json`` atomically (:func:`convexrecon.stack.modelfiles.write_model`)."""
        return write_model(self, directory)
