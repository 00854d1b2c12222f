"""The fallback of the unrolled network: SENSE-CG as input and start, identity stages, the held-out selection that
never picks a stage worse than its input (keep_start), and CS weights relative to the estimated noise."""

import math

import pytest
import torch

import convexrecon as cr
from convexrecon.mri import MeasuredData, complex_to_channels, crop_center, data_consistency, estimate_noise
from convexrecon.mri.sparsity import CYCLE_SHIFTS, l1_wavelet_fista
from convexrecon.stack.stage_inputs import SENSE_ITERATIONS, StageInputs
from convexrecon.stack.unrolled import UnrolledNet, identity_stage, stage_channels, unrolled_plain
from convexrecon.stack.unrolled_baselines import train_unrolled_end_to_end
from convexrecon.stack.unrolled_train import train_unrolled
from tests.test_unrolled import CROP, SETTINGS, SOLVE, sq_error, toy_data

FALLBACK = StageInputs(sense_input=True, sense_start=True)


def sense_cg_images(data):
    """Unregularised SENSE-CG: CG on A^H A from zero, cropped, as 2 channels."""
    x = data_consistency(torch.zeros_like(data.zero_filled()), data.kspace, data.maps, data.mask, 0.0,
                         iterations=SENSE_ITERATIONS)
    return complex_to_channels(crop_center(x, data.crop)).float()


@pytest.fixture(scope="module")
def toy():
    return toy_data(6, seed=0)


def test_sense_start_and_input_are_sense_cg_and_identity_stages_return_the_start(toy):
    inputs, targets, data, _ = toy
    sense = sense_cg_images(data)
    assert sq_error(sense, targets) < sq_error(inputs, targets)  # SENSE-CG beats zero-filled here
    for stage_inputs, start in ((FALLBACK, sense), (StageInputs(), inputs), (StageInputs(sense_input=True), inputs)):
        plain = unrolled_plain(2, 4, 3, [0.5, 0.5], CROP, cg_iterations=4, **stage_inputs.options())
        assert plain.in_channels == 4 + 2 * stage_inputs.sense_input
        spec = {**cr.stack.unrolled.block_spec(plain.stages[0].block), "num_gates": 1}
        net = UnrolledNet([identity_stage(spec), identity_stage(spec)], CROP, cg_iterations=4,
                          stage_inputs=stage_inputs)
        assert torch.allclose(net.predict(data, stages=0), start, atol=1e-6)
        assert torch.equal(net.predict(data), net.predict(data, stages=0))  # zero block + skip: exactly the start
        if stage_inputs.sense_input:  # the SENSE-CG image is the last two input channels of every block
            x = net.start(data.kspace, data.maps, data.mask)
            init = net.initial(x, data.kspace, data.maps, data.mask)
            fixed = torch.cat([x.unsqueeze(1), init[:, 1:]], 1)
            assert torch.allclose(net.features(init[:, 0], fixed)[:, -2:], sense, atol=1e-6)
    assert stage_channels(sense_input=True) == FALLBACK.channels() == 6
    e2e = unrolled_plain(2, 4, 3, [0.5, 0.5], CROP, cg_iterations=3, **FALLBACK.options())
    history = train_unrolled_end_to_end(e2e, targets, data, epochs=1, batch_size=3, lr=1e-3)
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    assert torch.allclose(e2e.predict(data, stages=0), sense, atol=1e-6)  # Adam trains on top of the same start


