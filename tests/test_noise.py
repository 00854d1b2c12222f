"""The noise estimate from a scan's own outer k-space (convexrecon.mri.noise) against the generator's known σ."""

import numpy as np
import pytest
import torch

from convexrecon.data.masks import poisson_disc, random_lines
from convexrecon.data.synthetic import synthesize_volume
from convexrecon.mri import estimate_noise

FACTOR = 1.5  # the stated accuracy: within 1.5x of the true σ (8 coils, SNR 10-100, both families, three masks)
FACTORS = {8: FACTOR, 15: 1.15}  # more coils separate the signal better (mri/noise.py)
SHAPE, COILS = (160, 92), 8


def true_sigma(volume, snr):
    """The generator's per-coil noise std: mean |x| over the object (|x| > 5 % of max) / snr."""
    magnitude = np.abs(volume.images)
    return float(magnitude[magnitude > 0.05 * magnitude.max()].mean() / snr)


@pytest.mark.parametrize("coils", [8, 15])
@pytest.mark.parametrize("anatomy", ["knee", "brain"])
@pytest.mark.parametrize("snr", [10, 25, 100])
def test_noise_estimate_is_within_the_stated_factor_of_the_true_sigma(anatomy, snr, coils):
    volume = synthesize_volume(SHAPE, 2, coils, 3, snr, anatomy)
    sigma = true_sigma(volume, snr)
    masks = {"full": None, "poisson": poisson_disc(SHAPE, 4.0, 16, seed=1),
             "lines": random_lines(SHAPE, 4.0, seed=1)}
    for name, mask in masks.items():
        kspace = volume.kspace if mask is None else volume.kspace * mask
        ratio = estimate_noise(kspace, mask).numpy() / sigma
        assert ratio.shape == (2,)
        assert np.all((ratio > 1 / FACTORS[coils]) & (ratio < FACTORS[coils])), (name, ratio)


def test_noise_estimate_tracks_the_noise_not_the_signal():
    """Ten times the SNR gives a several times smaller estimate (the corners are not dominated by signal),
    and the estimate is positively homogeneous: scaling the data scales it."""
    low = synthesize_volume(SHAPE, 1, COILS, 5, 10.0, "knee")
    high = synthesize_volume(SHAPE, 1, COILS, 5, 100.0, "knee")
    ratio = float(estimate_noise(low.kspace)[0] / estimate_noise(high.kspace)[0])
    assert ratio > 10 / FACTOR ** 2
    one = torch.as_tensor(low.kspace[0])
    assert torch.allclose(estimate_noise(3.0 * one), 3.0 * estimate_noise(one), rtol=1e-5)
    assert estimate_noise(one).ndim == 0


def test_noise_estimate_checks_its_inputs():
    with pytest.raises(ValueError, match="'kspace'"):
        estimate_noise(np.ones((2, 3, 8, 8)))
    k = np.ones((2, 3, 16, 16), np.complex64)
    with pytest.raises(ValueError, match="'fraction'"):
        estimate_noise(k, fraction=0.7)
    with pytest.raises(ValueError, match="'mask'"):
        estimate_noise(k, np.ones((5, 5)))
    empty = np.zeros((16, 16))
    empty[8, 8] = 1
    with pytest.raises(ValueError, match="at least 96"):
        estimate_noise(k, empty)
