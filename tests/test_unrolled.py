"""Data consistency (SENSE adjoint, CG, closed form, λ limits) and the convex unrolled network."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from convexrecon.mri.consistency import MeasuredData, crop_center, data_consistency, embed_crop, exact_dc_applies
from convexrecon.mri.sense import sense_adjoint, sense_forward, sense_normal


def random_problem(batch=2, coils=3, height=6, width=5, seed=0, rate=0.5, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    c = lambda *shape: torch.complex(torch.randn(*shape, generator=g, dtype=torch.float64),  # noqa: E731
                                     torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype)
    maps = c(batch, coils, height, width)
    mask = (torch.rand(batch, height, width, generator=g, dtype=torch.float64) < rate).to(torch.float64)
    return c(batch, height, width), c(batch, coils, height, width), maps, mask


def dense_normal(maps, mask):
    """A^H A of one slice as a dense matrix, built column by column from the operator."""
    h, w = mask.shape
    n = h * w
    cols = []
    for j in range(n):
        e = torch.zeros(n, dtype=maps.dtype)
        e[j] = 1
        cols.append(sense_normal(e.reshape(1, h, w), maps[None], mask[None]).reshape(n))
    return torch.stack(cols, dim=1)


def test_sense_adjoint_float64():
    x, y, maps, mask = random_problem()
    lhs = (sense_forward(x, maps, mask).conj() * y).sum()
    rhs = (x.conj() * sense_adjoint(y, maps, mask)).sum()
    assert abs(lhs - rhs) <= 1e-12 * abs(lhs)


def test_cg_decreases_residual_and_matches_dense_solve():
    z, k, maps, mask = random_problem(batch=2, coils=2, height=5, width=4, seed=1)
    lam = torch.tensor([0.3, 2.0], dtype=torch.float64)
    previous = None
    for it in (1, 3, 8):
        x = data_consistency(z, k, maps, mask, lam, iterations=it, method="cg")
        rhs = sense_adjoint(k, maps, mask) + lam[:, None, None] * z
        res = (sense_normal(x, maps, mask) + lam[:, None, None] * x - rhs).abs().pow(2).sum()
        if previous is not None:
            assert res < previous
        previous = res
    x = data_consistency(z, k, maps, mask, lam, iterations=60, method="cg")
    for b in range(2):
        a = dense_normal(maps[b], mask[b]) + lam[b] * torch.eye(20, dtype=torch.complex128)
        rhs = (sense_adjoint(k[b:b + 1], maps[b:b + 1], mask[b:b + 1]) + lam[b] * z[b:b + 1]).reshape(20)
        dense = torch.linalg.solve(a, rhs).reshape(5, 4)
        assert torch.allclose(x[b], dense, atol=1e-9, rtol=1e-9)
    # the objective: the DC output is no worse than z itself
    for b in range(2):
        f = lambda v: float((sense_forward(v[None], maps[b:b+1], mask[b:b+1]) - k[b:b+1] * mask[b]).abs().pow(2).sum()  # noqa: E731
                            + lam[b] * (v - z[b]).abs().pow(2).sum())
        assert f(x[b]) <= f(z[b])


def test_exact_projection_single_coil():
    z, k, _, mask = random_problem(batch=2, coils=1, height=6, width=6, seed=2)
    phase = torch.exp(1j * torch.rand(2, 1, 6, 6, dtype=torch.float64) * 6).to(torch.complex128)
    maps = 0.7 * phase
    assert exact_dc_applies(maps)
    x_exact = data_consistency(z, k, maps, mask, 0.5, method="exact")
    x_cg = data_consistency(z, k, maps, mask, 0.5, iterations=80, method="cg")
    assert torch.allclose(x_exact, x_cg, atol=1e-10)
    # λ → 0: the closed form reproduces the measurements on every sampled location
    x0 = data_consistency(z, k, maps, mask, 0.0, method="exact")
    sampled = mask.bool()[:, None].expand_as(k)
    assert torch.allclose(sense_forward(x0, maps, mask)[sampled], k[sampled], atol=1e-12)
    # and keeps z's k-space where nothing was measured
    unsampled = ~sampled
    v = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(maps[:, 0] * z, dim=(-2, -1)), dim=(-2, -1),
                                          norm="ortho"), dim=(-2, -1))[:, None]
    w = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(maps[:, 0] * x0, dim=(-2, -1)), dim=(-2, -1),
                                          norm="ortho"), dim=(-2, -1))[:, None]
    assert torch.allclose(w[unsampled], v[unsampled], atol=1e-12)


def test_exact_refused_for_multicoil():
    z, k, maps, mask = random_problem()
    assert not exact_dc_applies(maps)
    with pytest.raises(ValueError, match="'method' parameter 'exact'"):
        data_consistency(z, k, maps, mask, 1.0, method="exact")


def test_lambda_limits():
    z, k, maps, mask = random_problem(seed=3)
    truth, _, _, _ = random_problem(seed=30)
    k = sense_forward(truth, maps, mask)  # consistent data: some image fits them exactly
    far = data_consistency(z, k, maps, mask, 1e12, iterations=10)
    assert torch.allclose(far, z, atol=1e-8)
    near = data_consistency(z, k, maps, mask, 1e-10, iterations=200)
    residual = (sense_forward(near, maps, mask) - k * mask[:, None]).abs().pow(2).sum()
    start = (sense_forward(z, maps, mask) - k * mask[:, None]).abs().pow(2).sum()
    assert residual < 1e-10 * start


def test_dc_is_differentiable_in_z_and_lambda():
    z, k, maps, mask = random_problem(batch=1, seed=4)
    z = z.clone().requires_grad_(True)
    lam = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    x = data_consistency(z, k, maps, mask, lam, iterations=5)
    x.abs().pow(2).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad.abs()).all() and lam.grad is not None


def test_bad_lambda_and_shapes():
    z, k, maps, mask = random_problem()
    with pytest.raises(ValueError, match="'lam' parameter"):
        data_consistency(z, k, maps, mask, -1.0)
    with pytest.raises(ValueError, match="'mask' parameter"):
        data_consistency(z, k, maps, mask[:, :-1], 1.0)


def test_embed_and_crop():
    full = torch.zeros(2, 9, 8, dtype=torch.complex64)
    small = torch.ones(2, 4, 4, dtype=torch.complex64)
    out = embed_crop(full, small)
    assert torch.equal(crop_center(out, 4), small) and float(out.abs().sum()) == 32


# ---- the convex unrolled network -------------------------------------------------------------------


import convexrecon as cr  # noqa: E402
from convexrecon.mri.consistency import data_consistency as _dc  # noqa: E402,F401
from convexrecon.mri.fft import complex_to_channels  # noqa: E402
from convexrecon.data.synthetic import birdcage_maps  # noqa: E402
from convexrecon.stack.unrolled import UnrolledNet, unrolled_plain  # noqa: E402
from convexrecon.stack.unrolled_baselines import (train_unrolled_end_to_end,  # noqa: E402
                                                  train_unrolled_layerwise_adam)
from convexrecon.stack.unrolled_train import train_unrolled  # noqa: E402

SIZE, CROP = 32, 20


def blobs(n, seed, size=SIZE, crop=CROP):
    """Smooth complex objects inside the centre crop."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size // 2
    out = np.zeros((n, size, size), np.complex64)
    for i in range(n):
        for _ in range(4):
            cy, cx = g.uniform(-crop / 4, crop / 4, 2)
            r = g.uniform(2, crop / 4)
            out[i] += g.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2)) \
                * np.exp(1j * g.uniform(0, np.pi))
    return torch.from_numpy(out)


