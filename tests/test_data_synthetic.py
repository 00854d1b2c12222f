"""The synthetic data set: determinism, layout, texture, families, noise."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from convexrecon.data.fastmri import FastMRIVolume, parse_header
from convexrecon.mri.fft import center_crop
from convexrecon.data.statistics import high_frequency_fraction, wavelet_compressibility
from convexrecon.data.synthetic import (
    ANATOMIES,
    coil_noise_correlation,
    make_synthetic,
    phantom_slice,
    synthesize_volume,
)
from tests.legacy_phantom import legacy_phantom_slice

SMALL = (48, 37)


@pytest.mark.parametrize("anatomy", sorted(ANATOMIES))
def test_same_seed_gives_identical_files(tmp_path: Path, anatomy: str) -> None:
    a = make_synthetic(tmp_path / "a", volumes=1, slices=2, coils=3, shape=SMALL, seed=4, anatomy=anatomy)
    b = make_synthetic(tmp_path / "b", volumes=1, slices=2, coils=3, shape=SMALL, seed=4, anatomy=anatomy)
    c = make_synthetic(tmp_path / "c", volumes=1, slices=2, coils=3, shape=SMALL, seed=5, anatomy=anatomy)
    with h5py.File(a[0]) as fa, h5py.File(b[0]) as fb, h5py.File(c[0]) as fc:
        assert np.array_equal(fa["kspace"][()], fb["kspace"][()])
        assert np.array_equal(fa["reconstruction_rss"][()], fb["reconstruction_rss"][()])
        assert dict(fa.attrs) == dict(fb.attrs)
        assert not np.allclose(fa["kspace"][()], fc["kspace"][()])


def test_brain_family_is_read_by_the_fastmri_loader(tmp_path: Path) -> None:
    (path,) = make_synthetic(tmp_path, volumes=1, slices=2, coils=4, shape=SMALL, anatomy="brain")
    assert path.name == "file_synth_brain_0_0000.h5"
    volume = FastMRIVolume(path)
    assert volume.shape == (2, 4) + SMALL
    assert volume.kspace(1).dtype == np.complex64
    assert volume.attrs["acquisition"] == "AXT2"
    with h5py.File(path) as handle:
        header = parse_header(handle["ismrmrd_header"][()])
    assert header.encoded_size == (SMALL[0], SMALL[1], 1)


def _target(anatomy: str, subject: int, z: float) -> np.ndarray:
    shape = (640, 368)
    if anatomy == "legacy":
        return np.abs(center_crop(legacy_phantom_slice(shape, subject, z, 0), (320, 320)))
    image = phantom_slice(shape, subject, z, 0, anatomy)
    return np.abs(center_crop(image, (320, 320)))


def test_targets_have_texture_that_the_legacy_phantom_lacks() -> None:
    """Full-size noiseless targets: wavelet approximation error and high-frequency energy.

    Measured (benchmarks/bench_synthetic.py): knee 0.083–0.086 and 0.058–0.067, brain
    0.087–0.090 and 0.087–0.095, legacy phantom (tests/legacy_phantom.py) 0.042–0.045 and 0.020–0.021.
    """
    legacy = _target("legacy", 7, 0.0)
    assert wavelet_compressibility(legacy) < 0.06 and high_frequency_fraction(legacy) < 0.035
    for anatomy in ANATOMIES:
        image = _target(anatomy, 7, 0.0)
        assert wavelet_compressibility(image) > 0.07, anatomy
        assert high_frequency_fraction(image) > 0.045, anatomy


def test_families_differ_in_structure() -> None:
    knee, brain = _target("knee", 3, 0.0), _target("brain", 3, 0.0)
    # The limb runs through the whole readout field of view; the head lies inside it.
    edges = np.concatenate([knee[:4].ravel(), knee[-4:].ravel()])
    assert np.mean(edges > 0.2 * knee.max()) > 0.3
    brain_edges = np.concatenate([brain[:4].ravel(), brain[-4:].ravel()])
    assert np.mean(brain_edges > 0.2 * brain.max()) < 0.02
    assert abs(np.corrcoef(knee.ravel(), brain.ravel())[0, 1]) < 0.5


def test_slices_change_continuously_and_subjects_differ() -> None:
    a = np.abs(phantom_slice((96, 61), 11, 0.0, 0))
    b = np.abs(phantom_slice((96, 61), 11, 0.05, 0))
    other = np.abs(phantom_slice((96, 61), 12, 0.0, 0))
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    assert np.corrcoef(a.ravel(), other.ravel())[0, 1] < np.corrcoef(a.ravel(), b.ravel())[0, 1] - 0.1


@pytest.mark.parametrize("anatomy", sorted(ANATOMIES))
def test_noise_level_and_coil_correlation_are_as_documented(anatomy: str) -> None:
    clean = synthesize_volume((96, 61), 2, 6, seed=2, snr=None, anatomy=anatomy)
    noisy = synthesize_volume((96, 61), 2, 6, seed=2, snr=20.0, anatomy=anatomy)
    magnitude = np.abs(clean.images)
    sigma = magnitude[magnitude > 0.05 * magnitude.max()].mean() / 20.0
    noise = (noisy.kspace - clean.kspace).transpose(1, 0, 2, 3).reshape(6, -1)
    per_coil = np.sqrt(np.mean(np.abs(noise) ** 2, axis=1))
    assert np.allclose(per_coil / sigma, 1, atol=0.04)
    measured = np.real(noise @ noise.conj().T) / noise.shape[1] / sigma**2
    assert np.allclose(measured, coil_noise_correlation(6), atol=0.04)
    assert measured[0, 1] == pytest.approx(0.25, abs=0.04)


def test_bad_anatomy_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'anatomy' parameter must be one of \\['brain', 'knee'\\]. Got 'foot'"):
        make_synthetic(tmp_path, volumes=1, slices=1, coils=2, shape=SMALL, anatomy="foot")
    with pytest.raises(ValueError, match="'anatomy'"):
        phantom_slice(SMALL, 0, 0.0, 0, anatomy="Knee")
    assert not list(tmp_path.glob("*.h5"))
