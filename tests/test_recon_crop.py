"""One output contract: ``crop`` (``reconstruct --crop``) is honoured by both architectures."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import convexrecon as cr
from convexrecon.cli import main
from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.masks import MaskFunc
from convexrecon.errors import DataWarning
from convexrecon.stack.network import ReconNet
from convexrecon.stack.unrolled import unrolled_plain

from .conftest import SHAPE

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = {"data": {"mask": "poisson", "acceleration": 4.0, "crop": 16, "calib": 16, "seed": 0}}


def _unrolled() -> torch.nn.Module:
    net = unrolled_plain(2, 4, 3, [0.5, 0.5], 16, config=CONFIG)
    with torch.no_grad():  # a non-zero correction, so that the blocks' region shows in the output
        for stage in net.stages:
            for p in stage.block.parameters():
                p.add_(0.05)
    return net.eval()


def _seed() -> torch.nn.Module:
    return ReconNet.plain([2], 3, seed=0, config=CONFIG).eval()


def _slice(synthetic_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    volume = FastMRIVolume(sorted(synthetic_dir.glob("*.h5"))[0])
    kspace = volume.kspace(0)
    return kspace, MaskFunc("poisson", 4.0).for_slice(kspace.shape[-2:], volume.path.name, 0)


@pytest.mark.parametrize("make", [_unrolled, _seed], ids=["unrolled", "layerwise-cnn"])
def test_reconstruct_slice_honours_crop(make, synthetic_dir: Path) -> None:
    net = make()
    kspace, mask = _slice(synthetic_dir)
    default = cr.reconstruct_slice(net, kspace, mask)
    assert default.shape == (16, 16)
    assert torch.equal(cr.reconstruct_slice(net, kspace, mask, crop=16), default)
    image, zero_filled = cr.reconstruct_slice(net, kspace, mask, crop=24, return_input=True)
    assert image.shape == zero_filled.shape == (24, 24) and torch.isfinite(image).all()
    ring = image.abs().clone()
    ring[4:20, 4:20] = 0
    assert ring.max() > 0.05 * image.abs().max()  # the border beyond the training crop is reconstructed too
    assert getattr(net, "crop", 16) == 16  # the model keeps its training crop


def test_unrolled_default_is_its_training_crop_without_a_config(synthetic_dir: Path) -> None:
    net = unrolled_plain(1, 4, 3, [0.5], 20).eval()  # no config: the crop it was built with
    kspace, mask = _slice(synthetic_dir)
    assert cr.reconstruct_slice(net, kspace, mask).shape == (20, 20)


def test_unrolled_crop_beyond_the_grid_is_an_error(synthetic_dir: Path) -> None:
    kspace, mask = _slice(synthetic_dir)
    with pytest.raises(ValueError, match=re.escape(f"'crop' parameter must fit the image: at most {SHAPE}. Got (99, 99)")):
        cr.reconstruct_slice(_unrolled(), kspace, mask, crop=99)


def test_reconstruct_command_writes_the_requested_crop_for_unrolled_models(synthetic_dir: Path,
                                                                           tmp_path: Path) -> None:
    model = tmp_path / "model"
    _unrolled().save(model)
    out = tmp_path / "recon"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)  # crop differs from training: warned, as for the seed model
        assert main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(out),
                     "--crop", "24", "--cache-dir", str(tmp_path / "cache")]) == 0
    for path in sorted(synthetic_dir.glob("*.h5")):
        with h5py.File(out / path.name, "r") as handle:
            assert handle["reconstruction"].shape[1:] == (24, 24)
            assert handle["zero_filled"].shape[1:] == (24, 24)
            assert int(handle.attrs["crop"]) == 24