def toy_data(n, seed, images=None):
    """Stored-scale inputs/targets and MeasuredData of ``n`` noisy, line-undersampled 4-coil slices."""
    images = blobs(n, seed) if images is None else images
    maps = torch.from_numpy(np.repeat(birdcage_maps(4, (SIZE, SIZE))[None], n, axis=0))
    g = torch.Generator().manual_seed(seed)
    cols = torch.rand(n, SIZE, generator=g) < 0.3
    cols[:, SIZE // 2 - 2:SIZE // 2 + 2] = True
    mask = cols[:, None, :].expand(n, SIZE, SIZE).float()
    noise = 0.01 * torch.complex(torch.randn(n, 4, SIZE, SIZE, generator=g), torch.randn(n, 4, SIZE, SIZE, generator=g))
    kspace = sense_forward(images, maps, mask) + noise * mask[:, None]
    zf = sense_adjoint(kspace, maps, mask)
    scale = crop_center(zf, CROP).abs().flatten(1).max(1).values
    kspace = kspace / scale[:, None, None, None]
    target = crop_center(sense_adjoint(fft2c_full(images, maps), maps, torch.ones_like(mask)), CROP) / scale[:, None, None]
    inputs = complex_to_channels(crop_center(zf, CROP) / scale[:, None, None]).float()
    return inputs, complex_to_channels(target).float(), MeasuredData(kspace, maps, mask, CROP), scale.double()


def fft2c_full(images, maps):
    return sense_forward(images, maps, torch.ones(images.shape, dtype=torch.float32))


SETTINGS = [cr.BlockSettings(kernel_size=3, num_arrangements=2, beta_ratios=(1e-3, 1e-2), tol=1e-4)] * 2
SOLVE = {"gated_method": "interior_point"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    inputs, targets, data, _ = toy_data(6, seed=0)
    held = torch.tensor([False] * 4 + [True] * 2)
    ckpt = tmp_path_factory.mktemp("ckpt")
    result = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                            solve_options=SOLVE, checkpoint_dir=ckpt)
    return inputs, targets, data, held, result, ckpt


def test_choices_at_the_edge_of_their_candidates_warn_per_stage_at_the_callers_line():
    """With two candidates each, the chosen β ratio and λ are always at an edge: one SelectionWarning each."""
    inputs, targets, data, _ = toy_data(6, seed=0)
    held = torch.tensor([False] * 4 + [True] * 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_unrolled(inputs, targets, data, SETTINGS[:1], lambdas=(0.1, 1.0), holdout=held,
                                cg_iterations=6, solve_options=SOLVE)
    edges = [w for w in caught if issubclass(w.category, cr.SelectionWarning)]
    record = result.records[0]
    assert [w.filename for w in edges] == [__file__] * 2
    beta, lam = map(str, (edges[0].message, edges[1].message))
    ratio = record["selection"]["chosen_ratio"]
    side = "smallest" if ratio == 1e-3 else "largest"
    assert f"Stage 1: the β ratio chosen on the held-out slices is {ratio:g}, the {side}" in beta
    assert "'beta_ratios'" in beta
    assert f"Stage 1: the data-consistency λ chosen on the held-out slices is {record['lam']:g}" in lam
    assert "'lambdas'" in lam


def sq_error(pred, targets):
    return float((pred - targets).double().pow(2).sum())


def test_unrolled_stages_are_certified_and_improve(trained):
    inputs, targets, data, _, result, _ = trained
    for r in result.records:
        assert r["status"] == "optimal" and r["relative_gap"] <= 1e-4
        assert r["lam"] in (0.1, 1.0) and r["selection"]["holdout_slices"] == 2
    net = result.network
    # every stage lowers the training error below the zero-filled input's
    errors = [sq_error(net.predict(data, stages=s), targets) for s in (0, 1, 2)]
    assert errors[0] == pytest.approx(sq_error(inputs, targets), rel=1e-4)
    assert errors[1] < errors[0] and errors[2] < errors[0]
    # the correction bound never acts on the training slices: output as without it
    limits = [float(s.limit) for s in net.stages]
    for s in net.stages:
        s.limit.fill_(math.inf)
    unbounded = net.predict(data)
    for s, v in zip(net.stages, limits):
        s.limit.fill_(v)
    assert torch.allclose(unbounded, net.predict(data), atol=1e-6)


def test_unrolled_save_load_and_resume(trained, tmp_path):
    inputs, targets, data, held, result, ckpt = trained
    result.network.save(tmp_path / "model")
    loaded = cr.load_network(tmp_path / "model")
    assert isinstance(loaded, UnrolledNet)
    assert torch.equal(loaded.predict(data), result.network.predict(data))
    again = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                           solve_options=SOLVE, checkpoint_dir=ckpt)  # both stages from the checkpoints
    assert torch.equal(again.network.predict(data), result.network.predict(data))
    with pytest.raises(cr.CheckpointError, match="lambdas"):
        train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 3.0), holdout=held, cg_iterations=6,
                       solve_options=SOLVE, checkpoint_dir=ckpt)


