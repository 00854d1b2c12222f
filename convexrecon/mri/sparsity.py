r"""Wavelet sparsity in torch: soft-thresholding and L1-wavelet compressed sensing, on any device.

:func:`wavelet_shrink` is :math:`W^H \mathrm{soft}_t(W x)` for the orthogonal 2-D wavelet transform
:math:`W` (Daubechies-4 by default, PyWavelets' largest useful level, zero boundary mode: the transform of
sigpy's ``linop.Wavelet`` and so of :func:`convexrecon.mri.classical.l1_wavelet`), computed by ``ptwt``
in the dtype and on the device of the images, and differentiable. The analysis is ``ptwt.wavedec2``; the
synthesis is :func:`waverec2`, ``ptwt.waverec2``'s transform computed by polyphase filtering (see there),
2-4x faster on a CPU. :func:`l1_wavelet_fista` is the same
L1-wavelet CS program as :func:`~convexrecon.mri.classical.l1_wavelet`,

.. math:: \min_x \tfrac12 \|A x - k\|_2^2 + \lambda \|W x\|_1,

solved by FISTA (Beck & Teboulle 2009; sigpy's ``L1WaveletRecon`` runs the same accelerated proximal
gradient) for a batch of slices at once, with the SENSE operator
:class:`~convexrecon.mri.sense.SenseOperator`. It serves the unrolled network's CS start
(:class:`convexrecon.stack.unrolled.UnrolledNet`), where it must run on the network's device; the CS
*baseline* of the benchmarks stays sigpy's, an independent implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

import ptwt
import pywt
import torch
from torch import Tensor
from torch.nn import functional

from convexrecon.mri.sense import SenseOperator

DEFAULT_WAVE = "db4"  # sigpy's linop.Wavelet default, the CS baseline's wavelet


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.ndim != 3 or not x.is_complex():
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"The '{name}' parameter must be complex images (B, H, W). Got {got} instead.")


def _synthesis_filters(wavelet: pywt.Wavelet, dtype: torch.dtype, device: torch.device) -> Tensor:
    r"""The polyphase form of the 2-D synthesis filters: ``(4, 4, L/2, L/2)`` conv2d weights.

    The synthesis of one level is the stride-2 transposed convolution of the four sub-bands (ll, lh, hl, hh)
    with the outer products :math:`f_c` of the reconstruction filters (length :math:`L`, even for every
    orthogonal wavelet): :math:`y[2m + r] = \sum_c \sum_q x_c[m - q]\, f_c[r + 2q]` per axis. So output phase
    :math:`r` is the full convolution of the sub-bands with the taps :math:`f_c[r + 2q]`: weight
    ``[2 r_y + r_x, c]`` holds those taps, flipped for conv2d's cross-correlation.
    """
    _, _, rec_lo, rec_hi = (torch.tensor(f, dtype=dtype, device=device) for f in wavelet.filter_bank)
    bank = torch.stack([torch.outer(rec_lo, rec_lo), torch.outer(rec_hi, rec_lo),
                        torch.outer(rec_lo, rec_hi), torch.outer(rec_hi, rec_hi)])  # ptwt's ll, lh, hl, hh order
    half = bank.shape[-1] // 2
    return bank.reshape(4, half, 2, half, 2).permute(2, 4, 0, 1, 3).reshape(4, 4, half, half).flip(-2, -1)


def waverec2(coeffs: Sequence, wave: str = DEFAULT_WAVE) -> Tensor:
    """The inverse of ``ptwt.wavedec2(x, wave, mode="zero")`` for ``(N, H, W)`` real coefficients, as
    ``ptwt.waverec2`` (same output, same cropping of every level), by polyphase filtering.

    ``ptwt.waverec2`` runs ``conv_transpose2d`` with stride 2; on a CPU that is 2-4x slower than the
    same sums as one stride-1 ``conv2d`` of the four sub-bands into the four output phases, interleaved by
    ``pixel_shuffle`` (:func:`_synthesis_filters`). In FISTA the synthesis was the largest single cost of
    a step (about half of L1-wavelet CS at 160 x 368, 8 coils). Odd-length filters fall back to ptwt.
    """
    wavelet = pywt.Wavelet(wave)
    ll = coeffs[0]
    if wavelet.rec_len % 2:
        return ptwt.waverec2(tuple(coeffs), wavelet)
    weight = _synthesis_filters(wavelet, ll.dtype, ll.device)
    half = wavelet.rec_len // 2
    trim = (2 * wavelet.rec_len - 3) // 2  # ptwt's padding removed after each level
    for position, details in enumerate(coeffs[1:]):
        bands = torch.stack([ll, *details], 1)
        full = functional.pixel_shuffle(functional.conv2d(functional.pad(bands, (half - 1,) * 4), weight), 2)[:, 0]
        bottom, right = trim, trim
        if position < len(coeffs) - 2:  # one more row / column off where the next level is odd-sized
            following = coeffs[position + 2][0].shape
            bottom += full.shape[-2] - 2 * trim - following[-2]
            right += full.shape[-1] - 2 * trim - following[-1]
        ll = full[..., trim:full.shape[-2] - bottom, trim:full.shape[-1] - right]
    return ll


def wavelet_shrink(x: Tensor, thresholds: Sequence[float], scale: Tensor | None = None,
                   wave: str = DEFAULT_WAVE) -> list[Tensor]:
    r"""Wavelet soft-thresholding :math:`W^H \mathrm{soft}_t(W x)` of complex images, one output per threshold.

    ``x`` is ``(B, H, W)`` complex. Every coefficient, the approximation included, shrinks by its complex
    magnitude (sigpy's ``thresh.soft_thresh``). The threshold of slice ``b`` is ``t * scale[b]``
    (``scale`` ``(B,)``, e.g. a per-slice magnitude so that the result scales with the data; None: ``t``).
    The transform of all thresholds is computed once.
    """
    _check_images("x", x)
    b, height, width = x.shape
    filters = pywt.Wavelet(wave)
    level = max(1, pywt.dwt_max_level(min(height, width), filters.dec_len))
    real = torch.view_as_real(x).permute(0, 3, 1, 2).reshape(2 * b, height, width)
    coeffs = ptwt.wavedec2(real, filters, mode="zero", level=level)
    unit = torch.ones(b, dtype=real.dtype, device=x.device) if scale is None else scale.to(x.device, real.dtype)

    def soft(c: Tensor, cut: Tensor) -> Tensor:  # c: (2B, h, w), real and imaginary parts of B slices
        pair = c.reshape(b, 2, *c.shape[-2:])
        # clamped *before* the root: sqrt's derivative at 0 is infinite, and 0 * inf would put NaN into every
        # gradient wherever a coefficient is exactly zero (outside the coil maps' support, zero padding)
        magnitude = pair.pow(2).sum(1, keepdim=True).clamp_min(torch.finfo(c.dtype).tiny).sqrt()
        return (pair * torch.clamp(1 - cut / magnitude, min=0)).reshape(c.shape)

    outs = []
    for t in thresholds:
        cut = (float(t) * unit).reshape(b, 1, 1, 1)
        shrunk = [soft(coeffs[0], cut)] + [type(d)(*(soft(c, cut) for c in d)) for d in coeffs[1:]]
        image = waverec2(shrunk, wave)[..., :height, :width]
        outs.append(torch.view_as_complex(image.reshape(b, 2, height, width).permute(0, 2, 3, 1).contiguous()))
    return outs


# wavelet-grid shifts of cycle-spun CS, the first n used: odd and even offsets, so every decimated level moves
CYCLE_SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (2, 3), (5, 6), (3, 5), (6, 2), (7, 7), (4, 1))


def _spun_shrink(z: Tensor, grid: Sequence[tuple[int, int]], cut: Tensor, wave: str) -> Tensor:
    """The soft threshold of ``z`` averaged over the wavelet grids shifted by ``grid``, every grid in one batch."""
    if len(grid) == 1 and tuple(grid[0]) == (0, 0):
        return wavelet_shrink(z, [1.0], cut, wave)[0]
    shifted = torch.cat([torch.roll(z, p, (-2, -1)) for p in grid])
    shrunk = wavelet_shrink(shifted, [1.0], cut.repeat(len(grid)), wave)[0].split(z.shape[0])
    return sum(torch.roll(s, (-p[0], -p[1]), (-2, -1)) for s, p in zip(shrunk, grid)) / len(grid)


def l1_wavelet_fista(kspace: Tensor, maps: Tensor, mask: Tensor, lamda: float, iterations: int, *,
                     scale: Tensor | None = None, start: Tensor | None = None, wave: str = DEFAULT_WAVE,
                     shifts: Sequence[tuple[int, int]] | None = None) -> Tensor:
    r"""L1-wavelet CS of a batch of slices by ``iterations`` FISTA steps; full-grid complex images ``(B, H, W)``.

    ``kspace`` ``(B, C, H, W)`` (masked), ``maps`` ``(B, C, H, W)``, ``mask`` ``(B, H, W)``, as
    :func:`~convexrecon.mri.sense.sense_forward`. The weight of slice ``b`` is ``lamda * scale[b]``
    (None: ``lamda``). The step of slice ``b`` is :math:`1 / (\max M^2 \cdot \max_r \sum_c |S_c(r)|^2)`,
    the inverse of a bound on :math:`\|A^H A\|`, so the iteration converges for any maps (1 for 0/1 masks and
    ESPIRiT maps of unit sum of squares, sigpy's step). Starts at ``start`` (default :math:`A^H k`). As
    :func:`~convexrecon.mri.classical.l1_wavelet`, the result is zero where every map is zero.

    ``shifts`` (``(dy, dx)`` pairs; None: no shift) makes it **cycle-spun** (translation-invariant) CS: every
    step averages the soft threshold over the wavelet grids shifted by each pair. The average of the proximal
    maps of the shifted terms :math:`\lambda\|W S_s x\|_1` is the proximal map of their *proximal average*
    (Bauschke, Goebel, Lucet & Wang, SIAM J. Optim. 2008), a convex function, so the iteration is FISTA on a
    convex program; it is the classical remedy for the shift variance of decimated wavelets (Coifman & Donoho
    1995; BART shifts the grid at random per iteration).
    """
    if not (isinstance(lamda, (int, float)) and lamda >= 0):
        raise ValueError(f"The 'lamda' parameter must be a number >= 0. Got {lamda!r} instead.")
    if not (isinstance(iterations, int) and iterations >= 0):
        raise ValueError(f"The 'iterations' parameter must be an int >= 0. Got {iterations!r} instead.")
    error = ValueError(f"The 'shifts' parameter must be a non-empty sequence of (dy, dx) int pairs or None. "
                       f"Got {shifts!r} instead.")
    try:
        grid = [(0, 0)] if shifts is None else [tuple(p) for p in shifts]
    except TypeError:
        raise error from None
    if not grid or not all(len(p) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in p)
                           for p in grid):
        raise error
    op = SenseOperator(maps, mask, spatial_dims=2)
    data = op.adjoint(kspace)  # A^H k, once
    # A^H A y = fftshift(gram(ifftshift(y))): two shifts of one image a step instead of four of every coil
    gram, axes = op.shifted_normal(), (-2, -1)
    x = data if start is None else start
    _check_images("start", x)
    b = x.shape[0]
    real = x.real.dtype
    bound = (maps.abs().pow(2).sum(-3).flatten(1).amax(1) * mask.abs().pow(2).flatten(1).amax(1)).to(real)
    step = torch.where(bound > 0, 1.0 / bound.clamp_min(torch.finfo(real).tiny), torch.zeros_like(bound))
    unit = torch.ones(b, dtype=real, device=x.device) if scale is None else scale.to(x.device, real)
    cut = float(lamda) * unit * step
    previous, t = x, 1.0
    for _ in range(iterations):
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        y = x + ((t - 1.0) / t_next) * (x - previous)
        gradient = torch.fft.fftshift(gram(torch.fft.ifftshift(y, dim=axes)), dim=axes) - data  # A^H (A y - k)
        previous = x
        z = y - step.reshape(b, 1, 1).to(x.dtype) * gradient
        x = _spun_shrink(z, grid, cut, wave)
        t = t_next
    return x * (maps.abs().pow(2).sum(-3) > 0)
