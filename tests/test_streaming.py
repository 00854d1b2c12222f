"""Streaming block solves: chunked and HDF5-backed inputs give the in-memory solution."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

import convexrecon as cr
from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates
from convexrecon.block.streaming import ChunkSource, StreamingArrangementConv
from tests.operator_checks import assert_adjoint
from tests.problems import make_problem


def _source(x, sizes):
    chunks = list(torch.split(x, sizes))
    return ChunkSource("inputs", chunks, chunk_size=None, dtype=x.dtype, device=x.device)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("cache", [2**30, 0], ids=["cached-masks", "recomputed-masks"])
def test_streaming_operator_equals_in_memory_operator(relu, cache):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 2, 9, 7, generator=gen, dtype=torch.float64)
    gates = draw_gates(3, 2, 3, seed=1)
    full = ArrangementConv(x, arrangement_masks(x, gates), 3, 2, relu=relu)
    stream = StreamingArrangementConv(_source(x, [2, 1, 2]), gates, 3, 2, relu=relu, mask_cache_bytes=cache)
    assert (stream._masks is None) == (cache == 0)
    v = torch.randn(full.var_shape, generator=gen, dtype=torch.float64)
    r = torch.randn(5, 2, 9, 7, generator=gen, dtype=torch.float64)
    if relu:
        mu = torch.randn(5, 2, 3, 2, 9, 7, generator=gen, dtype=torch.float64)
        for a, b in zip(stream.forward(v), full.forward(v)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stream.adjoint(r, mu), full.adjoint(r, mu), rtol=1e-12, atol=1e-10)
        assert_adjoint(stream.forward, stream.adjoint, v, (r, mu), rtol=1e-10)
    else:
        torch.testing.assert_close(stream.forward(v), full.forward(v), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stream.adjoint(r), full.adjoint(r), rtol=1e-12, atol=1e-10)
        assert_adjoint(stream.forward, stream.adjoint, v, r, rtol=1e-10)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_fit_layer_on_chunks_and_hdf5_equals_in_memory(tmp_path, activation):
    p = make_problem(3, c_out=2, k=3, activation=activation)
    kwargs = dict(kernel_size=3, gates=p.gates, beta=p.beta, activation=activation, dtype=torch.float64, tol=1e-7)
    full = cr.fit_layer(p.inputs, p.targets, **kwargs)
    chunked = cr.fit_layer([p.inputs[:1], p.inputs[1:]], p.targets, **kwargs)
    path = tmp_path / "features.h5"
    with h5py.File(path, "w") as f:
        f["x"] = p.inputs.numpy()
        f["y"] = p.targets.numpy()
    with h5py.File(path, "r") as f:
        streamed = cr.fit_layer(f["x"], f["y"], chunk_size=1, **kwargs)
    for block in (chunked, streamed):
        assert block.report.status.value == "optimal"
        assert block.report.primal == pytest.approx(full.report.primal, rel=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(block(p.inputs), full(p.inputs), rtol=1e-4, atol=1e-4)


def test_bad_chunks_are_named():
    x = torch.randn(2, 2, 7, 5, dtype=torch.float64)
    y = torch.randn(3, 1, 7, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="chunk 1 has shape"):
        cr.fit_layer([x, torch.randn(1, 3, 7, 5)], y, kernel_size=3, activation="gated")
    with pytest.raises(ValueError, match="at least one chunk"):
        cr.fit_layer([], y, kernel_size=3, activation="gated")
    bad = torch.randn(1, 2, 7, 5)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="'inputs chunk 1' parameter must be finite"):
        cr.fit_layer([x, bad], y, kernel_size=3, activation="gated")
    with pytest.raises(ValueError, match=r"one \(C_out, 7, 5\) image per input image \(3\)"):
        cr.fit_layer([x, x[:1]], y[:2], kernel_size=3, activation="gated")
    with pytest.raises(TypeError, match="'inputs' parameter must be a torch.Tensor or numpy.ndarray"):
        cr.fit_layer([x, [1, 2]], y, kernel_size=3, activation="gated")
    assert np.isfinite(float(x.sum()))