def test_unrolled_out_of_distribution_is_bounded(trained):
    _, _, _, _, result, _ = trained
    net = result.network
    # a different structure (checkerboard with sharp edges, not smooth blobs) at a very different scale
    yy, xx = np.mgrid[:SIZE, :SIZE]
    board = ((yy // 3 + xx // 3) % 2).astype(np.complex64) * (np.abs(yy - SIZE // 2) < CROP // 2) \
        * (np.abs(xx - SIZE // 2) < CROP // 2)
    images = torch.from_numpy(np.stack([board * 1e4, board * 1e-3 * np.exp(0.7j)]).astype(np.complex64))
    inputs, targets, data, _ = toy_data(2, seed=5, images=images)
    out = net.predict(data)
    assert torch.isfinite(out).all()
    norm = lambda t: t.double().flatten(1).norm(dim=1)  # noqa: E731
    # (the second slice is almost pure noise: measured 2.4x its input's norm; the first 1.2x)
    assert (norm(out) <= 4 * norm(inputs) + norm(targets)).all()
    # positively homogeneous: scaling the k-space scales the output
    scaled = MeasuredData(data.kspace * 1e3, data.maps, data.mask, data.crop)
    assert torch.allclose(net.predict(scaled), 1e3 * out, rtol=1e-3, atol=1e-3 * float(out.abs().max()) * 1e3)


def test_unrolled_adam_baselines_run(trained):
    _, targets, data, _, result, _ = trained
    lambdas = [r["lam"] for r in result.records]
    e2e = unrolled_plain(2, 4, 3, lambdas, CROP, cg_iterations=3, seed=0)
    history = train_unrolled_end_to_end(e2e, targets, data, epochs=2, batch_size=3, lr=1e-3)
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert any(abs(float(s.lam) - v) > 0 for s, v in zip(e2e.stages, lambdas))  # λ learned
    net, records = train_unrolled_layerwise_adam(targets, data, 4, 3, lambdas, cg_iterations=3, epochs=2,
                                                 batch_size=3, lr=1e-3)
    assert len(records) == 2 and torch.isfinite(net.predict(data)).all()
    assert [float(s.lam) for s in net.stages] == pytest.approx(lambdas)


def test_unrolled_layerwise_adam_resumes_when_the_chain_differs_by_rounding(trained, tmp_path, monkeypatch):
    _, targets, data, _, _, _ = trained
    kwargs = {"cg_iterations": 3, "epochs": 2, "batch_size": 3, "lr": 1e-3, "checkpoint_dir": tmp_path}
    first, _ = train_unrolled_layerwise_adam(targets, data, 4, 3, [0.1, 1.0], **kwargs)
    from convexrecon.stack.unrolled import EstimateChain
    advanced = EstimateChain.advanced

    def rounded_differently(self, *args, **kw):  # another process's FFT rounding: one part in 1e7
        return advanced(self, *args, **kw) * (1 + 1e-7)

    monkeypatch.setattr(EstimateChain, "advanced", rounded_differently)
    # the same call again: both stages resume from their (finished) checkpoints, although stage 2's inputs
    # differ from the first run's (a checkpoint keyed on the inputs would refuse this)
    again, _ = train_unrolled_layerwise_adam(targets, data, 4, 3, [0.1, 1.0], **kwargs)
    for a, b in zip(first.stages, again.stages):
        assert all(torch.equal(u, v) for u, v in zip(a.block.state_dict().values(), b.block.state_dict().values()))
    # other targets are another run: refused, naming the file
    with pytest.raises(cr.CheckpointError, match="unrolled_layerwise_adam_01"):
        train_unrolled_layerwise_adam(targets * 2, data, 4, 3, [0.1, 1.0], **kwargs)


def test_train_unrolled_checks_inputs(trained):
    inputs, targets, data, held, _, _ = trained
    with pytest.raises(ValueError, match="'holdout'"):
        train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0))
    with pytest.raises(ValueError, match="does not match the inputs"):
        train_unrolled(inputs.flip(0), targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held)
    with pytest.raises(ValueError, match="'lambdas'"):
        train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.0,), holdout=held)