def test_held_out_selection_never_picks_a_network_worse_than_its_start(toy, tmp_path):
    """The held-out slices' targets are their own start: every candidate stage (a block fitted on the other slices,
    then a DC step) makes them worse, so keep_start makes every stage the identity; without it, the selection
    picks a worse stage (what the property guards against)."""
    inputs, targets, data, _ = toy
    held = torch.tensor([False] * 4 + [True] * 2)
    rigged = targets.clone()
    rigged[held] = inputs[held]
    common = dict(lambdas=(0.1, 1.0), holdout=held, cg_iterations=4, solve_options=SOLVE)
    plain = train_unrolled(inputs, rigged, data, SETTINGS, **common)
    first = plain.records[0]["selection"]
    assert min(min(row) for row in first["holdout_sq_error"]) > first["holdout_input_sq_error"]
    assert first["holdout_input_sq_error"] < 1e-9 * float(rigged[held].double().pow(2).sum())
    kept = train_unrolled(inputs, rigged, data, SETTINGS, keep_start=True, checkpoint_dir=tmp_path, **common)
    assert all(r["identity"] and r["selection"]["chosen_identity"] for r in kept.records)
    resumed = train_unrolled(inputs, rigged, data, SETTINGS, keep_start=True, checkpoint_dir=tmp_path, **common)
    assert [r["identity"] for r in resumed.records] == [True, True]
    assert torch.equal(resumed.network.predict(data), kept.network.predict(data))
    assert torch.equal(kept.network.predict(data), kept.network.predict(data, stages=0))
    start = kept.network.predict(data.subset(held), stages=0)
    assert sq_error(kept.network.predict(data.subset(held)), rigged[held]) == sq_error(start, rigged[held])


def test_with_keep_start_the_held_out_error_never_rises_from_stage_to_stage(toy, tmp_path):
    """On an ordinary case with the fallback inputs: each stage's held-out error after the selection is at most its
    input's, so the selection chain ends no worse than its SENSE-CG start; the network saves and reloads."""
    inputs, targets, data, _ = toy
    held = torch.tensor([False] * 4 + [True] * 2)
    result = train_unrolled(inputs, targets, data, SETTINGS, lambdas=(0.1, 1.0), holdout=held, cg_iterations=4,
                            solve_options=SOLVE, stage_inputs=FALLBACK, keep_start=True)
    errors = []
    for r in result.records:
        s = r["selection"]
        chosen = s["holdout_input_sq_error"] if r.get("identity") else min(min(row) for row in s["holdout_sq_error"])
        assert chosen <= s["holdout_input_sq_error"]
        errors.append((s["holdout_input_sq_error"], chosen))
    for (_, after), (before, _) in zip(errors[:-1], errors[1:]):  # a stage's input is the previous stage's output
        assert before == pytest.approx(after, rel=1e-5)
    assert errors[-1][1] <= errors[0][0]
    assert errors[0][0] == pytest.approx(sq_error(sense_cg_images(data)[held], targets[held]), rel=1e-4)
    net = result.network
    assert net.config["training"]["sense_start"] and net.config["training"]["keep_start"]
    net.save(tmp_path / "model")
    loaded = cr.load_network(tmp_path / "model")
    assert loaded.stage_inputs == FALLBACK and torch.equal(loaded.predict(data), net.predict(data))


def test_residual_blocks_see_every_further_image_minus_the_estimate(toy, tmp_path):
    inputs, targets, data, _ = toy
    residual = StageInputs(sense_input=True, residual=True)
    assert residual.channels() == 4 and residual.channels(False) == 2 == stage_channels(False, sense_input=True,
                                                                                          residual=True)
    net = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=4, **residual.options())
    x = net.start(data.kspace, data.maps, data.mask)
    init = net.initial(x, data.kspace, data.maps, data.mask)
    fixed = torch.cat([x.unsqueeze(1), init[:, 1:]], 1)
    estimate = 2.0 * init[:, 0]  # any estimate: the features are the images' differences from it
    got = net.features(estimate, fixed)
    crop = lambda im: complex_to_channels(crop_center(im, CROP)).float()  # noqa: E731
    assert got.shape[1] == 4
    assert torch.allclose(got[:, :2], crop(x) - crop(estimate), atol=1e-6)
    assert torch.allclose(got[:, 2:], sense_cg_images(data) - crop(estimate), atol=1e-5)
    assert torch.allclose(net.features(x, fixed)[:, :2], torch.zeros_like(got[:, :2]))  # x1 - x1
    net.save(tmp_path / "residual")
    loaded = cr.load_network(tmp_path / "residual")
    assert loaded.stage_inputs.residual and torch.equal(loaded.predict(data), net.predict(data))
    assert "residual" not in StageInputs().settings()
    with pytest.raises(ValueError, match="residual stage needs a further image"):
        UnrolledNet([], CROP, False, stage_inputs=StageInputs(residual=True))
    with pytest.raises(TypeError, match="'residual'"):
        StageInputs(residual="yes")


