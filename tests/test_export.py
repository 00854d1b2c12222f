"""A network of exact-ReLU blocks is an ordinary CNN: Conv2d and ReLU only, exportable like any other."""

from __future__ import annotations

import io

import torch
from torch import nn

import convexrecon as cr
from convexrecon.stack.network import HiddenLayer


def _relu_network() -> tuple[cr.ReconNet, torch.Tensor]:
    """Two certified exact-ReLU blocks stacked as the layer-wise trainer stacks them."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 16, 14, dtype=torch.float64, generator=gen)
    y = torch.randn(2, 2, 16, 14, dtype=torch.float64, generator=gen)
    first = cr.fit_layer(x, y - x, kernel_size=3, num_arrangements=2, activation="relu", gate_sampling="antithetic",
                         relu_method="interior_point", dtype=torch.float64, tol=1e-6, beta=0.05)
    layer1 = HiddenLayer.from_block(first)
    second = cr.fit_layer(layer1(x).detach(), y - x, kernel_size=3, num_arrangements=2, activation="relu", seed=1,
                          gate_sampling="antithetic", relu_method="interior_point", dtype=torch.float64, tol=1e-6,
                          beta=0.05)
    assert first.report.status is cr.Status.OPTIMAL and second.report.status is cr.Status.OPTIMAL
    assert first.width > 0 and second.width > 0
    net = cr.ReconNet([layer1, HiddenLayer.from_block(second)], second.second)
    return net, x


def test_relu_network_has_conv_layers_only() -> None:
    net, _ = _relu_network()
    leaves = [m for m in net.modules() if not list(m.children())]
    assert leaves and all(isinstance(m, nn.Conv2d) for m in leaves)
    assert all(m.bias is None for m in leaves)
    assert not any("gates" in name for name, _ in net.named_buffers())


def test_relu_network_traces_and_reloads_exactly() -> None:
    net, x = _relu_network()
    traced = torch.jit.trace(net, x)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    probe = torch.randn(3, 2, 11, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loaded(probe), net(probe), rtol=0, atol=0)


def test_relu_network_exports_to_onnx_as_conv_relu_add() -> None:
    import onnx  # in the dev extra
    net, x = _relu_network()
    buffer = io.BytesIO()
    torch.onnx.export(net.float(), (x.float(),), buffer, dynamo=False)
    model = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(model)
    assert {node.op_type for node in model.graph.node} == {"Conv", "Relu", "Add"}