def test_unrolled_trainers_take_a_device(trained, tmp_path):
    inputs, targets, data, held, result, _ = trained
    explicit = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                              solve_options=SOLVE, device="cpu")
    assert torch.equal(explicit.network.predict(data), result.network.predict(data))
    with pytest.raises(ValueError, match="'solve_options' device must be the training device"):
        train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held,
                       solve_options={**SOLVE, "device": "meta"}, device="cpu")
    with pytest.raises(ValueError, match="'device'"):
        train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, device="tpu")
    with pytest.raises(TypeError, match="'allow_tf32'"):
        train_unrolled_layerwise_adam(targets, data, 4, 3, [0.1, 1.0], epochs=1, allow_tf32=1)
    lambdas = [r["lam"] for r in result.records]
    e2e = [unrolled_plain(2, 4, 3, lambdas, CROP, cg_iterations=3, seed=0) for _ in range(2)]
    train_unrolled_end_to_end(e2e[0], targets, data, epochs=1, batch_size=3, lr=1e-3)
    train_unrolled_end_to_end(e2e[1], targets, data, epochs=1, batch_size=3, lr=1e-3, device="cpu")
    assert torch.equal(e2e[0].predict(data), e2e[1].predict(data))
    with pytest.raises(ValueError, match="'device'"):
        train_unrolled_end_to_end(e2e[0], targets, data, epochs=1, device="cuda:7" if not torch.cuda.is_available()
                                  else "tpu")


