"""A new user's first hour: sampling detection, crops, cache location, tables, help, early errors."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from convexrecon.cli import build_parser, main
from convexrecon.mri.classical import LAMBDA_GRID, warn_lambda_at_edge
from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.masks import MaskFunc
from convexrecon.errors import DataWarning
from convexrecon.io import default_cache_dir
from convexrecon.metrics import ssim
from convexrecon.recon import sampled_entries, volume_masks, volume_sampling
from convexrecon.stack.network import ReconNet

from .conftest import CROP, RECON, SLICES

POISSON = MaskFunc("poisson", 4.0)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 1-block network saved with the config `train` writes (Poisson 4x, crop CROP)."""
    directory = tmp_path_factory.mktemp("model")
    net = ReconNet.plain([2], 3, seed=0, config={"data": {"mask": "poisson", "acceleration": 4.0, "crop": CROP,
                                                          "calib": 16, "seed": 0}})
    with torch.no_grad():  # a tiny residual: the output stays close to the zero-filled input
        net.second.weight.mul_(0.01)
    net.save(directory)
    return directory


def _copy(src: Path, dst: Path, *, mask_columns: np.ndarray | None = None, zero_columns: np.ndarray | None = None,
          store_mask: bool = False) -> Path:
    """A copy of a fastMRI file whose k-space columns outside ``zero_columns`` are zeroed and/or with a mask."""
    dst.mkdir(parents=True, exist_ok=True)
    target = dst / src.name
    shutil.copy(src, target)
    with h5py.File(target, "r+") as handle:
        if zero_columns is not None:
            data = handle["kspace"][()]
            data[..., ~zero_columns] = 0
            handle["kspace"][...] = data
        if store_mask:
            handle.create_dataset("mask", data=mask_columns.astype(np.float32))
    return target


