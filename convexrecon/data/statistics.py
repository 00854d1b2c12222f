"""Image statistics that tell textured anatomy from piecewise-constant phantoms.

Compressed sensing with an L1-wavelet prior does well exactly when an image is
well approximated by few wavelet coefficients; these numbers measure how far a
data set is from that regime (``benchmarks/bench_synthetic.py`` reports them,
``tests/test_data_synthetic.py`` bounds them).
"""

from __future__ import annotations

import numpy as np


def wavelet_compressibility(image: np.ndarray, keep: float = 0.05, wavelet: str = "db4", levels: int = 4) -> float:
    """Relative error of the best ``keep``-fraction wavelet approximation of ``|image|``.

    .. math:: \\|x - x_K\\|_2 / \\|x\\|_2,

    ``x_K`` keeping the largest ``K = keep · N`` coefficients of an orthogonal
    (periodised) wavelet transform. Near 0: wavelet-sparse (piecewise smooth);
    larger: texture that the prior cannot represent with few terms.
    """
    import pywt

    if not 0 < keep < 1:
        raise ValueError(f"The 'keep' parameter must lie in (0, 1). Got {keep} instead.")
    magnitude = np.abs(np.asarray(image, dtype=np.complex128)).astype(np.float64)
    coeffs = pywt.wavedec2(magnitude, wavelet, level=levels, mode="periodization")
    array, _ = pywt.coeffs_to_array(coeffs)
    flat = np.abs(array).ravel()
    count = max(1, round(keep * flat.size))
    threshold = np.partition(flat, flat.size - count)[flat.size - count]
    dropped = np.where(np.abs(array) >= threshold, 0.0, array)
    return float(np.linalg.norm(dropped) / (np.linalg.norm(array) + 1e-30))


def high_frequency_fraction(image: np.ndarray, cutoff: float = 0.25) -> float:
    """Share of the energy of ``|image|`` (mean removed) above ``cutoff`` × Nyquist in radial frequency."""
    if not 0 < cutoff < 1:
        raise ValueError(f"The 'cutoff' parameter must lie in (0, 1). Got {cutoff} instead.")
    magnitude = np.abs(np.asarray(image, dtype=np.complex128))
    spectrum = np.abs(np.fft.fft2(magnitude - magnitude.mean())) ** 2
    ky = np.fft.fftfreq(magnitude.shape[0])[:, None] / 0.5
    kx = np.fft.fftfreq(magnitude.shape[1])[None, :] / 0.5
    high = np.hypot(ky, kx) > cutoff
    return float(spectrum[high].sum() / (spectrum.sum() + 1e-30))
