r"""The noise level of a scan, estimated from its own k-space: :func:`estimate_noise`.

**Which region and why.** The estimate uses the *outer k-space*: the share ``fraction`` of the measured
locations farthest from the k-space centre (elliptic rings, so the corners of a fully sampled grid and the
rim of a Poisson-disc ellipse). There the object's signal is weakest (it falls off with spatial
frequency), while the receiver noise is white in k-space and so just as strong as anywhere. The
calibration region is the opposite: it holds the strongest signal, and its residual needs a signal model
(a low-rank calibration matrix, as ESPIRiT fits) whose misfit would be counted as noise.

**The estimator.** The corners still hold some signal (sharp edges decay only as :math:`1/|k|`), and it
grows relative to the noise at high SNR. That signal is coherent across coils: at one k-space location
the coils see the object through smooth sensitivities, so the coil vectors of the signal span only a few
directions, while the noise spans all :math:`C`. So the estimate is the **median eigenvalue of the coil
covariance** of the corner samples: :math:`\hat\sigma^2 = \operatorname{median}\,\operatorname{eig}
\big(\tfrac1n K K^H\big)` with :math:`K` the ``C × n`` corner samples. Signal lifts the top eigenvalues
only; for white noise of per-coil variance :math:`\sigma^2` every eigenvalue is :math:`\sigma^2`, and
for coil-correlated noise the median eigenvalue stays near the per-coil variance (the eigenvalues of a
correlation matrix average to 1). Measured on the synthetic data (knee and brain, SNR 10, 25
and 100, fully sampled, Poisson 4x and lines 4x; ``estimate / true σ``): 15 coils 0.91-1.04, 8 coils
0.92-1.65 (the high end: Poisson at SNR 100 on a 320 x 184 grid, where the few outer samples hold the
most signal), 4 coils up to 3.4 (the signal reaches the median eigenvalue at high SNR). Beyond that range, 15 coils on the
full 640 x 368 grid (one slice each): at SNR 400 0.96-1.07 fully sampled and on lines, Poisson 1.04 (brain) and
1.50 (knee); at SNR 1000 1.05-1.44, Poisson 1.20 and 3.07 (the knee family's fine texture keeps signal in the
few outer samples of the Poisson ellipse), so at very high SNR the estimate errs high and weights derived from it
regularise more than intended. tests/test_noise.py checks 1.15x (15 coils) and 1.5x (8 coils) on a 160 x 92
grid.

:math:`\hat\sigma` is the standard deviation of one complex k-space sample of one coil (real and imaginary
parts :math:`\hat\sigma/\sqrt2` each), in the units of ``kspace``: the synthetic generator's ``snr``
convention (:func:`convexrecon.data.synthetic.synthesize_volume`). With the orthonormal FFT and maps of
unit root-sum-of-squares it is also the noise standard deviation of the fully sampled SENSE image, so
it scales with the data exactly as the images do (the estimate is positively homogeneous).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

DEFAULT_FRACTION = 1 / 32  # share of the measured locations, the farthest from the k-space centre, that count


def estimate_noise(kspace: Any, mask: Any = None, fraction: float = DEFAULT_FRACTION) -> Tensor:
    """Per-slice noise standard deviation of multi-coil k-space (see the module doc).

    Locations that every coil holds as exactly zero (zero-padded k-space) do not count as measured, and coils whose
    samples are all zero in a slice (the coil padding of :func:`~convexrecon.mri.consistency.measured_from_problems`)
    are left out of that slice's covariance.

    Parameters
    ----------
    kspace
        ``(N, C, H, W)`` or ``(C, H, W)`` complex k-space (tensor or array), masked or not.
    mask
        ``(N, H, W)``, ``(H, W)`` or ``(N, 1, H, W)`` sampling mask (None: every location was measured).
        Only measured locations count.
    fraction
        Share in (0, 0.5] of the measured locations that count: those farthest from the k-space centre
        (square rings, the grid scaled to a square).

    Returns
    -------
    torch.Tensor
        ``(N,)`` (or a 0-d tensor for one ``(C, H, W)`` slice) in the real dtype of ``kspace``, on its device.
    """
    k = torch.as_tensor(kspace)
    if not k.is_complex() or k.ndim not in (3, 4):
        raise ValueError(f"The 'kspace' parameter must be complex (N, C, H, W) or (C, H, W) k-space. "
                         f"Got {k.dtype} {tuple(k.shape)} instead.")
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 0.5):
        raise ValueError(f"The 'fraction' parameter must be a number in (0, 0.5]. Got {fraction!r} instead.")
    single = k.ndim == 3
    k = k[None] if single else k
    n, coils, height, width = k.shape
    if mask is None:
        m = torch.ones(n, height, width, dtype=torch.bool, device=k.device)
    else:
        m = torch.as_tensor(mask, device=k.device)
        if m.ndim == 4 and m.shape[1] == 1:
            m = m[:, 0]
        if m.ndim == 2 and tuple(m.shape) == (height, width):
            m = m.expand(n, height, width)
        if tuple(m.shape) != (n, height, width):
            raise ValueError(f"The 'mask' parameter must have shape ({n}, {height}, {width}) or ({height}, {width}). "
                             f"Got {tuple(torch.as_tensor(mask).shape)} instead.")
        m = m != 0
    m = m & (k.abs().amax(1) > 0)  # a location every coil holds as exactly zero was not measured (zero padding)
    rows = (torch.arange(height, device=k.device, dtype=torch.float64) - height // 2) / (height / 2)
    cols = (torch.arange(width, device=k.device, dtype=torch.float64) - width // 2) / (width / 2)
    radius = (rows[:, None] ** 2 + cols[None, :] ** 2).expand(n, height, width)  # (squared) elliptic rings
    counts = m.flatten(1).sum(1)
    if int(counts.min()) < coils / fraction:
        raise ValueError(f"The 'mask' parameter must measure at least {int(coils / fraction + 0.999)} locations "
                         f"per slice with non-zero k-space (coils / fraction, for {coils} coils). Got "
                         f"{int(counts.min())} in slice {int(counts.argmin())} instead.")
    out = []
    for i in range(n):
        measured = radius[i][m[i]]
        edge = measured.sort().values[int((1.0 - fraction) * (len(measured) - 1))]
        samples = k[i][:, m[i] & (radius[i] >= edge)].to(torch.complex128)  # (C, n_i): the outermost measured
        samples = samples[samples.abs().amax(1) > 0]  # coils that measured nothing (zero padding) do not count
        covariance = samples @ samples.conj().T / samples.shape[1]
        eigen = torch.linalg.eigvalsh(covariance).clamp_min(0)
        c = len(eigen)
        out.append(eigen.median() if c % 2 else eigen[c // 2 - 1:c // 2 + 1].mean())
    sigma = torch.stack(out).sqrt().to(k.real.dtype)
    return sigma[0] if single else sigma