def _line_columns(width: int) -> np.ndarray:
    """Every 4th column plus a centre band of 9: a 1D line mask (about 3.4x on 45 columns)."""
    columns = np.zeros(width, bool)
    columns[::4] = True
    columns[width // 2 - 4: width // 2 + 5] = True
    return columns


# --- item 3: sampling stored in the file ----------------------------------------------------------------------


def test_mask_dataset_is_detected_and_a_kind_mismatch_warns(synthetic_dir: Path, tmp_path: Path) -> None:
    src = sorted(synthetic_dir.glob("*.h5"))[0]
    columns = _line_columns(45)
    path = _copy(src, tmp_path / "d", mask_columns=columns, zero_columns=columns, store_mask=True)
    sampling = volume_sampling(FastMRIVolume(path), POISSON)
    assert sampling.source == "file mask" and sampling.kind == "lines"
    assert sampling.acceleration == pytest.approx(45 / columns.sum())
    assert "lines sampling, the model was trained on poisson masks" in sampling.mismatch(POISSON)
    masks = volume_masks(FastMRIVolume(path), POISSON)
    assert len(masks) == SLICES and all((m == columns[None]).all() for m in masks)


def test_zeroed_columns_are_detected_and_never_undersampled_again(synthetic_dir: Path, tmp_path: Path,
                                                                   model: Path, capsys) -> None:
    src = sorted(synthetic_dir.glob("*.h5"))[0]
    columns = _line_columns(45)
    path = _copy(src, tmp_path / "d", zero_columns=columns)  # challenge file: no mask dataset, zeros in k-space
    volume = FastMRIVolume(path)
    sampling = volume_sampling(volume, POISSON)
    assert (sampling.source, sampling.kind) == ("zeroed k-space", "lines")
    for s, mask in enumerate(volume_masks(volume, POISSON)):
        assert (mask == sampled_entries(volume.kspace(s))).all() and (mask == columns[None]).all()
    with pytest.warns(DataWarning, match=r"lines sampling, the model was trained on poisson masks"):
        assert main(["reconstruct", "--model", str(model), "--data", str(path), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "sampling: zeroed k-space: lines" in out and "not undersampled again" in out
    # a fully sampled file still gets the model's own Poisson mask
    full = volume_sampling(FastMRIVolume(src), POISSON)
    assert (full.source, full.kind) == ("model mask", "2D") and full.mismatch(POISSON) is None


# --- item 4: crops, and fastMRI's evaluation conventions on the output ----------------------------------------


def _fastmri_scores(target: np.ndarray, recon: np.ndarray) -> tuple[float, float]:
    """fastMRI's evaluate.py, rewritten: crop both to (W, W) of the target, volume PSNR and mean slice SSIM with
    data range = the volume's maximum."""
    side = target.shape[-1]

    def crop(x: np.ndarray) -> np.ndarray:
        top, left = x.shape[-2] // 2 - side // 2, x.shape[-1] // 2 - side // 2
        return x[..., top:top + side, left:left + side]

    target, recon = crop(target), crop(recon)
    peak = target.max()
    psnr = 10 * np.log10(peak ** 2 / np.mean((target - recon) ** 2))
    return float(psnr), float(np.mean([ssim(t, r, data_range=peak) for t, r in zip(target, recon)]))


def test_output_is_scored_by_fastmri_conventions_and_evaluate_agrees(synthetic_dir: Path, tmp_path: Path,
                                                                      model: Path, capsys) -> None:
    out = tmp_path / "rec"
    with pytest.warns(DataWarning, match=rf"trained on {CROP}x{CROP} crops and is applied at {RECON[0]}x{RECON[0]}"):
        assert main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--recon", str(out), "--data", str(synthetic_dir)]) == 0
    printed = capsys.readouterr().out
    assert "Reference: rss = the file's 'reconstruction_rss'" in printed
    for path in sorted(synthetic_dir.glob("*.h5")):
        with h5py.File(path, "r") as ref, h5py.File(out / path.name, "r") as rec:
            target, recon = ref["reconstruction_rss"][()], rec["reconstruction"][()]
            assert recon.shape == (SLICES, *RECON) and rec.attrs["crop"] == RECON[0]
        psnr, structural = _fastmri_scores(target, recon)
        assert 15 < psnr < 60
        row = re.search(rf"\| {path.name} \| {SLICES} \| ([\d.]+) \| ([\d.]+) \|", printed)
        assert row and float(row.group(1)) == pytest.approx(psnr, abs=0.006)
        assert float(row.group(2)) == pytest.approx(structural, abs=6e-5)


def test_crop_mismatches_are_refused(synthetic_dir: Path, tmp_path: Path, model: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(tmp_path / "x"),
              "--crop", "60"])
    assert info.value.code == 2
    assert "argument --crop: expected an int in [1, 45] (the k-space image 64x45" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # the failed run removed the directory it created
    small = tmp_path / "small"
    with pytest.warns(DataWarning, match=r"smaller than its reconstruction_rss \(32 wide\).*--crop 32"):
        main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(small),
              "--crop", str(CROP)])
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--recon", str(small), "--data", str(synthetic_dir)])
    assert info.value.code == 2
    assert re.search(r"argument --recon: .* holds 31x31 reconstructions, smaller than the 32x32 .* --crop 32",
                     capsys.readouterr().err)


# --- item 5: the cache --------------------------------------------------------------------------------------


def test_default_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEXRECON_CACHE", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("CONVEXRECON_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "convexrecon"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "convexrecon"


def test_cache_dir_is_honoured_and_espirit_maps_are_reused(synthetic_dir: Path, tmp_path: Path, model: Path,
                                                          capsys) -> None:
    cache = tmp_path / "cache"
    argv = ["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--cache-dir", str(cache)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert main([*argv, "--out", str(tmp_path / "a")]) == 0
        first = capsys.readouterr().out
        assert main([*argv, "--out", str(tmp_path / "b")]) == 0
        second = capsys.readouterr().out
    slices = 2 * SLICES
    assert f"ESPIRiT maps: {slices} estimated, 0 reused" in first
    assert f"ESPIRiT maps: 0 estimated, {slices} reused" in second
    assert len(list((cache / "espirit").rglob("*.npy"))) == slices
    with h5py.File(tmp_path / "a" / "file_synth_0_0000.h5", "r") as a, \
            h5py.File(tmp_path / "b" / "file_synth_0_0000.h5", "r") as b:
        assert np.array_equal(a["reconstruction"][()], b["reconstruction"][()])
    assert not any(p.name.startswith(".") for p in synthetic_dir.iterdir())  # nothing written into the data


# --- item 9 / 1: evaluate's table, help --------------------------------------------------------------------


def test_evaluate_prints_a_row_per_file_with_zero_filled(synthetic_dir: Path, tmp_path: Path, model: Path,
                                                        capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(tmp_path / "r")])
    capsys.readouterr()
    assert main(["evaluate", "--recon", str(tmp_path / "r"), "--data", str(synthetic_dir),
                 "--reference", "sense"]) == 0
    out = capsys.readouterr().out
    assert "Reference: sense = the fully sampled SENSE image" in out
    assert "| file | slices | model PSNR (dB) | model SSIM | model NMSE | zero-filled PSNR (dB) |" in out
    for name in ("file_synth_0_0000.h5", "file_synth_0_0001.h5"):
        cells = re.search(rf"\| {name} \| {SLICES} \| (.*) \|", out).group(1).split(" | ")
        model_psnr, zero_psnr = float(cells[0]), float(cells[3])
        assert 15 < zero_psnr < 60 and abs(model_psnr - zero_psnr) < 1.0  # a near-identity model
    assert f"| mean over 2 file(s) | {2 * SLICES} |" in out