# ---- further stage inputs: a constant channel and wavelet-shrunk estimates ------------------------------

from convexrecon.mri.sparsity import wavelet_shrink  # noqa: E402
from convexrecon.stack.unrolled import stage_channels  # noqa: E402


@pytest.mark.parametrize("shape", [(24, 40), (33, 20)])
def test_wavelet_shrink_equals_sigpys_db4_soft_threshold(shape):
    import sigpy as sp

    g = np.random.default_rng(3)
    x = g.standard_normal((2, *shape)) + 1j * g.standard_normal((2, *shape))
    scale = torch.tensor([1.0, 0.2], dtype=torch.float64)
    out = wavelet_shrink(torch.from_numpy(x), [0.5, 2.0], scale)
    W = sp.linop.Wavelet(shape, wave_name="db4")
    for t, o in zip([0.5, 2.0], out):
        assert o.shape == x.shape and o.dtype == torch.complex128
        for b in range(2):
            ref = W.H(sp.thresh.soft_thresh(t * float(scale[b]), W(x[b])))
            if shape[0] % 2 == 0 and shape[1] % 2 == 0:  # sigpy pads odd sides by one; there the two differ
                assert np.abs(o[b].numpy() - ref).max() <= 1e-12 * np.abs(ref).max()
            # shrinking towards zero: never longer than the input, shorter at a larger threshold
            assert np.linalg.norm(o[b].numpy()) < np.linalg.norm(x[b])
    assert all(out[1][b].norm() < out[0][b].norm() for b in range(2))
    assert torch.allclose(wavelet_shrink(torch.from_numpy(x), [1e-12])[0], torch.from_numpy(x), atol=1e-9)


def test_stage_features_are_positively_homogeneous_and_differentiable():
    _, _, data, _ = toy_data(2, seed=1)
    net = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=3, bias=True, shrink=(0.01, 0.1))
    assert net.in_channels == stage_channels(True, True, (0.01, 0.1)) == 9
    assert net.stages[0].block.first.in_channels == 9
    x1 = net.start(data.kspace, data.maps, data.mask)
    x = data_consistency(x1, data.kspace, data.maps, data.mask, 0.5, iterations=3)
    f = net.features(x, x1)
    assert f.shape == (2, 9, CROP, CROP)
    assert torch.allclose(f[:, 4], torch.ones_like(f[:, 4]))  # the constant channel: max|P^T x1| = 1 at stored scale
    assert torch.allclose(net.features(7.0 * x, 7.0 * x1), 7.0 * f, rtol=1e-5, atol=1e-5)
    scaled = MeasuredData(data.kspace * 1e3, data.maps, data.mask, data.crop)
    out = net.predict(data)
    assert torch.allclose(net.predict(scaled), 1e3 * out, rtol=1e-3, atol=1e-3 * float(out.abs().max()) * 1e3)
    # an untrained Adam-baseline stage adds nothing (zero second layer): the output is the DC step of the start
    first = net.stages[0].block
    assert float(first(f).abs().max()) == 0.0
    # gradients reach the block through the shrinkage (the end-to-end baseline trains through it)
    with torch.no_grad():
        first.second.weight.normal_(generator=torch.Generator().manual_seed(0))
    loss = net(data.kspace, data.maps, data.mask).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in net.stages[0].block.parameters() if p.requires_grad)


