"""Wavelet sparsity in torch: L1-wavelet CS by FISTA against sigpy's, on the same SENSE problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexrecon.mri.sense import sense_adjoint, sense_forward
from convexrecon.mri.sparsity import l1_wavelet_fista, waverec2, wavelet_shrink
from convexrecon.data.synthetic import birdcage_maps


def problem(n=2, size=32, coils=4, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size // 2
    images = np.stack([(np.hypot(yy - g.uniform(-4, 4), xx) < g.uniform(6, 10)) * np.exp(1j * g.uniform(0, 3))
                       + 0.3 * (np.abs(yy) < 3) for _ in range(n)]).astype(np.complex128)
    maps = np.repeat(birdcage_maps(coils, (size, size))[None], n, axis=0).astype(np.complex128)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(1, keepdims=True))  # unit sum of squares, as ESPIRiT's
    mask = (g.random((n, size, size)) < 0.35).astype(np.float64)
    mask[:, size // 2 - 3:size // 2 + 3, size // 2 - 3:size // 2 + 3] = 1
    x, s, m = torch.from_numpy(images), torch.from_numpy(maps), torch.from_numpy(mask)
    k = sense_forward(x, s, m)
    k = k + 0.01 * torch.randn(k.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(seed)) * m[:, None]
    return k, s, m


def objective(x, k, s, m, lam):
    import sigpy as sp

    W = sp.linop.Wavelet(tuple(x.shape), wave_name="db4")
    return 0.5 * float((sense_forward(x[None], s[None], m[None]) - k[None]).abs().pow(2).sum()) \
        + lam * float(np.abs(W(x.numpy())).sum())


def test_fista_reaches_sigpys_l1_wavelet_optimum():
    from sigpy.mri.app import L1WaveletRecon

    k, s, m = problem()
    lam = 0.01
    ours = l1_wavelet_fista(k, s, m, lam, 400)
    for b in range(2):
        ref = L1WaveletRecon(k[b].numpy(), s[b].numpy(), lamda=lam, weights=m[b].numpy(), max_iter=400,
                             show_pbar=False).run()
        f_ours, f_ref = objective(ours[b], k[b], s[b], m[b], lam), objective(torch.from_numpy(ref), k[b], s[b], m[b], lam)
        assert f_ours <= f_ref * (1 + 1e-6)  # the same program, solved at least as well
        assert np.abs(ours[b].numpy() - ref).max() <= 1e-3 * np.abs(ref).max()
    # the objective decreases with more iterations (FISTA is not monotone step by step, but over tens it is)
    f = [objective(l1_wavelet_fista(k, s, m, lam, it)[0], k[0], s[0], m[0], lam) for it in (5, 30, 400)]
    assert f[0] > f[1] > f[2]


def test_fista_is_positively_homogeneous_with_a_relative_weight_and_safe_for_large_maps():
    k, s, m = problem(seed=1)
    scale = sense_adjoint(k, s, m).abs().flatten(1).amax(1)
    x = l1_wavelet_fista(k, s, m, 0.01, 30, scale=scale)
    y = l1_wavelet_fista(k * 1e3, s, m, 0.01, 30, scale=scale * 1e3)
    assert torch.allclose(y, 1e3 * x, rtol=1e-8, atol=1e-8 * 1e3 * float(x.abs().max()))
    # maps of sum of squares 9: the step adapts (1/9), so the iteration still converges to the same program's optimum
    big = l1_wavelet_fista(3 * k, 3 * s, m, 0.01 * 3, 600)
    small = l1_wavelet_fista(k, s, m, 0.01 / 3, 600)
    assert torch.isfinite(big).all()
    assert torch.allclose(big, small, atol=1e-3 * float(small.abs().max()))
    # zero iterations: the start
    assert torch.equal(l1_wavelet_fista(k, s, m, 0.01, 0), sense_adjoint(k, s, m) * (s.abs().pow(2).sum(1) > 0))


def test_sparsity_arguments_are_checked():
    k, s, m = problem(n=1)
    with pytest.raises(ValueError, match="'lamda'"):
        l1_wavelet_fista(k, s, m, -1.0, 5)
    with pytest.raises(ValueError, match="'iterations'"):
        l1_wavelet_fista(k, s, m, 0.1, 2.5)
    with pytest.raises(ValueError, match="'x' parameter must be complex images"):
        wavelet_shrink(torch.zeros(2, 8, 8), [0.1])


def test_shrinkage_gradient_is_finite_where_coefficients_are_exactly_zero():
    # outside the coil maps' support images are exactly zero: the soft threshold's magnitude must not put
    # NaN (0 * inf from the square root) into the gradient there (it did, and end-to-end training diverged)
    x = torch.zeros(2, 32, 40, dtype=torch.complex64)
    x[:, 8:24, 10:30] = torch.randn(2, 16, 20, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_(True)
    out = wavelet_shrink(x, [0.01, 0.3])
    (out[0].abs().pow(2).sum() + out[1].real.sum()).backward()
    assert torch.isfinite(torch.view_as_real(x.grad)).all() and float(x.grad.abs().sum()) > 0
    k, s, m = problem(n=1)
    x = torch.zeros(1, 32, 32, dtype=torch.complex128, requires_grad=True)
    l1_wavelet_fista(k, s, m, 0.01, 3, start=x * 1.0).abs().sum().backward()
    assert torch.isfinite(torch.view_as_real(x.grad)).all()


def test_cycle_spun_fista_is_cs_with_a_shifted_wavelet_grid_averaged_over_shifts():
    from convexrecon.mri.fft import fft2c, ifft2c

    k, s, m = problem(seed=2)
    plain = l1_wavelet_fista(k, s, m, 0.01, 50)
    assert torch.equal(l1_wavelet_fista(k, s, m, 0.01, 50, shifts=[(0, 0)]), plain)
    assert torch.allclose(l1_wavelet_fista(k, s, m, 0.01, 50, shifts=[(0, 0), (0, 0)]), plain, atol=1e-12)
    # one shift p: CS whose wavelet grid is shifted by p, i.e. plain CS of the problem rolled by p, rolled back
    p = (3, 5)
    rolled_k = fft2c(torch.roll(ifft2c(k), p, (-2, -1)))  # an image-domain roll: a phase ramp on the samples
    rolled = l1_wavelet_fista(rolled_k, torch.roll(s, p, (-2, -1)), m, 0.01, 50)
    shifted = l1_wavelet_fista(k, s, m, 0.01, 50, shifts=[p])
    assert torch.allclose(shifted, torch.roll(rolled, (-p[0], -p[1]), (-2, -1)), atol=1e-10)
    assert not torch.allclose(shifted, plain, atol=1e-4)
    # four shifts: a fixed point of the averaged step (FISTA on the proximal average converges)
    grid = [(0, 0), (1, 1), (2, 3), (5, 6)]
    x = l1_wavelet_fista(k, s, m, 0.01, 800, shifts=grid)
    again = l1_wavelet_fista(k, s, m, 0.01, 1, shifts=grid, start=x)
    assert float((again - x).abs().max()) <= 1e-5 * float(x.abs().max())
    for bad in ([], [(1,)], [(1.5, 0)], [(True, 0)], "ab", [1, 2], 3):
        with pytest.raises(ValueError, match="'shifts'"):
            l1_wavelet_fista(k, s, m, 0.01, 2, shifts=bad)


@pytest.mark.parametrize("wave", ["db4", "haar", "sym8", "coif3", "bior4.4"])
@pytest.mark.parametrize("shape", [(2, 160, 92), (1, 17, 33), (3, 9, 8)])
def test_polyphase_synthesis_equals_ptwts_inverse_transform(wave, shape):
    """Every level's cropping included (odd sizes), in float64 to rounding and float32 to its precision, and
    differentiable with ptwt's gradient."""
    import ptwt
    import pywt

    level = max(1, pywt.dwt_max_level(min(shape[1:]), pywt.Wavelet(wave).dec_len))
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
        coeffs = ptwt.wavedec2(x, pywt.Wavelet(wave), mode="zero", level=level)
        expected = ptwt.waverec2(coeffs, pywt.Wavelet(wave))
        got = waverec2(coeffs, wave)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) < tol * float(expected.abs().max())
    leaves = [coeffs[0].double().requires_grad_()] + [tuple(c.double().requires_grad_() for c in d) for d in coeffs[1:]]
    weight = torch.randn(expected.shape, dtype=torch.float64)
    (waverec2(leaves, wave) * weight).sum().backward()
    reference = [c.detach().double().requires_grad_() for c in [leaves[0]] + [c for d in leaves[1:] for c in d]]
    rebuilt = [reference[0]] + [tuple(reference[1 + 3 * i:4 + 3 * i]) for i in range(len(leaves) - 1)]
    (ptwt.waverec2(rebuilt, pywt.Wavelet(wave)) * weight).sum().backward()
    ours = [leaves[0].grad] + [c.grad for d in leaves[1:] for c in d]
    assert all(torch.allclose(a, b.grad, atol=1e-12) for a, b in zip(ours, reference))
