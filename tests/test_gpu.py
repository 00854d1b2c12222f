"""Every path on CUDA tensors at tiny sizes; skipped where CUDA is absent.

Run on a GPU machine with ``python -m pytest -q -m gpu tests/test_gpu.py`` (benchmarks/gpu_session.sh
does). Each test compares with the CPU where the two must agree (float32, TF32 off).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch

import convexrecon as cr
from convexrecon.cli import main
from convexrecon.data import FastMRIVolume, MaskFunc, SliceDataset
from convexrecon.mri.espirit import espirit_maps
from convexrecon.mri.sense import sense_images
from convexrecon.data.synthetic import synthesize_volume
from convexrecon.recon import reconstruct_slice
from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import BlockSettings, train_layerwise
from convexrecon.stack.network import ReconNet
from convexrecon.stack.persist import load_network

from .conftest import CROP

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _data(n: int = 4, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 2, 9, 8, generator=gen)
    return (target + 0.3 * torch.randn(n, 2, 9, 8, generator=gen)).to(device), target.to(device)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_fit_layer_on_cuda(activation) -> None:
    x, y = _data(device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = cr.fit_layer(x, y, kernel_size=3, num_arrangements=4, activation=activation, tol=1e-3,
                             max_iter=300, device="cuda")
        cpu = cr.fit_layer(x.cpu(), y.cpu(), kernel_size=3, num_arrangements=4, activation=activation, tol=1e-3,
                           max_iter=300)
    assert block.first.weight.device.type == "cuda" and block(x).device.type == "cuda"
    assert block.report.primal == pytest.approx(cpu.report.primal, rel=1e-3)


def test_train_layerwise_on_cuda_with_beta_selection_and_resume(tmp_path) -> None:
    x, y = _data()
    vx, vy = _data(2, seed=1)
    blocks = [BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-3, max_iter=200, beta_ratios=(1e-2, 1e-1))] * 2
    held = torch.tensor([False, False, True, True])
    kwargs = dict(val_inputs=vx, val_targets=vy, val_scales=torch.ones(2), seed=1, holdout=held, chunk_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gpu = train_layerwise(x, y, blocks, device="cuda", checkpoint_dir=tmp_path, **kwargs)
        resumed = train_layerwise(x.cuda(), y.cuda(), blocks, checkpoint_dir=tmp_path,
                                  **{**kwargs, "val_inputs": vx.cuda(), "val_targets": vy.cuda()})
        cpu = train_layerwise(x, y, blocks, **kwargs)
    assert all(p.device.type == "cuda" for p in resumed.network.parameters())
    assert [r["beta_ratio"] for r in gpu.records] == [r["beta_ratio"] for r in cpu.records]
    out = gpu.network.predict(x.cuda()).cpu()
    assert torch.allclose(out, resumed.network.predict(x.cuda()).cpu())
    assert torch.allclose(out, cpu.network.predict(x), atol=1e-3)
    with pytest.raises(ValueError, match="must be on one device. Got 'inputs' on cuda:0, 'targets' on cpu"):
        train_layerwise(x.cuda(), y, blocks[:1])


def test_baselines_on_cuda() -> None:
    x, y = _data()
    val = (x[:2], y[:2], torch.ones(2), ["v", "v"])
    net = ReconNet.plain([3, 3], 3, seed=1)
    history = train_end_to_end(net, x, y, epochs=3, batch_size=2, lr=1e-2, validation=val, device="cuda",
                               allow_tf32=True)
    assert next(net.parameters()).device.type == "cuda" and "psnr" in history[-1]
    adam, records = train_layerwise_adam(x.cuda(), y.cuda(), [3, 3], 3, epochs=2, batch_size=2,
                                         validation=(x[:2].cuda(), y[:2].cuda(), torch.ones(2), ["v", "v"]))
    assert next(adam.parameters()).device.type == "cuda" and len(records) == 2
    cpu_net = ReconNet.plain([3, 3], 3, seed=1)
    train_end_to_end(cpu_net, x, y, epochs=3, batch_size=2, lr=1e-2)
    gpu_net = ReconNet.plain([3, 3], 3, seed=1)
    train_end_to_end(gpu_net, x, y, epochs=3, batch_size=2, lr=1e-2, device="cuda")
    assert torch.allclose(gpu_net.predict(x.cuda()).cpu(), cpu_net.predict(x), atol=1e-4)


def test_unrolled_trainers_on_cuda() -> None:
    from convexrecon.stack import (train_unrolled, train_unrolled_end_to_end, train_unrolled_layerwise_adam,
                                   unrolled_plain)

    from .test_unrolled import CROP as UCROP
    from .test_unrolled import toy_data

    inputs, targets, data, _ = toy_data(4, seed=0)
    settings = [BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-4)] * 2
    cpu = train_unrolled(inputs, targets, data, settings, lambdas=(0.5,), cg_iterations=4)
    gpu = train_unrolled(inputs, targets, data, settings, lambdas=(0.5,), cg_iterations=4, device="cuda")
    assert next(gpu.network.parameters()).device.type == "cuda"
    assert all(r["status"] == "optimal" for r in gpu.records)
    assert torch.allclose(gpu.network.predict(data.to("cuda")).cpu(), cpu.network.predict(data), atol=1e-3)
    e2e = unrolled_plain(2, 4, 3, [0.5, 0.5], UCROP, cg_iterations=3, seed=0)
    history = train_unrolled_end_to_end(e2e, targets, data, epochs=2, batch_size=2, lr=1e-3, device="cuda",
                                        allow_tf32=True)
    assert next(e2e.parameters()).device.type == "cuda" and len(history) == 2
    net, records = train_unrolled_layerwise_adam(targets.cuda(), data.to("cuda"), 4, 3, [0.5, 0.5], epochs=1,
                                                 batch_size=2, cg_iterations=3)
    assert next(net.parameters()).device.type == "cuda" and len(records) == 2


def test_preprocessing_on_cuda_matches_cpu(synthetic_dir) -> None:
    volume = synthesize_volume((64, 45), slices=1, coils=6, seed=3, snr=30.0)
    func = MaskFunc("poisson", 4.0, calib=16)
    mask = func.for_slice((64, 45), "t.h5", 0)
    kspace = volume.kspace[0]
    cpu = espirit_maps(kspace * mask, 16)
    gpu = espirit_maps(kspace * mask, 16, device="cuda")
    assert np.linalg.norm(gpu - cpu) <= 1e-4 * np.linalg.norm(cpu)
    if importlib.util.find_spec("cupy") is not None:
        sig = espirit_maps(kspace * mask, 16, device="cuda", method="sigpy")
        assert np.linalg.norm(sig - cpu) <= 1e-4 * np.linalg.norm(cpu)
    a, b = sense_images(kspace, mask, 16, CROP), sense_images(kspace, mask, 16, CROP, device="cuda")
    assert b.input.device.type == "cpu"
    assert float((a.input - b.input).abs().norm() / a.input.abs().norm()) < 1e-3
    data = SliceDataset(synthetic_dir, crop=CROP, progress=False, device="cuda")
    host = SliceDataset(synthetic_dir, crop=CROP, progress=False)
    assert float((data[0].input - host[0].input).norm() / host[0].input.norm()) < 1e-3


def test_reconstruct_slice_on_cuda(synthetic_dir, tmp_path) -> None:
    data = SliceDataset(synthetic_dir, crop=CROP, progress=False)
    ReconNet.plain([3], 3, seed=0, config={"data": data.settings()}).save(tmp_path / "m")
    net = load_network(tmp_path / "m", map_location="cuda")
    assert next(net.parameters()).device.type == "cuda"
    path, s = data.index[0]
    kspace = FastMRIVolume(path).kspace(s)
    mask = data.mask_func.for_slice(kspace.shape[-2:], path.name, s)
    image = reconstruct_slice(net, kspace, mask)
    cpu = reconstruct_slice(load_network(tmp_path / "m"), kspace, mask)
    assert image.device.type == "cpu" and float((image - cpu).abs().norm() / cpu.abs().norm()) < 1e-3


def test_cli_with_device_cuda(synthetic_dir, tmp_path, capsys) -> None:
    tiny = ["--mask", "poisson", "--crop", str(CROP), "--blocks", "2", "--kernel-size", "3", "--arrangements", "2",
            "--max-iter", "30", "--tol", "1e-2", "--patch-size", "8", "--patches-per-slice", "2"]
    assert main(["prepare", "--data", str(synthetic_dir), "--crop", str(CROP), "--no-classical",
                 "--cache-dir", str(tmp_path / "cache"), "--device", "cuda"]) == 0
    for method in ("layerwise_convex", "end_to_end", "layerwise_adam"):
        model = tmp_path / method
        assert main(["train", "--data", str(synthetic_dir), "--out", str(model), "--method", method, "--epochs", "1",
                     *tiny, "--device", "cuda"]) == 0
    rec = tmp_path / "rec"
    assert main(["reconstruct", "--model", str(tmp_path / "layerwise_convex"), "--data", str(synthetic_dir),
                 "--out", str(rec), "--device", "cuda"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--recon", str(rec), "--data", str(synthetic_dir), "--device", "cuda"]) == 0
    assert "PSNR" in capsys.readouterr().out