def test_unrolled_with_stage_features_is_certified_saved_and_reloaded(trained, tmp_path):
    inputs, targets, data, held, plain, _ = trained
    result = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                            solve_options=SOLVE, bias=True, shrink=[0.01, 0.03])
    net = result.network
    assert net.in_channels == 9 and net.shrink == (0.01, 0.03) and net.bias
    assert net.config["training"]["shrink"] == [0.01, 0.03]
    for r in result.records:
        assert r["status"] == "optimal" and r["relative_gap"] <= 1e-4
    assert sq_error(net.predict(data), targets) < sq_error(inputs, targets)
    net.save(tmp_path / "model")
    loaded = cr.load_network(tmp_path / "model")
    assert loaded.in_channels == 9 and loaded.shrink == (0.01, 0.03) and loaded.bias
    assert torch.equal(loaded.predict(data), net.predict(data))
    # a spec without the 'bias' / 'shrink' entries loads as one without those inputs
    from convexrecon.stack.unrolled import unrolled_from_spec

    spec = plain.network.spec()
    del spec["bias"], spec["shrink"]
    old = unrolled_from_spec(spec)
    assert old.in_channels == 4 and old.shrink == () and not old.bias


def test_stage_feature_arguments_are_checked(trained):
    inputs, targets, data, held, _, _ = trained
    for bad in ([-0.1], [float("nan")], "0.1", 0.1):
        with pytest.raises(ValueError, match="'shrink'"):
            unrolled_plain(1, 4, 3, [0.5], CROP, shrink=bad)
    with pytest.raises(TypeError, match="'bias'"):
        train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1,), holdout=held, bias=1)
    with pytest.raises(ValueError, match="9 input channels"):  # a block of another input width
        UnrolledNet(list(unrolled_plain(1, 4, 3, [0.5], CROP).stages), CROP, bias=True, shrink=(0.1, 0.2))
    net, _ = train_unrolled_layerwise_adam(targets, data, 4, 3, [0.5], cg_iterations=3, epochs=1, batch_size=3,
                                           shrink=(0.05,))
    assert net.in_channels == 6 and net.stages[0].block.first.in_channels == 6


def test_unrolled_cs_start_is_cs_and_the_stages_refine_it(trained, tmp_path):
    from convexrecon.mri.sparsity import l1_wavelet_fista

    inputs, targets, data, held, _, _ = trained
    result = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                            solve_options=SOLVE, cs_iterations=20, cs_lambda=0.01, shrink=[0.01])
    net = result.network
    assert (net.cs_iterations, net.cs_lambda) == (20, 0.01) and net.config["training"]["cs_iterations"] == 20
    rho = crop_center(net.start(data.kspace, data.maps, data.mask), CROP).abs().flatten(1).amax(1)
    cs = l1_wavelet_fista(data.kspace, data.maps, data.mask, 0.01, 20, scale=rho)
    start = net.predict(data, stages=0)
    assert torch.allclose(start, complex_to_channels(crop_center(cs, CROP)).float(), atol=1e-6)
    assert sq_error(start, targets) < sq_error(inputs, targets)  # CS is better than zero-filled here
    assert sq_error(net.predict(data), targets) < sq_error(start, targets)  # and the certified stages improve on it
    assert all(r["status"] == "optimal" for r in result.records)
    net.save(tmp_path / "model")
    loaded = cr.load_network(tmp_path / "model")
    assert (loaded.cs_iterations, loaded.cs_lambda) == (20, 0.01)
    assert torch.equal(loaded.predict(data), net.predict(data))
    # the end-to-end baseline computes the start once and trains on top of it, as the forward pass would
    e2e = unrolled_plain(2, 4, 3, [0.5, 0.5], CROP, cg_iterations=3, cs_iterations=20, cs_lambda=0.01)
    history = train_unrolled_end_to_end(e2e, targets, data, epochs=1, batch_size=3, lr=1e-3)
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    assert torch.allclose(e2e.predict(data, stages=0), start, atol=1e-6)
    for bad in ({"cs_iterations": -1}, {"cs_iterations": 1.5}, {"cs_iterations": 5}, {"cs_iterations": 5,
                                                                                      "cs_lambda": float("inf")}):
        with pytest.raises(ValueError, match="'cs_"):
            unrolled_plain(1, 4, 3, [0.5], CROP, **bad)


