"""Slices of several k-space grids (fastMRI files come in several widths) train one unrolled network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from convexrecon.cli import main
from convexrecon.data.synthetic import birdcage_maps, make_synthetic
from convexrecon.mri import MeasuredData, MeasuredGroups, complex_to_channels, crop_center, sense_adjoint, sense_forward
from convexrecon.stack.settings import BlockSettings
from convexrecon.stack.stage_inputs import StageInputs
from convexrecon.stack.unrolled import ChainSet, EstimateChain, initial_estimates
from convexrecon.stack.unrolled_baselines import train_unrolled_end_to_end
from convexrecon.stack.unrolled_train import train_unrolled

CROP = 16
SETTINGS = [BlockSettings(kernel_size=3, num_arrangements=2, beta_ratios=(1e-3, 1e-2), tol=1e-4)]
# the recommended network's kind of inputs: a CS start, CS images, SENSE-CG, residual inputs, a constant channel,
# CS weights and DC weights relative to each slice's noise level
INPUTS = StageInputs.from_options(bias=True, cs_iterations=20, cs_lambda=0.5, cs_inputs=("0.15", "1.5"),
                                  sense_input=True, cs_relative="noise", residual=True, cs_shifts=2, dc_noise=0.01)


def _slices(n: int, shape: tuple[int, int], seed: int):
    """Inputs, targets and MeasuredData of ``n`` line-undersampled 4-coil slices of smooth objects on ``shape``."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    yy, xx = yy - shape[0] // 2, xx - shape[1] // 2
    images = np.zeros((n, *shape), np.complex64)
    for i in range(n):
        for _ in range(4):
            cy, cx = g.uniform(-CROP / 4, CROP / 4, 2)
            r = g.uniform(2, CROP / 4)
            images[i] += g.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2)) \
                * np.exp(1j * g.uniform(0, np.pi))
    x = torch.from_numpy(images)
    maps = torch.from_numpy(np.repeat(birdcage_maps(4, shape)[None], n, axis=0))
    t = torch.Generator().manual_seed(seed)
    cols = torch.rand(n, shape[1], generator=t) < 0.35
    cols[:, shape[1] // 2 - 2:shape[1] // 2 + 2] = True
    mask = cols[:, None, :].expand(n, *shape).float()
    noise = 0.01 * torch.complex(torch.randn(n, 4, *shape, generator=t), torch.randn(n, 4, *shape, generator=t))
    kspace = sense_forward(x, maps, mask) + noise * mask[:, None]
    zf = sense_adjoint(kspace, maps, mask)
    scale = crop_center(zf, CROP).abs().flatten(1).max(1).values
    kspace = kspace / scale[:, None, None, None]
    full = sense_adjoint(sense_forward(x, maps, torch.ones_like(mask)), maps, torch.ones_like(mask))
    targets = complex_to_channels(crop_center(full, CROP) / scale[:, None, None]).float()
    inputs = complex_to_channels(crop_center(zf, CROP) / scale[:, None, None]).float()
    return inputs, targets, MeasuredData(kspace, maps, mask, CROP)


def _two_grids(order: list[int]):
    """Four 32 x 32 and four 32 x 26 slices, the set in ``order`` (positions of the 8 slices: wide first)."""
    wide, narrow = _slices(4, (32, 32), 0), _slices(4, (32, 26), 1)
    inputs = torch.cat([wide[0], narrow[0]])[order]
    targets = torch.cat([wide[1], narrow[1]])[order]
    where = torch.empty(8, dtype=torch.int64)
    where[torch.tensor(order)] = torch.arange(8)  # where each slice sits in the set
    data = MeasuredGroups((wide[2], narrow[2]), (where[:4], where[4:]), CROP)
    return inputs, targets, data


INTERLEAVED = [0, 4, 1, 5, 2, 6, 3, 7]
SORTED = list(range(8))


@pytest.fixture(scope="module")
def runs():
    out = {}
    for name, order in (("interleaved", INTERLEAVED), ("sorted", SORTED)):
        inputs, targets, data = _two_grids(order)
        # held out: the last slice of each grid, wherever it sits in the set
        held = torch.zeros(8, dtype=torch.bool)
        held[data.positions[0][-1]] = held[data.positions[1][-1]] = True
        result = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                                solve_options={"gated_method": "interior_point"}, stage_inputs=INPUTS)
        out[name] = (inputs, targets, data, result)
    return out


def test_a_set_of_two_grids_trains_a_certified_stage_that_lowers_the_error(runs) -> None:
    inputs, targets, data, result = runs["interleaved"]
    record = result.records[0]
    assert record["status"] == "optimal" and record["relative_gap"] <= 1e-4
    assert record["selection"]["holdout_slices"] == 2
    out = result.network.predict(data)
    assert out.shape == (8, 2, CROP, CROP)
    assert float((out - targets).pow(2).sum()) < 0.8 * float((inputs - targets).pow(2).sum())


def test_the_set_order_does_not_change_the_network(runs) -> None:
    """The same slices in another order (the groups' positions permuted with them): the same choice, the same block
    and the same output per slice, so every slice met its own target and its own grid's measurements."""
    a, b = runs["interleaved"], runs["sorted"]
    assert a[3].records[0]["lam"] == b[3].records[0]["lam"]
    assert a[3].records[0]["beta_ratio"] == b[3].records[0]["beta_ratio"]
    out_a = a[3].network.predict(a[2])
    out_b = b[3].network.predict(b[2])
    back = torch.empty_like(out_a)
    back[torch.tensor(INTERLEAVED)] = out_a  # slice order of the sorted set
    assert torch.allclose(back, out_b, atol=1e-4 * float(out_b.abs().max()))


