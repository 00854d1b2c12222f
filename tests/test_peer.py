"""The external learned peer (benchmarks/kit/peer.py): fastMRI's VarNet cascades on our maps, masks and scale.

Skipped without the ``peers`` extra (``pip install -c constraints.txt -e ".[dev,peers]"``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("fastmri")

from benchmarks.kit.configs import CONFIGS  # noqa: E402
from benchmarks.kit.data import measured_split  # noqa: E402
from benchmarks.kit.evidence import adam_effort, curve_of  # noqa: E402
from benchmarks.kit.peer import VarNetPeer, available, train_peer  # noqa: E402
from convexrecon.data.synthetic import make_synthetic  # noqa: E402
from convexrecon.mri.consistency import MeasuredData, crop_center  # noqa: E402
from convexrecon.mri.fft import complex_to_channels  # noqa: E402
from convexrecon.mri.sense import SenseOperator  # noqa: E402
from convexrecon.stack.adam import TrainingRule, held_out_loss  # noqa: E402
from convexrecon.data.splits import holdout_mask  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_slices(shape: tuple[int, int], coils: int = 3, batch: int = 2, seed: int = 0) -> MeasuredData:
    """Random maps, a random 0/1 mask and masked random k-space: MeasuredData of ``batch`` slices."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(batch, coils, *shape, dtype=torch.complex64, generator=g)
    mask = (torch.rand(batch, *shape, generator=g) < 0.4).float()
    kspace = torch.randn(batch, coils, *shape, dtype=torch.complex64, generator=g) * mask[:, None]
    return MeasuredData(kspace, maps, mask, min(shape) - 3)


def test_the_extra_is_available() -> None:
    assert available()


@pytest.mark.parametrize("shape", [(12, 10), (11, 9)])  # even and odd grids: the centring of both FFTs
def test_the_peer_operator_equals_the_sense_operator(shape: tuple[int, int]) -> None:
    data = _random_slices(shape)
    g = torch.Generator().manual_seed(1)
    image = torch.randn(len(data), *shape, dtype=torch.complex64, generator=g)
    kspace = torch.randn(data.kspace.shape, dtype=torch.complex64, generator=g)
    peer = VarNetPeer(cascades=1, chans=2, pools=1)
    ours = SenseOperator(data.maps, data.mask, spatial_dims=2)
    expected = ours.forward(image)
    got = peer.operator(image, data.maps, data.mask)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    expected = ours.adjoint(kspace)
    got = peer.adjoint(kspace, data.maps, data.mask)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def test_a_peer_with_zero_regularisers_returns_the_zero_filled_sense_image() -> None:
    data = _random_slices((16, 14), coils=4, batch=3)
    peer = VarNetPeer(cascades=2, chans=2, pools=1)
    for cascade in peer.cascades:
        cascade.model = _Zero()
        with torch.no_grad():
            cascade.dc_weight.fill_(0.7)  # the soft DC term vanishes at the measured k-space whatever its weight
    got = peer.predict(data, chunk_size=2)
    expected = complex_to_channels(crop_center(data.zero_filled(), data.crop))
    assert got.shape == (len(data), 2, data.crop, data.crop)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_the_peer_with_its_regularisers_changes_the_image_and_refuses_a_weighted_mask() -> None:
    data = _random_slices((16, 16), coils=2, batch=2)
    torch.manual_seed(0)
    peer = VarNetPeer(cascades=1, chans=4, pools=1)
    got = peer.predict(data)
    zero_filled = complex_to_channels(crop_center(data.zero_filled(), data.crop))
    assert torch.isfinite(got).all() and not torch.allclose(got, zero_filled)
    with pytest.raises(ValueError, match="'mask'.*0 and 1"):
        peer(data.kspace, data.maps, data.mask * 0.5, data.crop)
    with pytest.raises(ValueError, match="'cascades'"):
        VarNetPeer(cascades=0)


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three volumes of one slice, 2 coils, 48 x 32 k-space, crop 16: validation 1 slice, training 2."""
    root: Path = tmp_path_factory.mktemp("peer")
    make_synthetic(root / "data", volumes=3, slices=1, coils=2, seed=0, shape=(48, 32), recon=(24, 24), snr=40.0)
    cfg = dataclasses.replace(CONFIGS["quick"], crop=16, val_volumes=1, holdout_volumes=1)
    return measured_split(root / "data", "poisson", cfg, 0, root / "cache")


def test_train_peer_trains_by_the_rule_on_the_held_out_training_volume(tiny_split: dict) -> None:
    rule = TrainingRule(lrs=(1e-3,), max_epochs=2, patience=1, rel_tol=1e-3)
    # the split without its validation part: train_peer never reads it
    net, record = train_peer({"train": tiny_split["train"]}, rule, adam_batch=1, seed=0, holdout_volumes=1,
                             cascades=1, chans=4, pools=1)
    assert 1 <= record["epochs"] <= 2 and isinstance(record["converged"], bool)
    assert record["lr"] == 1e-3 and record["architecture"]["cascades"] == 1
    held = [c["held_loss"] for c in record["curve"]]
    assert len(held) == record["epochs"] + 1 and all(math.isfinite(h) for h in held)
    # the kept checkpoint is the best held-out one: recomputed on the held-out volume's slices
    tr = tiny_split["train"]
    index = holdout_mask(tr["volumes"], 1)
    again = held_out_loss(lambda ids: net(tr["data"].kspace[ids], tr["data"].maps[ids], tr["data"].mask[ids],
                                          tr["data"].crop),
                          torch.arange(len(index))[index], tr["targets"][index])
    assert again == pytest.approx(min(held), rel=1e-5) and record["best_held_loss"] == pytest.approx(min(held))
    effort = adam_effort([record])
    assert effort["epochs"] == record["epochs"] and effort["converged"] == record["converged"]
    assert len(curve_of([record])) == len(held)
    va = tiny_split["val"]
    assert net.predict(va["data"]).shape == va["targets"].shape


def test_train_peer_refuses_a_rule_of_another_kind(tiny_split: dict) -> None:
    with pytest.raises(ValueError, match="'rule'"):
        train_peer(tiny_split, {"lrs": [1e-3]}, adam_batch=1, seed=0, holdout_volumes=1)