def test_scoring_with_precomputed_starts_equals_scoring_from_scratch(trained):
    from convexrecon.stack.unrolled import initial_estimates, unrolled_metrics

    _, targets, data, _, _, _ = trained
    net = unrolled_plain(2, 4, 3, [0.5, 0.5], CROP, cg_iterations=3, cs_iterations=10, cs_lambda=0.01, shrink=[0.01])
    with torch.no_grad():
        for s in net.stages:
            s.block.second.weight.normal_(generator=torch.Generator().manual_seed(1))
    start = initial_estimates(net, data, 4)
    assert start is not None and start.shape == (len(data), 1, *data.kspace.shape[2:])
    assert torch.allclose(net.predict(data, initial=start), net.predict(data), atol=1e-6)
    assert torch.allclose(net.predict(data, initial=start[:, 0]), net.predict(data), atol=1e-6)  # (N, H, W) too
    with pytest.raises(ValueError, match="'initial'"):
        net.predict(data, initial=start.repeat(1, 2, 1, 1))
    scales, volumes = torch.ones(len(targets), dtype=torch.float64), ["v"] * len(targets)
    assert unrolled_metrics(net, targets, scales, volumes, data, initial=start)["psnr"] == pytest.approx(
        unrolled_metrics(net, targets, scales, volumes, data)["psnr"], abs=1e-4)
    assert initial_estimates(unrolled_plain(1, 4, 3, [0.5], CROP), data) is None  # zero-filled start: nothing to cache


def test_cs_inputs_are_cs_images_at_their_weights_and_blocks_use_them(trained, tmp_path):
    from convexrecon.mri.sparsity import l1_wavelet_fista
    from convexrecon.stack.unrolled import initial_estimates

    inputs, targets, data, held, _, _ = trained
    result = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=6,
                            solve_options=SOLVE, cs_iterations=20, cs_lambda=0.01, cs_inputs=[0.003, (0.03, "haar")])
    net = result.network
    assert net.cs_inputs == ((0.003, "db4"), (0.03, "haar")) and net.in_channels == 8
    assert net.stages[0].block.first.in_channels == 8
    assert all(r["status"] == "optimal" for r in result.records)
    # initial(): the CS start, then one CS image per weight, each equal to its own FISTA run (one batch for all)
    x1 = net.start(data.kspace, data.maps, data.mask)
    rho = crop_center(x1, CROP).abs().flatten(1).amax(1)
    init = net.initial(x1, data.kspace, data.maps, data.mask)
    assert init.shape == (len(data), 3, *x1.shape[-2:])
    for j, (lam, wave) in enumerate(((0.01, "db4"), (0.003, "db4"), (0.03, "haar"))):
        cs = l1_wavelet_fista(data.kspace, data.maps, data.mask, lam, 20, scale=rho, wave=wave)
        assert torch.allclose(init[:, j], cs.to(init.dtype), atol=1e-5)
    assert not torch.allclose(init[:, 2], l1_wavelet_fista(data.kspace, data.maps, data.mask, 0.03, 20, scale=rho))
    # the block sees them: its input channels 6..7 are the crop of the 0.03 (Haar) image
    feats = net.features(init[:, 0], torch.cat([x1.unsqueeze(1), init[:, 1:]], 1))
    assert torch.allclose(feats[:, 6:8], complex_to_channels(crop_center(init[:, 2], CROP)).to(feats.dtype))
    assert torch.allclose(net.predict(data, initial=initial_estimates(net, data)), net.predict(data), atol=1e-6)
    # positively homogeneous: k-space × 1e3 scales the output by 1e3
    big = net(data.kspace * 1e3, data.maps, data.mask)
    small = net(data.kspace, data.maps, data.mask) * 1e3
    assert float((big - small).abs().max()) <= 1e-4 * float(small.abs().max())  # measured: 3.9e-6
    net.save(tmp_path / "model")
    loaded = cr.load_network(tmp_path / "model")
    assert loaded.cs_inputs == ((0.003, "db4"), (0.03, "haar")) and torch.equal(loaded.predict(data), net.predict(data))
    # the Adam baselines take the same inputs
    e2e = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=3, cs_iterations=20, cs_lambda=0.01, cs_inputs=[0.03])
    assert e2e.in_channels == 6
    history = train_unrolled_end_to_end(e2e, targets, data, epochs=1, batch_size=3, lr=1e-3)
    assert math.isfinite(history[0]["loss"])
    adam, _ = train_unrolled_layerwise_adam(targets, data, 4, 3, [0.5], cg_iterations=3, epochs=1, batch_size=3,
                                            cs_iterations=5, cs_lambda=0.01, cs_inputs=(0.03,))
    assert adam.in_channels == 6 and adam.cs_inputs == ((0.03, "db4"),)


