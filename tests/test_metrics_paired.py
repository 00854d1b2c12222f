"""Paired per-slice differences with a Student-t interval, and per-slice PSNR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexrecon.metrics import paired_difference, score_slices, slice_psnr


def test_known_interval_from_a_t_table() -> None:
    # differences 1..5: mean 3, sample std sqrt(2.5); t(4 dof, 0.975) = 2.7764 (printed t tables)
    got = paired_difference([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764 * np.sqrt(2.5) / np.sqrt(5)
    assert got.mean == 3.0 and got.std == pytest.approx(np.sqrt(2.5)) and got.n == 5
    assert (got.low, got.high) == pytest.approx((3 - half, 3 + half), abs=1e-4)
    assert got.significant and got.text().startswith("+3.00 dB (95 % CI +1.04 to +4.96 dB, 5 slices")


def test_an_interval_containing_zero_is_no_significant_difference() -> None:
    got = paired_difference([1.0, -1.0, 2.0, -2.0], [0.0, 0.0, 0.0, 0.0], level=0.9)
    # mean 0, std sqrt(10/3), t(3 dof, 0.95) = 2.3534
    assert got.mean == 0.0 and got.high == pytest.approx(2.3534 * np.sqrt(10 / 3) / 2, abs=1e-4)
    assert not got.significant and got.text().startswith("no significant difference (+0.00 dB, 90 % CI")


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1.0], [0.0])
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0, 2.0], [0.0])
    with pytest.raises(ValueError, match="'level'"):
        paired_difference([1.0, 2.0], [0.0, 0.0], level=1.0)


def test_slice_psnr_averages_to_score_slices() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.rand(3, 2, 8, 8, generator=gen)
    predictions = targets + 0.05 * torch.randn(3, 2, 8, 8, generator=gen)
    scales = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    values = slice_psnr(targets, predictions, scales)
    assert values.shape == (3,)
    assert values.mean() == pytest.approx(score_slices(targets, predictions, scales, ["a"] * 3)["psnr"].mean)
