"""Layer-wise convex training, the Adam baselines, saving and memory counts on volumes (N, 2, D, H, W)."""

from __future__ import annotations

import warnings

import torch

from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import BlockSettings, train_layerwise
from convexrecon.analysis.memory import block_memory, end_to_end_memory
from convexrecon.stack.network import ReconNet
from convexrecon.stack.persist import load_network

BLOCKS = (BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-3, max_iter=100),
          BlockSettings(kernel_size=3, num_arrangements=2, activation="relu", tol=1e-3, max_iter=100))


def _volumes(n: int = 3, shape=(5, 8, 7), seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 2, *shape, generator=gen)
    return target + 0.3 * torch.randn(n, 2, *shape, generator=gen), target


def test_layerwise_trainer_on_volumes_resumes_and_reloads(tmp_path):
    x, y = _volumes()
    vx, vy = _volumes(2, seed=1)
    kw = dict(val_inputs=vx, val_targets=vy, val_scales=torch.ones(2), val_volumes=["a", "b"], patch_size=4,
              patches_per_slice=2, seed=3, chunk_size=2, checkpoint_dir=tmp_path / "ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        partial = train_layerwise(x, y, BLOCKS, stop_after=1, **kw)
        result = train_layerwise(x, y, BLOCKS, **kw)
    assert partial.network.num_blocks == 1 and result.network.num_blocks == 2
    net = result.network
    assert all(isinstance(layer.first, torch.nn.Conv3d) for layer in net.layers)
    assert net.layers[0].first.kernel_size == (3, 3, 3)
    assert result.records[0]["num_patches"] == 6 and result.records[1]["activation"] == "relu"
    assert result.records[0]["num_patches"] == 6 and result.records[0]["num_pixels"] == 6 * 4**3
    with torch.no_grad():
        out = net(vx)
    assert out.shape == vx.shape
    net.save(tmp_path / "model")
    again = load_network(tmp_path / "model")
    with torch.no_grad():
        torch.testing.assert_close(again(vx), out, rtol=0, atol=0)


def test_adam_baselines_on_volumes():
    x, y = _volumes()
    net = ReconNet.plain([4, 4], 3, spatial_dims=3)
    history = train_end_to_end(net, x, y, epochs=2, batch_size=2)
    assert len(history) == 2 and isinstance(net.second, torch.nn.Conv3d)
    adam_net, records = train_layerwise_adam(x, y, [3, 3], 3, epochs=1, batch_size=2)
    assert len(records) == 2 and adam_net(x).shape == x.shape


def test_volume_memory_counts_grow_with_the_cube():
    small, large = (end_to_end_memory([8] * 4, 3, size, 1, spatial_dims=3) for size in (8, 16))
    assert large.saved == 8 * small.saved  # activations scale with the number of voxels
    block = block_memory(8, 8, 3, 16, 1, spatial_dims=3)
    assert block.saved == large.saved // 2 and block.total < large.total  # 2 of the 4 hidden activations
    # a 3 x 3 x 3 conv from 8 to 8 channels: 8 * 8 * 27 float32 weights, plus the 1 x 1 x 1 head
    assert block.params == 4 * (8 * 8 * 27 + 8 * 2)
