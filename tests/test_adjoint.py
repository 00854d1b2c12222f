"""Every linear operator of the project passes the dot-product test."""

from __future__ import annotations

import pytest
import torch

from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates
from solvers.operators import MatrixOperator, StackedOperator

from .operator_checks import assert_adjoint

TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _conv(relu: bool, dtype, k=3, c_out=2, chunk=None, shape=(9, 7), gate_chunk=None):
    x = _randn(3, 2, *shape, dtype=dtype, seed=1)
    gates = draw_gates(4, 2, k, seed=2, spatial_dims=len(shape), dtype=dtype)
    op = ArrangementConv(x, arrangement_masks(x, gates), k, c_out, relu=relu, chunk_size=chunk, gate_chunk=gate_chunk)
    v = _randn(*op.var_shape, dtype=dtype, seed=3)
    r = _randn(3, c_out, *shape, dtype=dtype, seed=4)
    if relu:
        mu = _randn(3, 2, 4, c_out, *shape, dtype=dtype, seed=5)
        return op.forward, op.adjoint, v, (r, mu)
    return op.forward, op.adjoint, v, r


def _dense(relu: bool, dtype):
    """``kernel_size=1`` on ``(n, d, 1, 1)``: the matrix-product fast path."""
    x = _randn(11, 5, 1, 1, dtype=dtype, seed=1)
    gates = draw_gates(3, 5, 1, seed=2, dtype=dtype)
    op = ArrangementConv(x, arrangement_masks(x, gates), 1, 2, relu=relu)
    v = _randn(*op.var_shape, dtype=dtype, seed=3)
    r = _randn(11, 2, 1, 1, dtype=dtype, seed=4)
    return op.forward, op.adjoint, v, ((r, _randn(11, 2, 3, 2, 1, 1, dtype=dtype, seed=5)) if relu else r)


def _matrix(dtype):
    a = _randn(11, 12, dtype=dtype, seed=6)
    op = MatrixOperator(a, (4, 3))
    return op.forward, op.adjoint, _randn(4, 3, dtype=dtype, seed=7), _randn(11, dtype=dtype, seed=8)


def _stacked(dtype):
    a = MatrixOperator(_randn(11, 12, dtype=dtype, seed=6), (4, 3))
    c = MatrixOperator(_randn(5, 12, dtype=dtype, seed=9), (4, 3))
    op = StackedOperator(a, c)
    return op.forward, op.adjoint, _randn(4, 3, dtype=dtype, seed=7), (_randn(11, dtype=dtype, seed=8), _randn(5, dtype=dtype, seed=10))


def _sense(dtype):
    from convexrecon.mri.sense import SenseOperator

    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    maps = torch.complex(_randn(4, 9, 7, dtype=dtype, seed=14), _randn(4, 9, 7, dtype=dtype, seed=15)).to(cdtype)
    mask = _randn(9, 7, dtype=dtype, seed=16) > 0
    op = SenseOperator(maps, mask)
    x = torch.complex(_randn(9, 7, dtype=dtype, seed=17), _randn(9, 7, dtype=dtype, seed=18)).to(cdtype)
    k = torch.complex(_randn(4, 9, 7, dtype=dtype, seed=19), _randn(4, 9, 7, dtype=dtype, seed=20)).to(cdtype)
    return op.forward, op.adjoint, x, k


def _sense3d(dtype):
    from convexrecon.mri.sense import SenseOperator

    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    cplx = lambda *shape, seed: torch.complex(_randn(*shape, dtype=dtype, seed=seed),  # noqa: E731
                                              _randn(*shape, dtype=dtype, seed=seed + 1)).to(cdtype)
    op = SenseOperator(cplx(3, 5, 6, 4, seed=21), _randn(6, 4, dtype=dtype, seed=23) > 0)
    return op.forward, op.adjoint, cplx(5, 6, 4, seed=24), cplx(3, 5, 6, 4, seed=26)