def test_cycle_spun_cs_images(toy, tmp_path):
    _, _, data, _ = toy
    net = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=4, cs_iterations=10, cs_lambda=0.5, cs_inputs=[0.1],
                         cs_shifts=3)
    x = net.start(data.kspace, data.maps, data.mask)
    spun = l1_wavelet_fista(data.kspace, data.maps, data.mask, 0.5, 10, scale=crop_center(x, CROP).abs().flatten(1)
                            .amax(1), shifts=list(CYCLE_SHIFTS[:3]))
    assert torch.allclose(net.predict(data, stages=0), complex_to_channels(crop_center(spun, CROP)).float(), atol=1e-5)
    plain = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=4, cs_iterations=10, cs_lambda=0.5, cs_inputs=[0.1])
    assert not torch.allclose(net.predict(data, stages=0), plain.predict(data, stages=0), atol=1e-4)
    net.save(tmp_path / "spun")
    assert cr.load_network(tmp_path / "spun").stage_inputs.cs_shifts == 3
    assert "cs_shifts" not in StageInputs().settings()
    for bad in (0, 9, 2.0, True):
        with pytest.raises(ValueError, match="'cs_shifts'"):
            StageInputs(cs_iterations=10, cs_lambda=0.5, cs_shifts=bad)


def test_cs_weights_relative_to_the_noise_estimate(toy):
    inputs, targets, data, _ = toy
    net = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=4, cs_iterations=10, cs_lambda=0.5,
                         cs_inputs=[0.1], cs_relative="noise")
    sigma = estimate_noise(data.kspace, data.mask)
    assert sigma.shape == (6,) and bool((sigma > 0).all())
    cs = l1_wavelet_fista(data.kspace, data.maps, data.mask, 0.5, 10, scale=sigma)
    assert torch.allclose(net.predict(data, stages=0), complex_to_channels(crop_center(cs, CROP)).float(), atol=1e-6)
    scaled = MeasuredData(3.0 * data.kspace, data.maps, data.mask, data.crop)  # positively homogeneous: the weights scale with the data
    assert torch.allclose(net.predict(scaled, stages=0), 3.0 * net.predict(data, stages=0), atol=1e-5)
    assert "cs_relative" not in StageInputs(cs_iterations=10, cs_lambda=0.5).settings()  # defaults keep their keys
    assert StageInputs.from_options(cs_iterations=10, cs_lambda=0.5, cs_relative="noise").cs_relative == "noise"


def test_fallback_options_are_checked(toy):
    inputs, targets, data, _ = toy
    with pytest.raises(ValueError, match="'cs_relative'"):
        StageInputs(cs_relative="image")
    with pytest.raises(TypeError, match="'sense_input'"):
        StageInputs(sense_input=1)
    with pytest.raises(ValueError, match="keep_start"):
        train_unrolled(inputs, targets, data, SETTINGS[:1], lambdas=(0.1,), keep_start=True, solve_options=SOLVE)
    with pytest.raises(ValueError, match="'lam'"):
        cr.stack.unrolled.UnrolledStage(identity_stage({"in_channels": 4, "width": 2, "kernel_size": 3,
                                                        "activation": "relu", "num_gates": 1}).block, math.nan)


# ---- out of distribution: trained on knee at SNR 25, applied at SNR 100 (and to brain) -------------------------

SHAPE, SMALL_CROP, COILS = (64, 48), 32, 8
ROBUST = StageInputs(cs_iterations=30, cs_lambda=1.0, cs_inputs=(0.5, 2.0), sense_input=True, cs_relative="noise",
                     residual=True)


def synthetic_slices(anatomy, snr, seed, n):
    """``n`` Poisson-3x slices of one small synthetic volume with its true maps: stored-scale inputs, the noiseless
    truth as targets, and the measurements."""
    from convexrecon.data.masks import poisson_disc
    from convexrecon.data.synthetic import synthesize_volume
    from convexrecon.mri import sense_adjoint

    volume = synthesize_volume(SHAPE, n, COILS, seed, snr, anatomy)
    maps = torch.from_numpy(volume.maps[None]).repeat(n, 1, 1, 1)
    mask = torch.stack([torch.from_numpy(poisson_disc(SHAPE, 3.0, 12, seed=seed * 10 + i)) for i in range(n)]).float()
    kspace = torch.from_numpy(volume.kspace) * mask[:, None]
    zf = sense_adjoint(kspace, maps, mask)
    scale = crop_center(zf, SMALL_CROP).abs().flatten(1).amax(1)
    truth = crop_center(torch.from_numpy(volume.images), SMALL_CROP) / scale[:, None, None]
    return (complex_to_channels(crop_center(zf, SMALL_CROP) / scale[:, None, None]).float(),
            complex_to_channels(truth).float(),
            MeasuredData(kspace / scale[:, None, None, None], maps, mask, SMALL_CROP))


