"""Slices with different coil counts stack into one MeasuredData (zero coils), and nothing they compute changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from convexrecon.cli import main
from convexrecon.data.masks import poisson_disc
from convexrecon.data.synthetic import make_synthetic, synthesize_volume
from convexrecon.mri import estimate_noise
from convexrecon.mri.classical import problem_from_kspace
from convexrecon.mri.consistency import measured_from_problems, sense_cg_batch
from convexrecon.mri.sense import sense_adjoint, sense_normal
from convexrecon.mri.sparsity import l1_wavelet_fista

SHAPE = (64, 46)


def _problem(coils: int, seed: int):
    volume = synthesize_volume(SHAPE, 1, coils, seed, 30.0)
    mask = poisson_disc(SHAPE, 3.0, 12, seed).astype(bool)
    return problem_from_kspace(volume.kspace[0], mask, 12, 24)


def test_fewer_coils_are_padded_with_zero_coils_that_change_nothing() -> None:
    few, many = _problem(4, 1), _problem(7, 2)
    data = measured_from_problems([few, many])
    assert tuple(data.kspace.shape) == (2, 7, *SHAPE) and tuple(data.maps.shape) == (2, 7, *SHAPE)
    assert torch.all(data.kspace[0, 4:] == 0) and torch.all(data.maps[0, 4:] == 0)
    # in float64, so that the comparison sees the padding and not float32 rounding (sums over coils run over zeros)
    k, s, m = measured_from_problems([few]).to(dtype=torch.complex128)[:3]
    pk, ps, pm = data.subset(slice(0, 1)).to(dtype=torch.complex128)[:3]
    x = torch.randn(1, *SHAPE, dtype=torch.complex128)
    # the operator, every image of the network's start and the noise level: those of the slice's own coils
    assert torch.allclose(sense_adjoint(pk, ps, pm), sense_adjoint(k, s, m), atol=1e-12)
    assert torch.allclose(sense_normal(x, ps, pm), sense_normal(x, s, m), atol=1e-12)
    assert torch.allclose(sense_cg_batch(pk, ps, pm, 10), sense_cg_batch(k, s, m, 10), atol=1e-10)
    assert torch.allclose(l1_wavelet_fista(pk, ps, pm, 0.01, 20), l1_wavelet_fista(k, s, m, 0.01, 20), atol=1e-10)
    assert float(estimate_noise(pk, pm)[0]) == pytest.approx(float(estimate_noise(k, m)[0]), rel=1e-6)
    assert float(estimate_noise(data.kspace, data.mask)[1]) == pytest.approx(
        float(estimate_noise(*measured_from_problems([many])[:1], measured_from_problems([many]).mask)[0]), rel=1e-6)


def test_slices_of_different_grids_are_refused() -> None:
    other = problem_from_kspace(synthesize_volume((64, 40), 1, 4, 3, 30.0).kspace[0],
                                poisson_disc((64, 40), 3.0, 12, 3).astype(bool), 12, 24)
    with pytest.raises(ValueError, match=r"must share one k-space grid \(H, W\) to be stacked. Got \[\(64, 40\), "
                                         r"\(64, 46\)\] instead"):
        measured_from_problems([_problem(4, 1), other])


def test_zero_padded_kspace_is_not_counted_as_measured_noise() -> None:
    """fastMRI files may hold zero-padded k-space edges: marked sampled by a mask, they are not noise samples."""
    volume = synthesize_volume((96, 64), 1, 8, 4, 25.0)
    k = torch.from_numpy(volume.kspace[0])
    padded = k.clone()
    padded[:, :, :6] = 0
    padded[:, :, -6:] = 0
    inner = torch.ones(96, 64, dtype=torch.bool)
    inner[:, :6] = False
    inner[:, -6:] = False
    assert float(estimate_noise(padded)) == pytest.approx(float(estimate_noise(k, inner)), rel=1e-6)
    assert float(estimate_noise(padded)) > 0.5 * float(estimate_noise(k))


def test_train_refuses_files_of_two_grids_for_the_unrolled_adam_network_before_preprocessing(tmp_path: Path,
                                                                                           capsys) -> None:
    """Adam batches slices through the DC steps; the convex trainer takes several grids (test_grid_groups.py)."""
    make_synthetic(tmp_path / "d", volumes=2, slices=1, coils=4, seed=0, shape=(64, 46), snr=30.0)
    make_synthetic(tmp_path / "e", volumes=1, slices=1, coils=4, seed=1, shape=(64, 40), snr=30.0)
    (tmp_path / "e" / "file_synth_1_0000.h5").rename(tmp_path / "d" / "file_other.h5")
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path / "d"), "--mask", "poisson", "--out", str(tmp_path / "m"),
              "--recommended", "--method", "end_to_end", "--crop", "24", "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert ("argument --data: expected files of one k-space grid (H x W) for --method end_to_end --architecture "
            "unrolled (Adam batches the slices through the data-consistency steps; coil counts may differ; the convex "
            "method takes several grids). Got 64x40: 1 file(s), e.g. file_other.h5; 64x46: 2 file(s), e.g. "
            "file_synth_0_0000.h5.") in err
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").rglob("*.npy"))  # nothing preprocessed
