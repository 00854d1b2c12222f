"""The unrolled network's start images and full-grid maps are computed once: InputCache, reconstruct_slice, CLI."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest
import torch

import convexrecon as cr
from convexrecon.cli import main
from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.inputcache import InputCache
from convexrecon.data.synthetic import make_synthetic
from convexrecon.errors import DataWarning
from convexrecon.recon import mask_func_of
from convexrecon.stack.unrolled import unrolled_plain

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"mask": "poisson", "acceleration": 4.0, "crop": 32, "calib": 16, "seed": 0}


def tiny_unrolled(cs_lambda: float = 0.01, cs_shifts: int = 1, seed: int = 0):
    """Two stages with a CS start and one CS input, their 1x1 layers random so that the blocks act."""
    net = unrolled_plain(2, 4, 3, [0.5, 0.5], 32, cg_iterations=3, seed=seed, config={"data": DATA},
                         cs_iterations=6, cs_lambda=cs_lambda, cs_inputs=(0.003,), cs_shifts=cs_shifts)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in net.stages:
            stage.block.second.weight.copy_(0.01 * torch.randn(stage.block.second.weight.shape, generator=generator))
    return net.eval()


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    make_synthetic(root, volumes=1, slices=2, coils=4, seed=3, shape=(64, 45), recon=(32, 32), snr=40.0)
    return sorted(root.glob("*.h5"))[0]


def slice_of(path, index=0):
    volume = FastMRIVolume(path)
    kspace = volume.kspace(index)
    mask = mask_func_of({"data": DATA}).for_slice(kspace.shape[-2:], path.name, index)
    return kspace, mask


def api_run(net, path, cache, index=0):
    kspace, mask = slice_of(path, index)
    limit = mask_func_of(net.config).calibration_limit(mask.shape)
    maps = cache.maps(path, index, kspace * mask, mask, limit)
    return cr.reconstruct_slice(net, kspace, mask, crop=32, maps=maps, cache=cache)


def test_api_second_run_and_a_copy_read_the_cache_and_match_bit_for_bit(data_file, tmp_path):
    net = tiny_unrolled()
    kspace, mask = slice_of(data_file)
    plain = cr.reconstruct_slice(net, kspace, mask, crop=32)  # no cache: the reference
    first = InputCache(tmp_path / "cache")
    image = api_run(net, data_file, first)
    assert (first.computed, first.reused, first.map_cache.computed) == (1, 0, 1)
    assert torch.equal(image, plain)
    copy = tmp_path / "elsewhere" / data_file.name
    copy.parent.mkdir()
    shutil.copy(data_file, copy)
    for path in (data_file, copy):  # content keyed: the copy in another directory finds the same entries
        again = InputCache(tmp_path / "cache")
        assert torch.equal(api_run(net, path, again), plain)
        assert (again.computed, again.reused, again.map_cache.computed, again.map_cache.reused) == (0, 1, 0, 1)
    other = tiny_unrolled(seed=1)  # other blocks, same stage-input settings: the same start images
    shared = InputCache(tmp_path / "cache")
    assert torch.equal(api_run(other, data_file, shared), cr.reconstruct_slice(other, kspace, mask, crop=32))
    assert (shared.computed, shared.reused) == (0, 1)


@pytest.mark.parametrize("changed", [{"cs_lambda": 0.02}, {"cs_shifts": 2}])
def test_other_stage_input_settings_miss(data_file, tmp_path, changed):
    api_run(tiny_unrolled(), data_file, InputCache(tmp_path / "cache"))
    net = tiny_unrolled(**changed)
    cache = InputCache(tmp_path / "cache")
    image = api_run(net, data_file, cache)
    assert (cache.computed, cache.reused) == (1, 0)
    kspace, mask = slice_of(data_file)
    assert torch.equal(image, cr.reconstruct_slice(net, kspace, mask, crop=32))


def test_another_crop_or_slice_misses(data_file, tmp_path):
    net = tiny_unrolled()
    api_run(net, data_file, InputCache(tmp_path / "cache"))
    cache = InputCache(tmp_path / "cache")
    api_run(net, data_file, cache, index=1)
    kspace, mask = slice_of(data_file)
    cr.reconstruct_slice(net, kspace, mask, crop=30, maps=cache.maps(data_file, 0, kspace * mask, mask, 16),
                         cache=cache)
    assert (cache.computed, cache.reused) == (2, 0)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "shape"])
def test_a_damaged_entry_is_recomputed_and_overwritten(data_file, tmp_path, damage):
    net = tiny_unrolled()
    reference = api_run(net, data_file, InputCache(tmp_path / "cache"))
    (entry,) = (tmp_path / "cache" / "unrolled-inputs").rglob("*.npy")
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(b"not an array")
    else:
        np.save(entry, np.zeros((1, 4, 4), dtype=np.complex64))
    cache = InputCache(tmp_path / "cache")
    with pytest.warns(DataWarning, match="recomputed"):
        image = api_run(net, data_file, cache)
    assert torch.equal(image, reference) and (cache.computed, cache.reused) == (1, 0)
    again = InputCache(tmp_path / "cache")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert torch.equal(api_run(net, data_file, again), reference)
    assert (again.computed, again.reused) == (0, 1)


def test_full_grid_maps_are_required_for_an_unrolled_network(data_file, tmp_path):
    kspace, mask = slice_of(data_file)
    with pytest.raises(ValueError, match="'cache' parameter must be an InputCache"):
        cr.reconstruct_slice(tiny_unrolled(), kspace, mask, crop=32, cache=str(tmp_path))
    with pytest.raises(ValueError, match="'maps' parameter of an unrolled network"):
        cr.reconstruct_slice(tiny_unrolled(), kspace, mask, crop=32, maps=np.ones((4, 32, 32), np.complex64))


def test_cli_second_run_reads_maps_and_start_images(data_file, tmp_path, capsys):
    model = tmp_path / "model"
    tiny_unrolled().save(model)
    common = ["--model", str(model), "--data", str(data_file), "--device", "cpu", "--cache-dir", str(tmp_path / "c")]
    outputs = []
    for run, expected in (("one", "2 estimated, 0 reused"), ("two", "0 estimated, 2 reused")):
        assert main(["reconstruct", *common, "--out", str(tmp_path / run)]) == 0
        last = capsys.readouterr().out.strip().splitlines()[-1]
        assert f"ESPIRiT maps: {expected}" in last
        assert f"start images of the unrolled network: {expected.replace('estimated', 'computed')}" in last
        with h5py.File(tmp_path / run / data_file.name) as handle:
            outputs.append(np.asarray(handle["reconstruction"]))
    assert np.array_equal(outputs[0], outputs[1]) and np.isfinite(outputs[0]).all()


def test_chunked_start_images_equal_initial_estimates_and_are_read_back(data_file, tmp_path):
    from convexrecon.data.inputcache import cached_initial_estimates
    from convexrecon.data.problems import measured_data
    from convexrecon.data.dataset import SliceDataset
    from convexrecon.stack.unrolled import initial_estimates

    dataset = SliceDataset(data_file.parent, mask="poisson", crop=32, cache_dir=tmp_path / "c")
    data = measured_data(dataset, [(data_file, 0), (data_file, 1)])[0]
    net = tiny_unrolled()
    reference = initial_estimates(net, data, 1)
    first, second = InputCache(tmp_path / "c"), InputCache(tmp_path / "c")
    assert torch.equal(cached_initial_estimates(net, data, 1, first), reference)
    assert torch.equal(cached_initial_estimates(net, data, 1, second), reference)
    assert (first.computed, first.reused, second.computed, second.reused) == (2, 0, 0, 2)
    other = InputCache(tmp_path / "c")  # other chunks: other entries (their rounding may differ)
    assert torch.equal(cached_initial_estimates(net, data, 2, other), initial_estimates(net, data, 2))
    assert (other.computed, other.reused) == (1, 0)


def test_train_reuses_the_start_images_and_gives_the_same_model(tmp_path, capsys, monkeypatch):
    data = tmp_path / "data"
    make_synthetic(data, volumes=3, slices=1, coils=4, seed=0, shape=(64, 45), recon=(32, 32), snr=40.0)
    common = ["train", "--data", str(data), "--mask", "poisson", "--architecture", "unrolled", "--blocks", "1",
              "--crop", "32", "--kernel-size", "3", "--arrangements", "2", "--patch-size", "0", "--max-iter", "100",
              "--lambdas", "0.1", "1", "--cs-start", "5", "--cs-start-lambda", "0.01", "--cs-inputs", "0.003",
              "--no-classical", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    summaries, stamps = [], []
    for run in ("one", "two"):
        assert main([*common, "--out", str(tmp_path / run)]) == 0
        summaries.append(capsys.readouterr().out.strip().splitlines()[-1])
        entries = sorted((tmp_path / "cache" / "unrolled-inputs").rglob("*.npy"))
        stamps.append({path: path.stat().st_mtime_ns for path in entries})
    assert stamps[0] and stamps[0] == stamps[1]  # the second run read every entry and wrote none
    import convexrecon.cli.train as train_cli
    import convexrecon.cli.trainers as trainers

    monkeypatch.setattr(trainers, "_starts", lambda *args: None)  # the trainer computes its own start images
    monkeypatch.setattr(train_cli, "cached_initial_estimates", lambda *args: None)
    assert main([*common, "--out", str(tmp_path / "three")]) == 0
    summaries.append(capsys.readouterr().out.strip().splitlines()[-1])
    assert summaries[0].replace("one", "two") == summaries[1] == summaries[2].replace("three", "two")
    states = [torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("one", "two", "three")]
    assert states[0].keys() == states[1].keys() == states[2].keys() and states[0]
    assert all(torch.equal(states[0][k], other[k]) for other in states[1:] for k in states[0])
