"""Metrics against direct formulas and scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from convexrecon.metrics import evaluate, magnitude, nmse, psnr, ssim, summarize


def _pair(seed: int, shape: tuple[int, ...] = (37, 31)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.random(shape) + 1j * rng.random(shape)
    return target, target + 0.1 * rng.standard_normal(shape)


def test_psnr_formula() -> None:
    target, prediction = _pair(0)
    t, p = np.abs(target), np.abs(prediction)
    expected = 10 * np.log10(t.max() ** 2 / np.mean((t - p) ** 2))
    assert psnr(target, prediction) == pytest.approx(expected, rel=1e-12)
    assert psnr(target, prediction, data_range=2.0) == pytest.approx(10 * np.log10(4 / np.mean((t - p) ** 2)))
    assert psnr(torch.from_numpy(target), torch.from_numpy(prediction)) == pytest.approx(expected)
    assert psnr(t, t) == float("inf")


def test_nmse_formula() -> None:
    target, prediction = _pair(1)
    t, p = np.abs(target), np.abs(prediction)
    assert nmse(target, prediction) == pytest.approx(np.sum((t - p) ** 2) / np.sum(t**2), rel=1e-12)


def test_ssim_matches_skimage() -> None:
    target, prediction = _pair(2)
    t, p = np.abs(target), np.abs(prediction)
    expected = structural_similarity(t, p, win_size=7, K1=0.01, K2=0.03, data_range=t.max())
    assert ssim(target, prediction) == pytest.approx(expected, abs=1e-10)
    volume_t, volume_p = np.stack([t, 2 * t]), np.stack([p, 2 * p])
    per_slice = [structural_similarity(a, b, win_size=7, data_range=volume_t.max()) for a, b in zip(volume_t, volume_p)]
    assert ssim(volume_t, volume_p) == pytest.approx(np.mean(per_slice), abs=1e-10)


def test_metrics_do_not_modify_inputs() -> None:
    target, prediction = _pair(3)
    copies = target.copy(), prediction.copy()
    psnr(target, prediction), ssim(target, prediction), nmse(target, prediction)
    assert np.array_equal(target, copies[0]) and np.array_equal(prediction, copies[1])


def test_conventions() -> None:
    t1, p1 = _pair(4)
    t2, p2 = _pair(5)
    t2, p2 = 3 * t2, 3 * p2
    targets, predictions, volumes = [t1, t1, t2], [p1, p1, p2], ["a", "a", "b"]
    by_slice = evaluate(targets, predictions, volumes, "slice")
    assert by_slice["psnr"].n == 3
    assert by_slice["psnr"].mean == pytest.approx(np.mean([psnr(t1, p1), psnr(t1, p1), psnr(t2, p2)]))
    by_volume = evaluate(targets, predictions, volumes, "volume")
    assert by_volume["psnr"].n == 2
    assert by_volume["ssim"].mean == pytest.approx(
        np.mean([ssim(np.stack([t1, t1]), np.stack([p1, p1])), ssim(t2, p2)])
    )
    assert str(summarize([1.0, 3.0])) == "2.0000 ± 1.0000"


def test_bad_input() -> None:
    target, prediction = _pair(6)
    with pytest.raises(ValueError, match="shape"):
        psnr(target, prediction[:, :-1])
    with pytest.raises(ValueError, match="data_range"):
        psnr(target, prediction, data_range=0.0)
    with pytest.raises(ValueError, match="zero everywhere"):
        nmse(np.zeros((8, 8)), np.ones((8, 8)))
    with pytest.raises(ValueError, match="7"):
        ssim(np.ones((5, 5)), np.ones((5, 5)))
    with pytest.raises(ValueError, match="convention"):
        evaluate([target], [prediction], ["a"], "pixel")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        summarize([])
    assert magnitude(torch.ones(2, dtype=torch.complex64)).dtype == np.float64
