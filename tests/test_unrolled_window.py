"""Stage programs posed on a centre window of every training slice (``train_unrolled(fit_window=...)``), which
``train`` uses where whole crops exceed the interior point's limits: each stage is still solved to a certificate,
the block it returns is a convolutional block of the same shape, and the window is part of the run's settings."""

import pytest
import torch

from convexrecon.errors import CheckpointError
from convexrecon.stack.unrolled_train import train_unrolled
from tests.test_unrolled import CROP, SETTINGS, SOLVE, sq_error, toy_data

WINDOW = CROP - 8


@pytest.fixture(scope="module")
def toy():
    return toy_data(6, seed=0)


def _train(toy, window, **keywords):
    inputs, targets, data, _ = toy
    return train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=torch.arange(6) >= 4,
                          cg_iterations=4, solve_options=SOLVE, fit_window=window, **keywords)


def test_stages_on_a_window_are_certified_and_fitted_on_its_pixels(toy):
    inputs, targets, _, _ = toy
    result = _train(toy, WINDOW)
    assert len(result.records) == 2
    for record in result.records:
        assert record["status"] == "optimal" and record["relative_gap"] <= 1e-4
        assert record["num_pixels"] == len(inputs) * WINDOW * WINDOW  # the window program's pixels
    whole = _train(toy, None)
    assert [r["num_pixels"] for r in whole.records] == [len(inputs) * CROP * CROP] * 2
    # the windowed network runs on whole crops and still improves on its start on the training slices
    pred = result.network.predict(toy[2])
    assert pred.shape == targets.shape and sq_error(pred, targets) < sq_error(inputs, targets)
    # a window as large as the crop is the whole crop
    same = _train(toy, CROP)
    assert [r["num_pixels"] for r in same.records] == [r["num_pixels"] for r in whole.records]


def test_the_window_is_checked_and_part_of_the_checkpointed_settings(toy, tmp_path):
    for bad in (0, 2, 5.0, True, "16"):
        with pytest.raises(ValueError, match="'fit_window' parameter"):
            _train(toy, bad)
    _train(toy, WINDOW, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="fit_window"):
        _train(toy, WINDOW - 2, checkpoint_dir=tmp_path)