def test_grouped_outputs_are_those_of_each_slice_alone(runs) -> None:
    """predict on the two-grid set equals reconstruct_measured of each slice on its own grid, at its position."""
    inputs, targets, data, result = runs["interleaved"]
    net = result.network
    out = net.predict(data)
    for group, where in zip(data.groups, data.positions):
        for local, position in enumerate(where.tolist()):
            alone = net.reconstruct_measured(group.kspace[local].numpy(), group.maps[local].numpy(),
                                             group.mask[local].numpy())
            assert torch.allclose(complex_to_channels(alone[None])[0], out[position], atol=1e-5)
    # and precomputed start images, one tensor per grid, give the same outputs
    starts = initial_estimates(net, data)
    assert isinstance(starts, tuple) and len(starts) == 2
    assert torch.allclose(net.predict(data, initial=starts), out, atol=1e-6)
    with pytest.raises(ValueError, match="the start images of each of the 2 k-space grids"):
        net.predict(data, initial=starts[0])


def test_chain_set_features_are_each_grids_chain_in_set_order(runs) -> None:
    inputs, targets, data, result = runs["interleaved"]
    net = result.network
    chains = ChainSet(net, data, chunk_size=3)
    features = chains.features()
    for group, where in zip(data.groups, data.positions):
        alone = EstimateChain(net, group, chunk_size=3)
        assert torch.equal(features[where], alone.features())
        index = torch.tensor([int(where[2]), int(where[0])])
        expected = crop_center(alone.advanced(net.stages[0], torch.tensor([2, 0]), lam=0.3), CROP)
        assert torch.allclose(chains.cropped_advanced(net.stages[0], index, lam=0.3), expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least one slice"):
        chains.cropped(torch.tensor([], dtype=torch.int64))


def test_the_adam_baselines_refuse_several_grids_by_name() -> None:
    inputs, targets, data = _two_grids(SORTED)
    from convexrecon.stack.unrolled import unrolled_plain
    net = unrolled_plain(1, 4, 3, [1.0], CROP)
    with pytest.raises(ValueError, match=r"train_unrolled_end_to_end: the 'data' parameter must hold slices of one "
                                         r"k-space grid \(a MeasuredData\). Got 2 grids \(32x32, 32x26\) instead"):
        train_unrolled_end_to_end(net, targets, data)


def test_train_recommended_on_files_of_two_widths(tmp_path: Path, capsys) -> None:
    """The command-line user's case: a directory of files of two k-space widths (and coil counts) trains the
    recommended network, certified, resumes, and reconstruct serves both widths."""
    make_synthetic(tmp_path / "d", volumes=3, slices=1, coils=4, seed=0, shape=(64, 46), snr=30.0)
    make_synthetic(tmp_path / "e", volumes=1, slices=1, coils=6, seed=1, shape=(64, 40), snr=30.0)
    (tmp_path / "e" / "file_synth_1_0000.h5").rename(tmp_path / "d" / "file_synth_0_0003.h5")
    args = ["train", "--data", str(tmp_path / "d"), "--mask", "poisson", "--out", str(tmp_path / "m"),
            "--recommended", "--crop", "24", "--cache-dir", str(tmp_path / "c"), "--no-classical"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0
    assert "Every block the model keeps is certified" in out
    assert "k-space grids: 64x40 (1 slice), 64x46 (3 slices); each grid keeps its own data-consistency" in out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["train_slices"] == 3  # both widths (and coil counts) among them
    # the same command again resumes from its checkpoints (keyed by every grid's data) to the same model
    assert main(args) == 0
    again = capsys.readouterr().out
    assert "resuming after stage 2" in again
    assert json.loads(again.strip().splitlines()[-1])["val_psnr"] == summary["val_psnr"]
    for name in ("file_synth_0_0002.h5", "file_synth_0_0003.h5"):  # one of each width
        assert main(["reconstruct", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "d" / name),
                     "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]) == 0
    images = sorted((tmp_path / "r").glob("*.h5"))
    assert len(images) == 2
    import h5py
    for path in images:
        with h5py.File(path, "r") as f:
            recon = f["reconstruction"][()]
        assert recon.shape[-2:] == (32, 32) and np.isfinite(recon).all() and float(np.abs(recon).max()) > 0


def test_malformed_groups_are_refused_by_name() -> None:
    inputs, targets, data = _two_grids(SORTED)
    twice = MeasuredGroups(data.groups, (data.positions[0], data.positions[0]), CROP)
    with pytest.raises(ValueError, match=r"The 'data' parameter must place every slice once: groups of \[4, 4\] "
                                         r"slices at crop 16 and positions forming a permutation of 0..7"):
        train_unrolled(inputs, targets, twice, SETTINGS, lambdas=(1.0,))
    short = MeasuredGroups(data.groups, (data.positions[0][:3], data.positions[1]), CROP)
    with pytest.raises(ValueError, match="must hold the 8 slices of the inputs|must place every slice once"):
        train_unrolled(inputs, targets, short, SETTINGS, lambdas=(1.0,))