def test_cs_inputs_are_checked():
    for bad in ([-0.1], [float("inf")], "0.1", 0.1, [(0.1, "nowave")], [(0.1,)], [(0.1, "haar", 1)], [True]):
        with pytest.raises(ValueError, match="'cs_inputs'"):
            unrolled_plain(1, 4, 3, [0.5], CROP, cs_iterations=5, cs_lambda=0.01, cs_inputs=bad)
    with pytest.raises(ValueError, match="'cs_inputs' parameter needs 'cs_iterations'"):
        unrolled_plain(1, 4, 3, [0.5], CROP, cs_inputs=[0.01])


def test_trainers_reuse_a_precomputed_start(trained):
    from convexrecon.stack.unrolled import initial_estimates

    inputs, targets, data, held, _, _ = trained
    options = {"cs_iterations": 10, "cs_lambda": 0.01, "cs_inputs": [(0.01, "haar")]}
    template = unrolled_plain(1, 4, 3, [0.5], CROP, **options)
    start = initial_estimates(template, data)
    assert start.shape == (len(data), 2, *data.kspace.shape[2:])
    val = (inputs, targets, torch.ones(len(targets), dtype=torch.float64), ["v"] * len(targets), data)
    kwargs = dict(lambdas=(0.1, 1.0), holdout=held, cg_iterations=4, solve_options=SOLVE, validation=val, **options)
    fresh = train_unrolled(inputs, targets, data, SETTINGS[:1], **kwargs)
    reused = train_unrolled(inputs, targets, data, SETTINGS[:1], initial=start, validation_initial=start, **kwargs)
    assert torch.allclose(fresh.network.predict(data), reused.network.predict(data), atol=1e-6)
    assert reused.records[0]["psnr"] == pytest.approx(fresh.records[0]["psnr"], abs=1e-4)
    losses = []
    for init in (None, start):
        net = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=3, seed=2, **options)
        losses.append(train_unrolled_end_to_end(net, targets, data, epochs=1, batch_size=3, lr=1e-3,
                                                initial=init)[0]["loss"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    adam = [train_unrolled_layerwise_adam(targets, data, 4, 3, [0.5], cg_iterations=3, epochs=1, batch_size=3,
                                          initial=init, **options)[0].predict(data) for init in (None, start)]
    assert torch.allclose(adam[0], adam[1], atol=1e-6)
    with pytest.raises(ValueError, match="'initial'"):  # another architecture's start: one CS input too few
        train_unrolled_end_to_end(unrolled_plain(1, 4, 3, [0.5], CROP, **options), targets, data, epochs=1,
                                  initial=start[:, :1].repeat(1, 3, 1, 1))
    with pytest.raises(ValueError, match="'initial'"):
        train_unrolled(inputs, targets, data, SETTINGS[:1], initial=start.real, **kwargs)
