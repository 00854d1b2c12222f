"""Data consistency (SENSE adjoint, CG, closed form, λ limits) and the convex unrolled network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convexrecon.data.consistency import (MeasuredData, conjugate_gradient, crop_center, data_consistency,
                                          embed_crop, exact_dc_applies, sense_adjoint, sense_forward,
                                          sense_normal)


def random_problem(batch=2, coils=3, height=6, width=5, seed=0, rate=0.5, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    c = lambda *shape: torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),  # noqa: E731
                                     torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)
    maps = c(batch, coils, height, width)
    mask = (torch.rand(batch, height, width, generator=g, dtype=torch.float64) < rate).to(torch.float64)
    return c(batch, height, width), c(batch, coils, height, width), maps, mask


def dense_normal(maps, mask):
    """A^H A of one slice as a dense matrix, built column by column from the operator."""
    h, w = mask.shape
    n = h * w
    cols = []
    for j in range(n):
        e = torch.zeros(n, dtype=maps.dtype)
        e[j] = 1
        cols.append(sense_normal(e.reshape(1, h, w), maps[None], mask[None]).reshape(n))
    return torch.stack(cols, dim=1)


def test_sense_adjoint_float64():
    x, y, maps, mask = random_problem()
    lhs = (sense_forward(x, maps, mask).conj() * y).sum()
    rhs = (x.conj() * sense_adjoint(y, maps, mask)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_cg_decreases_residual_and_matches_dense_solve():
    z, k, maps, mask = random_problem(batch=2, coils=2, height=5, width=4, seed=1)
    lam = torch.tensor([0.3, 2.0], dtype=torch.float64)
    previous = None
    for it in (1, 3, 8):
        x = data_consistency(z, k, maps, mask, lam, iterations=it, method="cg")
        rhs = sense_adjoint(k, maps, mask) + lam[:, None, None] * z
        res = (sense_normal(x, maps, mask) + lam[:, None, None] * x - rhs).abs().pow(2).sum()
        if previous is not None:
            assert res < previous
        previous = res
    x = data_consistency(z, k, maps, mask, lam, iterations=60, method="cg")
    for b in range(2):
        a = dense_normal(maps[b], mask[b]) + lam[b] * torch.eye(20, dtype=torch.complex128)
        rhs = (sense_adjoint(k[b:b + 1], maps[b:b + 1], mask[b:b + 1]) + lam[b] * z[b:b + 1]).reshape(20)
        dense = torch.linalg.solve(a, rhs).reshape(5, 4)
        assert torch.allclose(x[b], dense, atol=1e-9, rtol=1e-9)
    # the objective: the DC output is no worse than z itself
    for b in range(2):
        f = lambda v: float((sense_forward(v[None], maps[b:b+1], mask[b:b+1]) - k[b:b+1] * mask[b]).abs().pow(2).sum()  # noqa: E731
                            + lam[b] * (v - z[b]).abs().pow(2).sum())
        assert f(x[b]) <= f(z[b])


def test_exact_projection_single_coil():
    z, k, _, mask = random_problem(batch=2, coils=1, height=6, width=6, seed=2)
    phase = torch.exp(1j * torch.rand(2, 1, 6, 6, dtype=torch.float64) * 6).to(torch.complex128)
    maps = 0.7 * phase
    assert exact_dc_applies(maps)
    x_exact = data_consistency(z, k, maps, mask, 0.5, method="exact")
    x_cg = data_consistency(z, k, maps, mask, 0.5, iterations=80, method="cg")
    assert torch.allclose(x_exact, x_cg, atol=1e-10)
    # λ → 0: the closed form reproduces the measurements on every sampled location
    x0 = data_consistency(z, k, maps, mask, 0.0, method="exact")
    sampled = mask.bool()[:, None].expand_as(k)
    assert torch.allclose(sense_forward(x0, maps, mask)[sampled], k[sampled], atol=1e-12)
    # and keeps z's k-space where nothing was measured
    unsampled = ~sampled
    v = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(maps[:, 0] * z, dim=(-2, -1)), dim=(-2, -1),
                                          norm="ortho"), dim=(-2, -1))[:, None]
    w = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(maps[:, 0] * x0, dim=(-2, -1)), dim=(-2, -1),
                                          norm="ortho"), dim=(-2, -1))[:, None]
    assert torch.allclose(w[unsampled], v[unsampled], atol=1e-12)


def test_exact_refused_for_multicoil():
    z, k, maps, mask = random_problem()
    assert not exact_dc_applies(maps)
    with pytest.raises(ValueError, match="'method' parameter 'exact'"):
        data_consistency(z, k, maps, mask, 1.0, method="exact")


def test_lambda_limits():
    z, k, maps, mask = random_problem(seed=3)
    truth, _, _, _ = random_problem(seed=30)
    k = sense_forward(truth, maps, mask)  # consistent data: some image fits them exactly
    far = data_consistency(z, k, maps, mask, 1e12, iterations=10)
    assert torch.allclose(far, z, atol=1e-8)
    near = data_consistency(z, k, maps, mask, 1e-10, iterations=200)
    residual = (sense_forward(near, maps, mask) - k * mask[:, None]).abs().pow(2).sum()
    start = (sense_forward(z, maps, mask) - k * mask[:, None]).abs().pow(2).sum()
    assert residual < 1e-10 * start


def test_dc_is_differentiable_in_z_and_lambda():
    z, k, maps, mask = random_problem(batch=1, seed=4)
    z = z.clone().requires_grad_(True)
    lam = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    x = data_consistency(z, k, maps, mask, lam, iterations=5)
    x.abs().pow(2).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad.abs()).all() and lam.grad is not None


def test_bad_lambda_and_shapes():
    z, k, maps, mask = random_problem()
    with pytest.raises(ValueError, match="'lam' parameter"):
        data_consistency(z, k, maps, mask, -1.0)
    with pytest.raises(ValueError, match="'mask' parameter"):
        data_consistency(z, k, maps, mask[:, :-1], 1.0)


def test_embed_and_crop():
    full = torch.zeros(2, 9, 8, dtype=torch.complex64)
    small = torch.ones(2, 4, 4, dtype=torch.complex64)
    out = embed_crop(full, small)
    assert torch.equal(crop_center(out, 4), small) and float(out.abs().sum()) == 32