@pytest.mark.parametrize("command, shown", [("train", "(default 4; 2 with --recommended)"), ("reconstruct", "training crop"),
                                            ("evaluate", "(default: rss)"), ("prepare", "(default poisson)")])
def test_help_shows_each_default_once(command: str, shown: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert shown in text
    assert not re.search(r"\(default[^()]*\) \(default", text)  # argparse's addition after a stated default
    assert "(default: None)" not in text


def test_warnings_are_one_readable_line() -> None:
    from convexrecon.cli.common import readable_warnings

    with readable_warnings():  # what Python's showwarning prints while a command runs: no source line
        line = warnings.formatwarning(DataWarning("the λ is at the edge"), DataWarning, "/x/classical.py", 7, "code")
    assert line == "warning: the λ is at the edge [DataWarning]\n"
    assert "classical.py" in warnings.formatwarning("m", DataWarning, "/x/classical.py", 7, "code")


# --- item 8: λ at the edge of its grid ---------------------------------------------------------------------


def test_lambda_at_either_end_of_the_grid_warns() -> None:
    with pytest.warns(DataWarning, match=r"is 0.0001, the smallest value of the grid .* with smaller values"):
        assert warn_lambda_at_edge(1e-4, LAMBDA_GRID, "on file a")
    with pytest.warns(DataWarning, match=r"is 0.03, the largest value of the grid .* with larger values"):
        assert warn_lambda_at_edge(3e-2, LAMBDA_GRID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_lambda_at_edge(1e-3, LAMBDA_GRID)


# --- item 1: the depth validation supports -----------------------------------------------------------------


def test_train_summary_reports_certificates_depth_and_zero_filled(synthetic_dir: Path, tmp_path: Path,
                                                                  capsys) -> None:
    from convexrecon.stack.persist import load_network

    argv = ["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "m"), "--mask", "poisson", "--crop",
            str(CROP), "--blocks", "3", "--kernel-size", "3", "--arrangements", "2", "--max-iter", "10", "--tol",
            "1e-2", "--patch-size", "8", "--patches-per-slice", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0
    out = capsys.readouterr().out
    net = load_network(tmp_path / "m")
    psnrs = [b["psnr"] for b in net.config["blocks"]]
    best = 1 + psnrs.index(max(psnrs))
    assert len(psnrs) == 3 and net.num_blocks == net.config["kept_blocks"] == best
    assert ("Kept all 3 blocks." in out) if best == 3 else (f"Kept {best} of 3 blocks" in out)
    statuses = [b["status"] for b in net.config["blocks"]]
    for b in net.config["blocks"]:
        assert re.search(rf"\| {b['block']} \| {b['status']} \| {b['relative_gap']:.2e} \| 0.01 \|", out)
    if any(s != "optimal" for s in statuses):  # 10 iterations: far from the tolerance
        assert f"WARNING: {sum(s != 'optimal' for s in statuses)} of 3 block solves did NOT reach" in out
    assert "| file_synth_0_0000.h5 | 3 |" in out and "zero-filled PSNR (dB)" in out


def test_truncated_network_equals_the_network_after_that_block() -> None:
    from convexrecon.stack.layerwise import BlockSettings, train_layerwise

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 2, 9, 9, generator=g), torch.randn(3, 2, 9, 9, generator=g)
    blocks = [BlockSettings(kernel_size=3, num_arrangements=2, beta_ratio=1e-2, tol=1e-3)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = train_layerwise(x, y, blocks[:1]).network
        result = train_layerwise(x, y, blocks)
    cut = result.truncated(1)
    assert cut.num_blocks == 1 and cut.config["kept_blocks"] == 1 and len(cut.config["blocks"]) == 2
    assert torch.equal(cut.predict(x), one.predict(x))
    with pytest.raises(ValueError, match=r"'depth' parameter must be an int in \[1, 2\]. Got 3"):
        result.truncated(3)


# --- item 10: early errors and hints -----------------------------------------------------------------------


def test_single_volume_fails_before_preprocessing(tiny_dir: Path, tmp_path: Path, capsys) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", str(tiny_dir), "--out", str(out), "--mask", "poisson", "--cache-dir", str(cache)])
    assert info.value.code == 2
    assert ("argument --data: expected at least 2 readable volumes (--val-volumes (1) for validation, at least one "
            "to train on). Got 1") in capsys.readouterr().err
    assert not out.exists() and not any(cache.rglob("*.h5"))


def test_swapped_evaluate_arguments_get_a_hint(synthetic_dir: Path, tmp_path: Path, model: Path, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--recon", str(synthetic_dir), "--data", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "The two directories look swapped: pass --recon OUT_DIR --data DATA_DIR." in capsys.readouterr().err


def test_reconstruct_skips_an_unreadable_file(synthetic_dir: Path, tmp_path: Path, model: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    shutil.copy(sorted(synthetic_dir.glob("*.h5"))[0], data)
    (data / "broken.h5").write_bytes(b"not HDF5")
    with pytest.warns(DataWarning, match=r"Skipping a file of .*broken.h5.*not a readable HDF5 file"):
        assert main(["reconstruct", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "r")]) == 0
    assert [p.name for p in (tmp_path / "r").glob("*.h5")] == ["file_synth_0_0000.h5"]


# --- smaller items: one warning per message, missing model, no reference, existing synthetic set ---------------


def test_a_message_raised_from_two_places_is_printed_once() -> None:
    from convexrecon.cli.common import readable_warnings

    with warnings.catch_warnings(record=True) as log:
        with readable_warnings():
            warnings.warn("Skipping a file of 'd': broken", DataWarning)
            warnings.warn("Skipping a file of 'd': broken", DataWarning)  # another line, same message
            warnings.warn("Skipping a file of 'd': other", DataWarning)
    assert [str(w.message) for w in log] == ["Skipping a file of 'd': broken", "Skipping a file of 'd': other"]


def test_missing_model_directory_is_named(tmp_path: Path, synthetic_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["reconstruct", "--model", str(tmp_path / "nope"), "--data", str(synthetic_dir), "--out",
              str(tmp_path / "r")])
    assert info.value.code == 2
    assert f"argument --model: expected the directory `train --out` wrote. Got '{tmp_path / 'nope'}', which does " \
           f"not exist." in capsys.readouterr().err


def test_a_file_without_any_reference_does_not_send_the_user_in_a_circle(synthetic_dir: Path, tmp_path: Path,
                                                                        model: Path, capsys) -> None:
    src = sorted(synthetic_dir.glob("*.h5"))[0]
    columns = _line_columns(45)
    path = _copy(src, tmp_path / "d", zero_columns=columns)
    with h5py.File(path, "r+") as handle:
        del handle["reconstruction_rss"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert main(["reconstruct", "--model", str(model), "--data", str(path), "--out", str(tmp_path / "r"),
                     "--cache-dir", str(tmp_path / "c")]) == 0
    for reference in ("rss", "sense"):
        with pytest.raises(SystemExit):
            main(["evaluate", "--recon", str(tmp_path / "r"), "--data", str(tmp_path / "d"), "--reference", reference,
                  "--cache-dir", str(tmp_path / "c")])
        assert "this file has no reference; leave it out of --recon" in capsys.readouterr().err


def test_make_synthetic_on_an_existing_set_says_it_is_kept(synthetic_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["prepare", "--data", str(synthetic_dir), "--make-synthetic", "--volumes", "5", "--crop", str(CROP),
                 "--no-classical", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert f"already holds 2 .h5 file(s), which are used as they are (--volumes" in out
    assert len(list(synthetic_dir.glob("*.h5"))) == 2