def _sense_batched(dtype):
    from convexrecon.mri.sense import SenseOperator

    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    cplx = lambda *shape, seed: torch.complex(_randn(*shape, dtype=dtype, seed=seed),  # noqa: E731
                                              _randn(*shape, dtype=dtype, seed=seed + 1)).to(cdtype)
    op = SenseOperator(cplx(2, 3, 9, 7, seed=31), _randn(2, 9, 7, dtype=dtype, seed=33).abs(), spatial_dims=2)
    return op.forward, op.adjoint, cplx(2, 9, 7, seed=34), cplx(2, 3, 9, 7, seed=36)


REGISTRY = {
    "sense3d-masked": _sense3d,
    "sense-batched-weights": _sense_batched,
    "sense-masked": _sense,
    "conv-gated-k3": lambda dt: _conv(False, dt),
    "conv-relu-k3": lambda dt: _conv(True, dt),
    "conv-gated-k5-chunked": lambda dt: _conv(False, dt, k=5, c_out=1, chunk=2),
    "conv-relu-k1-chunked": lambda dt: _conv(True, dt, k=1, c_out=3, chunk=1),
    "conv3d-gated-k3": lambda dt: _conv(False, dt, shape=(6, 7, 5)),
    "conv3d-relu-k3-chunked": lambda dt: _conv(True, dt, chunk=2, shape=(6, 7, 5)),
    "conv3d-gated-k5": lambda dt: _conv(False, dt, k=5, c_out=1, shape=(5, 4, 6)),
    "conv3d-gated-gate-chunked": lambda dt: _conv(False, dt, shape=(6, 7, 5), gate_chunk=3),
    "conv-relu-gate-chunked": lambda dt: _conv(True, dt, chunk=2, gate_chunk=1),
    "dense-gated": lambda dt: _dense(False, dt),
    "dense-relu": lambda dt: _dense(True, dt),
    "matrix": _matrix,
    "stacked": _stacked,
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_dot_product(name, dtype):
    forward, adjoint, v, r = REGISTRY[name](dtype)
    assert_adjoint(forward, adjoint, v, r, rtol=TOL[dtype])


@pytest.mark.parametrize("chunks", [dict(chunk=1), dict(gate_chunk=3), dict(chunk=2, gate_chunk=1)],
                         ids=["images", "gates", "both"])
def test_chunking_does_not_change_results(chunks):
    f1, a1, v, (r, mu) = _conv(True, torch.float64, chunk=None)
    f2, a2, _, _ = _conv(True, torch.float64, **chunks)
    p1, c1 = f1(v)
    p2, c2 = f2(v)
    torch.testing.assert_close(p1, p2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c1, c2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a1(r, mu), a2(r, mu), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 5), (4, 6, 5)], ids=["2d", "3d"])
def test_operator_matches_explicit_patch_matrix(shape):
    """The conv operator is sum_i D_i X v_ic with X from unfold (docs/design.md §3.4), for images and volumes."""
    import numpy as np

    from convexrecon.block.arrangements import patch_problem
    from solvers.reference import arrangement_matrices

    x = _randn(2, 2, *shape, dtype=torch.float64, seed=11)
    gates = draw_gates(3, 2, 3, seed=12, spatial_dims=len(shape))
    masks = arrangement_masks(x, gates)
    op = ArrangementConv(x, masks, 3, 2, relu=True)
    v = _randn(*op.var_shape, dtype=torch.float64, seed=13)
    pred, cone = op.forward(v)
    X, D, _ = patch_problem(x, masks, torch.zeros(2, 2, *shape, dtype=torch.float64), 3)
    A, C, var_shape = arrangement_matrices(X, D, 2, "relu")
    flat = v.reshape(var_shape).numpy().reshape(-1)
    np.testing.assert_allclose(A @ flat, pred.transpose(0, 1).reshape(-1).numpy(), rtol=1e-10, atol=1e-10)
    # constraint rows: group (s, i, c) then pixel (N, H, W) or voxel (N, D, H, W)
    expected = cone.permute(1, 2, 3, 0, *range(4, cone.ndim)).reshape(-1).numpy()
    np.testing.assert_allclose(C @ flat, expected, rtol=1e-10, atol=1e-10)