def psnr(x, target):
    """Per-slice PSNR (peak: the slice's max |target|)."""
    peak = target.pow(2).sum(1).flatten(1).amax(1)
    return 10 * torch.log10(peak / (x - target).pow(2).sum(1).flatten(1).mean(1))


def test_a_network_trained_at_snr_25_is_not_below_sense_cg_at_snr_100_on_the_other_family():
    parts = [synthetic_slices("knee", 25.0, seed, 3) for seed in (1, 2)]
    inputs, targets = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    data = MeasuredData(*(torch.cat([getattr(p[2], f) for p in parts]) for f in ("kspace", "maps", "mask")),
                        SMALL_CROP)
    settings = [cr.BlockSettings(kernel_size=3, num_arrangements=2, beta_ratios=(1e-3, 1e-2, 1e-1), tol=1e-4)] * 2
    net = train_unrolled(inputs, targets, data, settings, lambdas=(0.1, 1.0, 10.0), holdout=torch.arange(6) >= 3,
                         cg_iterations=6, solve_options=SOLVE, stage_inputs=ROBUST, keep_start=True).network
    for anatomy, snr in (("brain", 100.0), ("brain", 10.0)):  # (margins about +0.5 dB and +4 dB on these slices)
        _, truth, measured = synthetic_slices(anatomy, snr, 7, 2)
        sense = psnr(sense_cg_images(measured), truth)
        assert bool((psnr(net.predict(measured), truth) >= sense).all()), (anatomy, snr)


def test_noise_relative_dc_weight_scales_each_slice_by_its_squared_noise_ratio(toy, tmp_path):
    """With dc_noise = r0 a slice of relative noise level r gets λ (r / r0)^2 (the MAP weight σ²/τ²): the same
    output as the stage with that per-slice λ, the stage's own λ where r = r0, and a save/load round trip keeps r0."""
    _, _, data, _ = toy
    plain = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=4, seed=3)
    k, s, m = data.kspace, data.maps, data.mask
    rho = crop_center(data.zero_filled(), CROP).abs().flatten(1).amax(1)
    ratio = estimate_noise(k, m).to(rho.dtype) / rho
    fixed = UnrolledNet(list(plain.stages), CROP, cg_iterations=4)
    relative = UnrolledNet(list(plain.stages), CROP, cg_iterations=4, dc_noise=float(ratio[0]))
    assert torch.allclose(relative.dc_factors(k, s, m), (ratio / ratio[0]) ** 2, rtol=1e-4)
    assert torch.allclose(relative.dc_factors(k, s, m, relative.start(k, s, m)), relative.dc_factors(k, s, m))
    x = fixed.start(k, s, m)
    stage = plain.stages[0]
    assert torch.allclose(relative.step(stage, x, x, k, s, m),
                          fixed.step(stage, x, x, k, s, m, lam=0.5 * (ratio / ratio[0]) ** 2), atol=1e-6)
    assert torch.allclose(relative.step(stage, x[:1], x[:1], k[:1], s[:1], m[:1]),
                          fixed.step(stage, x[:1], x[:1], k[:1], s[:1], m[:1]), atol=1e-6)  # r = r0: λ as trained
    assert not torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-3)  # the slices differ: the test can fail
    net = UnrolledNet(list(plain.stages), CROP, cg_iterations=4, dc_noise=0.02)
    net.save(tmp_path / "m")
    loaded = cr.stack.persist.load_unrolled(tmp_path / "m")
    assert loaded.stage_inputs.dc_noise == 0.02
    assert torch.allclose(loaded.predict(data), net.predict(data), atol=1e-6)
    assert "dc_noise" not in StageInputs().settings() and StageInputs(dc_noise=0.1).settings()["dc_noise"] == 0.1
    for bad in (-1.0, math.inf, "0.1", True):
        with pytest.raises(ValueError, match="'dc_noise'"):
            StageInputs(dc_noise=bad)


