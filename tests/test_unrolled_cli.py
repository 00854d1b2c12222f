"""The unrolled architecture through the CLI: train, save, reload, reconstruct a fastMRI file, evaluate."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from convexrecon.cli import main
from convexrecon.data.synthetic import make_synthetic
from convexrecon.metrics import psnr
from convexrecon.stack.persist import load_network


def test_unrolled_trains_reloads_and_reconstructs_through_the_cli(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    make_synthetic(data, volumes=3, slices=2, coils=4, seed=0, shape=(64, 45), recon=(32, 32), snr=40.0)
    model, recon = tmp_path / "model", tmp_path / "recon"
    common = ["--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    assert main(["train", "--data", str(data), "--mask", "poisson", "--out", str(model), "--architecture",
                 "unrolled", "--blocks", "2", "--crop", "32", "--kernel-size", "3", "--arrangements", "4",
                 "--patch-size", "0", "--max-iter", "300", "--lambdas", "0.1", "1", "--stage-bias",
                 "--stage-shrink", "0.01", "0.03", "--cs-start", "10", "--cs-start-lambda", "0.01",
                 "--cs-inputs", "0.003:haar", "--no-stage-zero-filled", *common]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["val_psnr"] > summary["zero_filled_psnr"] + 3  # data consistency: far above its input
    net = load_network(model)
    assert type(net).__name__ == "UnrolledNet" and len(net.stages) == 2
    assert net.bias and net.shrink == (0.01, 0.03) and not net.concat_input
    assert net.stages[0].block.first.in_channels == 9  # estimate 2, ρ 1, shrinkage 2 × 2, one CS image 2
    assert (net.cs_iterations, net.cs_lambda, net.cs_inputs) == (10, 0.01, ((0.003, "haar"),))
    stages = net.config["stages"]  # every stage keeps its certificate and its chosen λ
    assert [s["lam"] for s in stages] == [s["selection"]["chosen_lambda"] for s in stages]
    assert all(s["duality_gap"] >= 0 and 0 <= s["relative_gap"] < 1 for s in stages)
    assert len(net.config["solve_reports"]) == 2
    assert main(["reconstruct", "--model", str(model), "--data", str(data), "--out", str(recon), *common]) == 0
    for path in sorted(data.glob("*.h5")):
        with h5py.File(recon / path.name) as out, h5py.File(path) as ref:
            image, target = np.asarray(out["reconstruction"]), np.asarray(ref["reconstruction_rss"])
            zero = np.asarray(out["zero_filled"])
        assert image.shape == target.shape == (2, 32, 32) and np.isfinite(image).all()
        # against the file's own RSS reference (fastMRI's volume-wise convention)
        assert psnr(target, image) > psnr(target, zero) + 2
    assert main(["evaluate", "--recon", str(recon), "--data", str(data), *common]) == 0


def test_stage_inputs_are_refused_for_the_seed_architecture(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    make_synthetic(data, volumes=2, slices=1, coils=2, seed=0, shape=(32, 24), recon=(16, 16), snr=40.0)
    args = ["train", "--data", str(data), "--mask", "poisson", "--out", str(tmp_path / "m"), "--crop", "16"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--stage-shrink", "0.01"])
    assert exit_.value.code == 2
    assert "--no-keep-start: expected with --architecture unrolled only" in capsys.readouterr().err
    for flags in (["--stage-sense"], ["--stage-residual"], ["--cs-relative", "noise"], ["--no-keep-start"],
                  ["--cs-shifts", "4"], ["--dc-relative", "noise"]):
        with pytest.raises(SystemExit) as exit_:
            main([*args, *flags])
        assert exit_.value.code == 2 and "expected with --architecture unrolled only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--architecture", "unrolled", "--stage-shrink", "0", "0.1"])
    assert exit_.value.code == 2
    assert "expected finite thresholds > 0. Got [0.0, 0.1]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--architecture", "unrolled", "--cs-start", "5", "--cs-start-lambda", "-1"])
    assert "--cs-start-lambda: expected an int >= 0 and a finite number > 0. Got 5 and -1.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--architecture", "unrolled", "--cs-inputs", "0.01"])
    assert ("--cs-inputs: expected with --cs-start N > 0 (their FISTA steps). Got --cs-inputs 0.01:db4 and "
            "--cs-start 0") in capsys.readouterr().err
    for bad in ("nan", "0.01:nowave", "0:haar", "x"):
        with pytest.raises(SystemExit):
            main([*args, "--architecture", "unrolled", "--cs-start", "5", "--cs-inputs", bad])
        assert f"--cs-inputs: expected L or L:WAVELET, L a finite weight > 0 and WAVELET a discrete PyWavelets " \
               f"name (e.g. 0.003:haar). Got {bad!r}" in capsys.readouterr().err
