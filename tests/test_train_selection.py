"""Per-block choice of beta on held-out training slices (BlockSettings.beta_ratios)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from convexrecon import fit_layer
from convexrecon.stack.layerwise import BlockSettings, block_beta, train_layerwise

RATIOS = (0.001, 0.05, 0.6)
SELECT = BlockSettings(kernel_size=3, num_arrangements=8, beta_ratios=RATIOS, tol=1e-5, max_iter=3000)


def _data(n: int = 6, h: int = 12, w: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.avg_pool2d(torch.randn(n, 2, h + 2, w + 2, generator=gen), 3, stride=1)
    return smooth + 0.4 * torch.randn(n, 2, h, w, generator=gen), smooth


HELD = torch.tensor([False, False, False, False, True, True])


def _train(blocks, **kwargs):
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_layerwise(x, y, blocks, seed=5, chunk_size=2, holdout=HELD, **kwargs)


def test_chosen_ratio_is_the_one_with_the_smallest_held_out_error() -> None:
    result = _train([SELECT])
    record = result.records[0]
    selection = record["selection"]
    x, y = _data()
    r = y - x
    fit, out = ~HELD, HELD
    scale = block_beta(SELECT, x[fit], r[fit], seed=5, ratio=1.0)
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ratio in RATIOS:  # independent cold solves of every candidate
            block = fit_layer(x[fit], r[fit], kernel_size=3, num_arrangements=8, activation="gated", seed=5,
                              gate_sampling="antithetic", beta=ratio * scale,
                              tol=1e-6, max_iter=5000)
            with torch.no_grad():
                errors.append(float((block(x[out]) - r[out]).double().pow(2).sum()))
    np.testing.assert_allclose(selection["holdout_sq_error"], errors, rtol=2e-3)
    ordered = sorted(errors)
    assert ordered[1] > 1.02 * ordered[0], "the candidates must be distinguishable for this test to mean anything"
    assert selection["chosen_ratio"] == RATIOS[int(np.argmin(errors))] == record["beta_ratio"]
    # the kept block is solved again on all slices with the chosen ratio
    full_scale = block_beta(SELECT, x, r, seed=5, ratio=1.0)
    assert record["beta"] == pytest.approx(selection["chosen_ratio"] * full_scale, rel=1e-12)
    assert record["num_patches"] == 6 and selection["fit_slices"] == 4 and selection["holdout_slices"] == 2
    # a middle ratio wins here: the smallest over-fits the 4 fit slices, the largest under-fits
    assert selection["chosen_ratio"] == 0.05


def test_selection_never_looks_at_the_validation_split() -> None:
    blocks = [SELECT, BlockSettings(kernel_size=1, num_arrangements=2, beta_ratios=(0.01, 0.1), tol=1e-3,
                                    max_iter=300)]
    runs = []
    for seed in (1, 2):
        vx, vy = _data(2, seed=seed)
        runs.append(_train(blocks, val_inputs=vx, val_targets=vy, val_scales=torch.ones(2)))
    assert [r["beta"] for r in runs[0].records] == [r["beta"] for r in runs[1].records]
    assert [r["psnr"] for r in runs[0].records] != [r["psnr"] for r in runs[1].records]
    x, _ = _data()
    with torch.no_grad():
        torch.testing.assert_close(runs[0].network(x), runs[1].network(x), rtol=0, atol=0)
    assert runs[0].network.config["blocks"][1]["selection"]["beta_ratios"] == [0.01, 0.1]


def test_resumed_selection_equals_uninterrupted(tmp_path) -> None:
    blocks = [SELECT, BlockSettings(kernel_size=1, num_arrangements=2, beta_ratios=(0.01, 0.1), tol=1e-3,
                                    max_iter=300)]
    full = _train(blocks, checkpoint_dir=tmp_path / "a")
    _train(blocks, checkpoint_dir=tmp_path / "b", stop_after=1)
    resumed = _train(blocks, checkpoint_dir=tmp_path / "b")
    assert [r["selection"] for r in resumed.records] == [r["selection"] for r in full.records]
    x, _ = _data()
    with torch.no_grad():
        torch.testing.assert_close(resumed.network(x), full.network(x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"holdout": None}, "pass 'holdout'"),
    ({"holdout": [True] * 6}, "some but not all of the 6"),
    ({"holdout": [0, 1, 0, 1, 0, 1]}, "boolean per training slice, shape \\(6,\\)"),
    ({"holdout": torch.zeros(5, dtype=torch.bool)}, "shape \\(6,\\). Got dtype torch.bool, shape \\(5,\\)"),
])
def test_bad_holdout_names_the_problem(kwargs, match) -> None:
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        train_layerwise(x, y, [SELECT], **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"beta_ratios": ()}, "non-empty sequence"),
    ({"beta_ratios": (0.1, -1.0)}, "finite numbers > 0"),
    ({"beta_ratios": (0.1, True)}, "finite numbers > 0"),
    ({"beta_ratios": "0.1"}, "non-empty sequence"),
    ({"beta_ratios": (0.1,), "beta": 2.0}, "exclude each other"),
])
def test_bad_beta_ratios(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        BlockSettings(**kwargs)


def test_candidates_without_hidden_channels_are_not_chosen_for_an_inner_block() -> None:
    huge = BlockSettings(kernel_size=3, num_arrangements=2, beta_ratios=(5.0,), tol=1e-3, max_iter=100)
    with pytest.raises(ValueError, match="without hidden channels"):
        _train([huge, SELECT])


def test_later_blocks_are_scored_on_features_that_never_saw_the_held_out_slices() -> None:
    second = BlockSettings(kernel_size=1, num_arrangements=3, beta_ratios=(0.003, 0.3), tol=1e-5, max_iter=3000)
    result = _train([SELECT, second])
    first_record, second_record = result.records
    x, y = _data()
    r, fit, out = y - x, ~HELD, HELD
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # block 1 of the selection chain: the chosen ratio, solved on the fit slices only
        scale = block_beta(SELECT, x[fit], r[fit], seed=5, ratio=1.0)
        b1 = fit_layer(x[fit], r[fit], kernel_size=3, num_arrangements=8, activation="gated", seed=5,
                       gate_sampling="antithetic", beta=first_record["beta_ratio"] * scale, tol=1e-6, max_iter=5000)
        with torch.no_grad():
            h = b1.hidden(x)
        scale2 = block_beta(second, h[fit], r[fit], seed=6, ratio=1.0)
        errors = []
        for ratio in second.beta_ratios:
            b2 = fit_layer(h[fit], r[fit], kernel_size=1, num_arrangements=3, activation="gated", seed=6,
                           gate_sampling="antithetic", beta=ratio * scale2, tol=1e-6, max_iter=5000)
            with torch.no_grad():
                errors.append(float((b2(h[out]) - r[out]).double().pow(2).sum()))
    np.testing.assert_allclose(second_record["selection"]["holdout_sq_error"], errors, rtol=5e-3)
    # features of the refit block 1 (trained on all six slices) would score differently
    full_first = result.network.layers[0]
    with torch.no_grad():
        assert not torch.allclose(full_first(x), h, atol=1e-3)


def test_fixed_blocks_before_a_selecting_block_join_the_selection_chain() -> None:
    fixed = BlockSettings(kernel_size=3, num_arrangements=4, beta_ratio=0.05, tol=1e-3, max_iter=500)
    result = _train([fixed, SELECT])
    first, second = result.records
    assert first["selection"]["beta_ratios"] == [0.05] and first["beta_ratio"] == 0.05
    assert second["selection"]["beta_ratios"] == list(RATIOS)
    after = _train([SELECT, fixed])  # nothing selects after block 1: block 2 is solved once, on all slices
    assert after.records[1]["selection"] is None


def test_a_ratio_chosen_at_the_edge_of_the_candidates_warns_at_the_callers_line() -> None:
    """The middle ratio wins on these data (test above): chosen inside [0.001, 0.6] no SelectionWarning; once the
    candidates start at it, it is their smallest and the warning names the block and the setting to extend."""
    from convexrecon import SelectionWarning

    x, y = _data()
    for ratios, expected in ((RATIOS, None), ((0.05, 0.6), "smallest")):
        block = BlockSettings(kernel_size=3, num_arrangements=8, beta_ratios=ratios, tol=1e-5, max_iter=3000)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train_layerwise(x, y, [block], seed=5, chunk_size=2, holdout=HELD)
        edges = [w for w in caught if issubclass(w.category, SelectionWarning)]
        assert result.records[0]["selection"]["chosen_ratio"] == 0.05
        if expected is None:
            assert edges == []
        else:
            assert len(edges) == 1 and edges[0].filename == __file__
            message = str(edges[0].message)
            assert "Block 1: the β ratio chosen on the held-out slices is" in message and "0.05, the smallest of the candidates [0.05, 0.6]" in message
            assert "add smaller values to 'beta_ratios'" in message