def test_cs_weights_shrink_with_the_noise_below_the_training_level_and_stay_above_it(toy, tmp_path):
    """With cs_noise = r0 every CS image of a slice cleaner than r0 is CS at weight c σ̂ r / r0 (start and inputs
    alike); a slice at or above r0 gets c σ̂ as without it; a save/load round trip and the start-image cache key keep
    r0, and a network without it keeps its old key."""
    from convexrecon.data.inputcache import initial_settings

    _, _, data, _ = toy
    k, s, m = data.kspace, data.maps, data.mask
    rho = crop_center(data.zero_filled(), CROP).abs().flatten(1).amax(1)
    sigma = estimate_noise(k, m).to(rho.dtype)
    ratio = sigma / rho
    r0 = float(ratio.median())
    assert bool((ratio < r0).any()) and bool((ratio > r0).any())  # both sides of r0: the test can fail
    common = {"cs_iterations": 12, "cs_lambda": 0.5, "cs_inputs": ((1.5, "haar"),), "cs_relative": "noise"}
    plain = UnrolledNet([], CROP, cg_iterations=4, **common)
    shrunk = UnrolledNet([], CROP, cg_iterations=4, cs_noise=r0, **common)
    x1 = plain.start(k, s, m)
    got = shrunk.initial(x1, k, s, m)
    factor = (ratio / r0).clamp(max=1.0)
    for index, (weight, wave) in enumerate(((0.5, "db4"), (1.5, "haar"))):
        expected = l1_wavelet_fista(k, s, m, 1.0, 12, scale=weight * sigma * factor, start=x1, wave=wave)
        assert torch.allclose(got[:, index], expected, atol=1e-5), wave
    above = ratio >= r0
    assert torch.allclose(got[above], plain.initial(x1, k, s, m)[above], atol=1e-6)  # noisier slices: unchanged
    assert not torch.allclose(got[~above], plain.initial(x1, k, s, m)[~above], atol=1e-4)
    shrunk.save(tmp_path / "m")
    loaded = cr.stack.persist.load_unrolled(tmp_path / "m")
    assert loaded.stage_inputs.cs_noise == r0
    assert torch.allclose(loaded.predict(data), shrunk.predict(data), atol=1e-6)
    assert "cs_noise" not in initial_settings(plain.options())
    assert initial_settings(shrunk.options())["cs_noise"] == r0
    assert "cs_noise" not in StageInputs().settings()
    for bad in (-1.0, math.inf, "0.1", True):
        with pytest.raises(ValueError, match="'cs_noise'"):
            StageInputs(cs_iterations=5, cs_lambda=0.1, cs_noise=bad)
    with pytest.raises(ValueError, match="'cs_noise' parameter needs 'cs_iterations'"):
        StageInputs(cs_noise=0.1)


def test_a_chain_reuses_its_dc_factors_and_advances_as_the_network(toy):
    """EstimateChain computes the slices' DC factors once and steps exactly as UnrolledNet.step computing them."""
    from convexrecon.stack.unrolled import EstimateChain

    _, _, data, _ = toy
    plain = unrolled_plain(1, 4, 3, [0.5], CROP, cg_iterations=4, seed=3)
    rho = crop_center(data.zero_filled(), CROP).abs().flatten(1).amax(1)
    r0 = float((estimate_noise(data.kspace, data.mask).to(rho.dtype) / rho)[0])
    net = UnrolledNet(list(plain.stages), CROP, cg_iterations=4, dc_noise=r0)
    chain = EstimateChain(net, data, chunk_size=4)
    factors = chain.dc_factors()
    assert chain.dc_factors() is factors and factors.shape == (len(data),)
    index = torch.tensor([5, 1, 3])
    expected = net.step(net.stages[0], chain.x[index], chain.x1[index], data.kspace[index], data.maps[index],
                        data.mask[index])
    assert torch.allclose(chain.advanced(net.stages[0], index), expected, atol=1e-6)
    assert EstimateChain(plain, data, chunk_size=4).dc_factors() is None
