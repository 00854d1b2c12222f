"""Interpretability: patterns, regions, effective filters, network Jacobian and point-spread function."""

from __future__ import annotations

import warnings

import pytest
import torch

import convexrecon as cr
from convexrecon.analysis import explain
from convexrecon.stack.network import HiddenLayer, ReconNet

from .problems import make_problem


def _block(activation: str, shape=(7, 5), seed=40):
    p = make_problem(seed, c_out=2, k=3, activation=activation, shape=shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = cr.fit_layer(p.inputs, p.targets, kernel_size=3, gates=p.gates, beta=0.05, activation=activation,
                             dtype=torch.float64, tol=1e-5, max_iter=2000)
    return block, p.inputs


@pytest.mark.parametrize("activation,shape", [("relu", (7, 5)), ("gated", (7, 5)), ("gated", (4, 5, 3))])
def test_effective_filter_reproduces_block_output_at_every_pixel(activation, shape):
    block, x = _block(activation, shape)
    assert block.width > 0
    with torch.no_grad():
        out = block(x)
    for index in torch.cartesian_prod(*(torch.arange(s) for s in (x.shape[0],) + tuple(x.shape[2:]))):
        pixel = tuple(int(i) for i in index)
        filt = explain.effective_filter(block, x, pixel)
        assert filt.shape == (2, 2) + (3,) * len(shape)
        torch.testing.assert_close(explain.apply_filter(filt, x, pixel), out[(pixel[0], slice(None), *pixel[1:])],
                                   rtol=1e-12, atol=1e-12)


def test_regions_partition_pixels_by_pattern():
    block, x = _block("relu")
    regions = explain.linear_regions(block, x)
    patterns = explain.activation_patterns(block, x)
    assert regions.labels.shape == (2, 7, 5)
    assert int(regions.sizes.sum()) == 70 and 1 <= regions.num_regions <= 70
    assert bool((regions.sizes[:-1] >= regions.sizes[1:]).all())  # largest first
    flat = patterns.movedim(1, -1).reshape(-1, block.width)
    torch.testing.assert_close(flat, regions.patterns[regions.labels.reshape(-1)])
    # one filter per region: pixels of a region get the same effective filter
    label = int(regions.labels[0, 0, 0])
    same = torch.nonzero(regions.labels == label)[:3]
    filters = [explain.effective_filter(block, x, tuple(int(i) for i in p)) for p in same]
    for f in filters[1:]:
        torch.testing.assert_close(f, filters[0], rtol=0, atol=0)


def _net(shape=(9, 8), seed=41):
    """A two-layer network (relu then gated), float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, *shape, generator=gen, dtype=torch.float64)
    y = x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b1 = cr.fit_layer(x, y - x, kernel_size=3, num_arrangements=3, beta=0.5, activation="relu",
                          dtype=torch.float64, tol=1e-4, max_iter=500)
        b2 = cr.fit_layer(b1.hidden(x).detach(), y - x, kernel_size=3, num_arrangements=3, beta=0.5,
                          activation="gated", dtype=torch.float64, tol=1e-4, max_iter=500)
    return ReconNet([HiddenLayer.from_block(b1), HiddenLayer.from_block(b2)], b2.second), x, b1


def test_network_jacobian_matches_finite_differences():
    net, x, _ = _net()
    pixel = (1, 4, 3)
    rows = explain.network_filter(net, x, pixel)
    assert rows.shape == (2, 2, 9, 8)
    eps = 1e-6
    checked = 0
    for c_in, q_h, q_w in [(0, 4, 3), (1, 4, 3), (0, 3, 2), (1, 5, 5), (0, 6, 1), (1, 2, 4), (0, 0, 0)]:
        step = torch.zeros_like(x)
        step[1, c_in, q_h, q_w] = eps
        with torch.no_grad():
            diff = (net(x + step) - net(x - step))[1, :, 4, 3] / (2 * eps)
        torch.testing.assert_close(rows[:, c_in, q_h, q_w], diff, rtol=1e-6, atol=1e-8)
        checked += 1
    assert checked == 7
    # outside the receptive field (two 3 x 3 layers: radius 2) the filter is exactly zero
    assert float(rows[:, :, 0, 0].abs().max()) == 0.0


def test_point_spread_function_is_the_jacobian_column():
    net, x, _ = _net()
    p, q = (0, 4, 3), (0, 5, 2)
    psf = explain.point_spread_function(net, x, p)
    row = explain.network_filter(net, x, q)
    # d out(q) / d x(p), read from the column at p and from the row at q
    torch.testing.assert_close(psf[:, :, q[1], q[2]], row[:, :, p[1], p[2]], rtol=1e-12, atol=1e-12)


def test_one_block_network_filter_is_block_filter_plus_skip():
    net, x, b1 = _net()
    one = ReconNet([HiddenLayer.from_block(b1)], b1.second)
    pixel = (0, 4, 4)
    full = explain.crop_around(explain.network_filter(one, x, pixel), pixel[1:], 1)
    expected = explain.effective_filter(b1, x, pixel).clone()
    expected[0, 0, 1, 1] += 1.0  # the skip connection
    expected[1, 1, 1, 1] += 1.0
    torch.testing.assert_close(full, expected, rtol=1e-12, atol=1e-12)
    assert len(explain.network_regions(net, x)) == 2


def test_explain_bad_input():
    block, x = _block("gated")
    with pytest.raises(ValueError, match=r"'pixel' parameter must be \(n, h, w\) within \(2, 7, 5\). Got \(0, 7, 0\)"):
        explain.effective_filter(block, x, (0, 7, 0))
    with pytest.raises(ValueError, match=r"'x' parameter must have shape \(N, 2, H, W\) for this layer. Got \(2, 2, 1, 7, 5\)"):
        explain.activation_patterns(block, x[:, :, None])
    with pytest.raises(TypeError, match="ConvexBlock or HiddenLayer"):
        explain.linear_regions(torch.nn.Conv2d(2, 2, 3), x)
