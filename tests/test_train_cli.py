"""``train``, ``reconstruct`` and ``evaluate`` commands on the tiny synthetic set."""

from __future__ import annotations

import h5py
import pytest

from convexrecon.cli import main
from convexrecon.stack.persist import load_network

from .conftest import CROP, RECON, SLICES

TINY = ["--mask", "poisson", "--crop", str(CROP), "--blocks", "2", "--kernel-size", "3", "--arrangements", "2",
        "--max-iter", "30", "--tol", "1e-2", "--patch-size", "8", "--patches-per-slice", "2"]


@pytest.mark.parametrize("method", ["layerwise_convex", "end_to_end", "layerwise_adam"])
def test_train_reconstruct_evaluate(synthetic_dir, tmp_path, capsys, method) -> None:
    model = tmp_path / "model"
    argv = ["train", "--data", str(synthetic_dir), "--out", str(model), "--method", method, "--epochs", "1", *TINY]
    assert main(argv) == 0
    net = load_network(model)
    assert net.config["data"]["crop"] == CROP and net.config["method"] == method
    if method == "layerwise_convex":  # the CLI keeps the block count with the best validation PSNR
        psnrs = [b["psnr"] for b in net.config["blocks"]]
        assert len(psnrs) == 2 and net.num_blocks == net.config["kept_blocks"] == 1 + psnrs.index(max(psnrs))
    else:
        assert net.num_blocks == 2
    assert main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(tmp_path / "rec")]) == 0
    files = sorted((tmp_path / "rec").glob("*.h5"))
    assert len(files) == 2
    with h5py.File(files[0], "r") as handle:
        rec = handle["reconstruction"]
        # default crop: the side of the file's reconstruction_rss (fastMRI's evaluation size), not the training crop
        assert rec.shape == (SLICES, RECON[0], RECON[0]) and rec.dtype == "float32"
    capsys.readouterr()
    assert main(["evaluate", "--recon", str(tmp_path / "rec"), "--data", str(synthetic_dir)]) == 0
    assert "PSNR" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["train", "--data", "/nonexistent", "--mask", "poisson", "--out", "x"], "--data"),
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--blocks", "0"], "--blocks"),
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--kernel-size", "4"], "--kernel-size"),
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--halve-every", "0"], "--halve-every"),
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--epochs", "0"], "--epochs"),
        (["train", "--data", "DATA", "--mask", "star", "--out", "x"], "--mask"),
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--beta-ratios", "0.1", "-1"], "--beta-ratios"),
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--holdout-volumes", "0"], "--holdout-volumes"),
        # the tiny set has one training volume: nothing is left to fit on once it is held out (checked before
        # any preprocessing)
        (["train", "--data", "DATA", "--mask", "poisson", "--out", "x", "--beta-ratios", "0.1", *TINY[2:]],
         "argument --data: expected at least 3 readable volumes (--val-volumes (1) for validation, "
         "--holdout-volumes (1) to choose beta, at least one to train on). Got 2"),
        (["reconstruct", "--model", "/nonexistent", "--data", "DATA", "--out", "x"], "--model"),
        (["evaluate", "--recon", "/nonexistent", "--data", "DATA"], "--recon"),
    ],
)
def test_bad_arguments_exit_2(synthetic_dir, capsys, argv, match) -> None:
    argv = [str(synthetic_dir) if a == "DATA" else a for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert match in capsys.readouterr().err


def test_train_chooses_beta_on_held_out_training_volumes(tmp_path, capsys) -> None:
    from convexrecon.data import make_synthetic

    from .conftest import COILS, RECON, SHAPE
    data = tmp_path / "three"
    make_synthetic(data, volumes=3, slices=SLICES, coils=COILS, seed=0, shape=SHAPE, recon=RECON, snr=40.0)
    model = tmp_path / "model"
    assert main(["train", "--data", str(data), "--out", str(model), "--beta-ratios", "0.003", "0.3", *TINY]) == 0
    net = load_network(model)
    for layer in net.layers:  # default gate sampling: complementary pairs g, -g
        gates = layer.gates
        assert gates.shape[0] == 2 and bool((gates[1] == -gates[0]).all())
    blocks = net.config["blocks"]
    for block in blocks:
        selection = block["selection"]
        assert selection["beta_ratios"] == [0.003, 0.3] and block["beta_ratio"] == selection["chosen_ratio"]
        assert selection["holdout_slices"] == SLICES * 2 and selection["fit_slices"] == SLICES * 2  # 2 windows each
        chosen = selection["beta_ratios"].index(selection["chosen_ratio"])
        assert selection["holdout_sq_error"][chosen] == min(selection["holdout_sq_error"])


def test_holdout_mask_marks_the_last_volumes_by_name() -> None:
    from convexrecon.data.splits import holdout_mask

    volumes = ["b.h5", "b.h5", "a.h5", "c.h5", "c.h5"]
    assert holdout_mask(volumes, 1).tolist() == [False, False, False, True, True]
    assert holdout_mask(volumes, 2).tolist() == [True, True, False, True, True]
    with pytest.raises(ValueError, match="Got 3"):
        holdout_mask(volumes, 3)
