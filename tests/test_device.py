"""One ``device`` option through every path, checked on the CPU (tiny sizes).

A second real device needs CUDA (tests/test_gpu.py); here the ``meta`` device stands in
for "another device": tensors there are refused with a message naming them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from convexrecon.cli import main
from convexrecon.data import FastMRIVolume, MaskFunc, SliceDataset
from convexrecon.mri.espirit import espirit_maps
from convexrecon.mri.sense import sense_images
from convexrecon.data.synthetic import synthesize_volume
from convexrecon.recon import reconstruct_slice
from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import BlockSettings, block_problem, train_layerwise
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.persist import load_network

from .conftest import CROP

BLOCKS = [BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-2, max_iter=60, beta_ratios=(1e-2, 1e-1))] * 2


def _data(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 2, 9, 8, generator=gen)
    return target + 0.3 * torch.randn(n, 2, 9, 8, generator=gen), target


def _layerwise(x, y, **kwargs):
    vx, vy = _data(2, seed=1)
    held = torch.tensor([False, False, True, True])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_layerwise(x, y, BLOCKS, val_inputs=vx, val_targets=vy, val_scales=torch.ones(2), seed=1,
                               holdout=held, chunk_size=2, **kwargs)


def test_layerwise_explicit_cpu_equals_default_and_resumes(tmp_path) -> None:
    x, y = _data()
    default = _layerwise(x, y)
    explicit = _layerwise(x, y, device="cpu", allow_tf32=False, checkpoint_dir=tmp_path)
    resumed = _layerwise(x, y, device=torch.device("cpu"), checkpoint_dir=tmp_path)  # every block from its checkpoint
    out = default.network.predict(x)
    assert torch.equal(out, explicit.network.predict(x)) and torch.equal(out, resumed.network.predict(x))
    assert all(p.device.type == "cpu" for p in resumed.network.parameters())
    assert explicit.network.config["device"] == {"type": "cpu", "allow_tf32": False}
    assert [r["beta_ratio"] for r in default.records] == [r["beta_ratio"] for r in resumed.records]


@pytest.mark.parametrize("where", ["targets", "val_inputs"])
def test_layerwise_refuses_tensors_on_two_devices(where) -> None:
    x, y = _data()
    tensors = {"inputs": x, "targets": y, "val_inputs": x[:2], "val_targets": y[:2]}
    tensors[where] = torch.empty(tensors[where].shape, device="meta")
    with pytest.raises(ValueError, match=f"must be on one device. Got 'inputs' on cpu, .*'{where}' on meta"):
        train_layerwise(tensors["inputs"], tensors["targets"], BLOCKS[:1], val_inputs=tensors["val_inputs"],
                        val_targets=tensors["val_targets"], val_scales=torch.ones(2))


@pytest.mark.parametrize("device, error, match", [
    ("nosuch", ValueError, "'device' parameter must be a torch device.*'nosuch'"),
    (3.5, ValueError, "'device' parameter must be a torch device"),
])
def test_trainers_refuse_unknown_devices(device, error, match) -> None:
    x, y = _data()
    with pytest.raises(error, match=match):
        train_layerwise(x, y, BLOCKS[:1], device=device)
    with pytest.raises(error, match=match):
        train_end_to_end(ReconNet.plain([3], 3), x, y, epochs=1, device=device)
    with pytest.raises(error, match=match):
        train_layerwise_adam(x, y, [3], 3, epochs=1, device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    x, y = _data()
    with pytest.raises(ValueError, match="'device' parameter must name a device of this machine.*CUDA is not"):
        train_layerwise(x, y, BLOCKS[:1], device="cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        espirit_maps(np.ones((2, 16, 16), np.complex64), 12, device="cuda")


def test_allow_tf32_must_be_a_bool() -> None:
    x, y = _data()
    with pytest.raises(TypeError, match="'allow_tf32' parameter must be a bool. Got int 1"):
        train_layerwise(x, y, BLOCKS[:1], allow_tf32=1)
    with pytest.raises(TypeError, match="'allow_tf32' parameter must be a bool"):
        train_end_to_end(ReconNet.plain([3], 3), x, y, epochs=1, allow_tf32="yes")


def test_baselines_explicit_cpu_equal_default_and_refuse_two_devices() -> None:
    x, y = _data()
    val = (x[:2], y[:2], torch.ones(2), ["v", "v"])
    nets = []
    for device in (None, "cpu"):
        net = ReconNet.plain([3, 3], 3, seed=1)
        train_end_to_end(net, x, y, epochs=2, batch_size=2, seed=2, validation=val, device=device)
        adam, _ = train_layerwise_adam(x, y, [3, 3], 3, epochs=2, batch_size=2, seed=2, validation=val,
                                       device=device, allow_tf32=False)
        nets.append((net.predict(x), adam.predict(x)))
    assert torch.equal(nets[0][0], nets[1][0]) and torch.equal(nets[0][1], nets[1][1])
    meta_val = (torch.empty(2, 2, 9, 8, device="meta"), y[:2], torch.ones(2), ["v", "v"])
    with pytest.raises(ValueError, match="must be on one device. Got 'inputs' on cpu, .*'val_inputs' on meta"):
        train_end_to_end(ReconNet.plain([3], 3), x, y, epochs=1, validation=meta_val)
    with pytest.raises(ValueError, match="must be on one device. Got 'inputs' on cpu, 'targets' on meta"):
        train_layerwise_adam(x, torch.empty(y.shape, device="meta"), [3], 3, epochs=1)


def test_block_problem_refuses_layers_on_another_device() -> None:
    x, y = _data()
    layer = HiddenLayer(torch.nn.Conv2d(2, 3, 3, padding=1, bias=False).to("meta"))
    with pytest.raises(ValueError, match="must be on one device. Got 'inputs' on cpu, 'targets' on cpu, 'layer 1' on meta"):
        block_problem([layer], x, y, None, None, 2)


def test_espirit_torch_matches_sigpy_and_sense_images_agree() -> None:
    volume = synthesize_volume((64, 45), slices=1, coils=6, seed=3, snr=30.0)
    func = MaskFunc("poisson", 4.0, calib=16)
    mask = func.for_slice((64, 45), "t.h5", 0)
    kspace = volume.kspace[0]
    masked = kspace * mask
    ref = espirit_maps(masked, 16, method="sigpy")
    new = espirit_maps(masked, 16, device="cpu")
    assert np.linalg.norm(new - ref) <= 1e-4 * np.linalg.norm(ref)
    a = sense_images(kspace, mask, 16, CROP, maps=ref)
    b = sense_images(kspace, mask, 16, CROP, device="cpu")
    for x, y in ((a.input, b.input), (a.target, b.target)):
        assert float((x - y).abs().norm() / y.abs().norm()) < 1e-3
    with pytest.raises(ValueError, match="'method' parameter must be one of"):
        espirit_maps(masked, 16, method="bart")
    with pytest.raises(ValueError, match="'device' parameter must be a CPU or CUDA device. Got 'meta'"):
        espirit_maps(masked, 16, device="meta")


def test_reconstruct_slice_and_load_network_on_a_device(synthetic_dir, tmp_path) -> None:
    data = SliceDataset(synthetic_dir, crop=CROP, progress=False, device="cpu")
    assert data.device == torch.device("cpu")
    net = ReconNet.plain([3], 3, seed=0, config={"data": data.settings()})
    net.save(tmp_path / "m")
    loaded = load_network(tmp_path / "m", map_location="cpu")
    path, s = data.index[0]
    kspace = FastMRIVolume(path).kspace(s)
    mask = data.mask_func.for_slice(kspace.shape[-2:], path.name, s)
    image = reconstruct_slice(loaded, kspace, mask, device="cpu")
    assert image.shape == (CROP, CROP) and image.device.type == "cpu"
    assert torch.equal(image, reconstruct_slice(loaded, kspace, mask))
    with pytest.raises(ValueError, match="'device' parameter must be the device of 'net'. Got 'cpu' with 'net' on 'meta'"):
        reconstruct_slice(loaded.to("meta"), kspace, mask, device="cpu")


@pytest.mark.parametrize("command", ["prepare", "train", "reconstruct", "evaluate"])
@pytest.mark.parametrize("device", ["nosuch", "cuda:7", "meta"])
def test_cli_device_is_validated(synthetic_dir, tmp_path, capsys, command, device) -> None:
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    argv = {"prepare": ["--data", str(synthetic_dir)],
            "train": ["--data", str(synthetic_dir), "--mask", "poisson", "--out", str(tmp_path / "m")],
            "reconstruct": ["--model", str(tmp_path), "--data", str(synthetic_dir), "--out", str(tmp_path / "r")],
            "evaluate": ["--recon", str(tmp_path), "--data", str(synthetic_dir)]}[command]
    with pytest.raises(SystemExit) as info:
        main([command, *argv, "--device", device])
    assert info.value.code == 2
    assert "argument --device:" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["prepare", "train", "reconstruct", "evaluate"])
def test_cli_help_states_the_device_default(capsys, command) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default {'cuda' if torch.cuda.is_available() else 'cpu'}; cuda when available)" in out
