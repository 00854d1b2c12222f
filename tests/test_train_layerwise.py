"""Layer-wise convex training: stacking, resume, save/load, bad input (tiny sizes)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from convexrecon import fit_layer
from convexrecon.stack.layerwise import BlockSettings, train_layerwise
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.persist import load_network

BLOCKS = (BlockSettings(kernel_size=3, num_arrangements=3, tol=1e-3, max_iter=200),
          BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-3, max_iter=200),
          BlockSettings(kernel_size=1, num_arrangements=2, tol=1e-3, max_iter=200))


def _data(n: int = 4, h: int = 13, w: int = 11, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 2, h, w, generator=gen)
    inputs = target + 0.3 * torch.randn(n, 2, h, w, generator=gen)
    return inputs, target


def _train(**kwargs):
    x, y = _data()
    vx, vy = _data(2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_layerwise(x, y, BLOCKS, val_inputs=vx, val_targets=vy, val_scales=torch.ones(2),
                               patch_size=7, patches_per_slice=2, seed=3, chunk_size=2, **kwargs)


def test_stacked_forward_equals_composition_of_blocks() -> None:
    x, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b1 = fit_layer(x, y - x, kernel_size=3, num_arrangements=3, activation="gated", tol=1e-3, max_iter=200)
        h1 = b1.hidden(x).detach()
        b2 = fit_layer(h1, y - x, kernel_size=3, num_arrangements=2, activation="relu", tol=1e-3, max_iter=300)
    net = ReconNet([HiddenLayer.from_block(b1), HiddenLayer.from_block(b2)], b2.second)
    with torch.no_grad():
        expected = x + b2.second(b2.hidden(b1.hidden(x)))
        torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
        one = ReconNet([HiddenLayer.from_block(b1)], b1.second)
        torch.testing.assert_close(one(x), x + b1(x), rtol=0, atol=0)


def test_trainer_records_every_block_and_network_matches_last_record() -> None:
    result = _train()
    assert [r["block"] for r in result.records] == [1, 2, 3]
    for r in result.records:
        assert {"psnr", "ssim", "duality_gap", "relative_gap", "status", "beta"} <= set(r)
        assert np.isfinite(r["psnr"])
    assert result.network.num_blocks == 3
    assert result.network.config["method"] == "layerwise_convex"


def test_resumed_run_equals_uninterrupted_run(tmp_path) -> None:
    full = _train(checkpoint_dir=tmp_path / "a")
    partial = _train(checkpoint_dir=tmp_path / "b", stop_after=1)
    assert partial.network.num_blocks == 1
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["block_01.pt"]
    resumed = _train(checkpoint_dir=tmp_path / "b")
    a, b = full.network.state_dict(), resumed.network.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert [r["psnr"] for r in full.records] == [r["psnr"] for r in resumed.records]


def test_checkpoint_of_another_run_is_refused(tmp_path) -> None:
    _train(checkpoint_dir=tmp_path, stop_after=1)
    x, y = _data(seed=5)
    with pytest.raises(ValueError, match="different run"):
        train_layerwise(x, y, BLOCKS, patch_size=7, patches_per_slice=2, seed=3, checkpoint_dir=tmp_path)


def test_saved_model_reloads_to_identical_outputs(tmp_path) -> None:
    net = _train().network
    net.config["data"] = {"mask": "poisson", "crop": 13}
    net.save(tmp_path / "model")
    loaded = load_network(tmp_path / "model")
    x, _ = _data(3, seed=7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    assert loaded.config["blocks"][0]["beta"] == net.config["blocks"][0]["beta"]
    assert loaded.config["data"]["crop"] == 13


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"inputs": torch.zeros(2, 3, 5, 5)}, "'inputs'"),
        ({"targets": torch.zeros(2, 2, 5, 4)}, "'targets'"),
        ({"blocks": ()}, "'blocks'"),
        ({"patch_size": 0}, "'patch_size'"),
        ({"patch_size": 9}, "'patch_size'"),
        ({"patches_per_slice": 0}, "'patches_per_slice'"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, match) -> None:
    args = {"inputs": torch.zeros(2, 2, 5, 5), "targets": torch.zeros(2, 2, 5, 5), "blocks": BLOCKS[:1]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train_layerwise(args.pop("inputs"), args.pop("targets"), args.pop("blocks"), **args)


@pytest.mark.parametrize("kwargs", [{"activation": "tanh"}, {"kernel_size": 4}, {"num_arrangements": 0},
                                    {"beta": -1.0}])
def test_bad_block_settings(kwargs) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BlockSettings(**kwargs)


def test_load_network_missing_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_network(tmp_path)
