"""`train` prints the model beside zero-filled, SENSE-CG and L1-wavelet CS on its validation slices, computed once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from convexrecon.cli import main

from .conftest import CROP, save_tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--mask", "poisson", "--crop", str(CROP), "--blocks", "1", "--kernel-size", "3", "--arrangements", "2",
        "--max-iter", "30", "--tol", "1e-2", "--patch-size", "8", "--patches-per-slice", "2"]


def _row(out: str, label: str) -> list[float]:
    line = next(line for line in out.splitlines() if line.startswith(f"| {label} |"))
    return [float(cell) for cell in line.strip("|").split("|")[1:]]


def test_train_prints_the_classical_references_once_computed(synthetic_dir: Path, tmp_path: Path, capsys) -> None:
    common = ["train", "--data", str(synthetic_dir), "--cache-dir", str(tmp_path / "cache"), *TINY]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert "The model beside the classical references on the same validation slices" in first
    assert "read from the cache" not in first
    summary = json.loads(first.strip().splitlines()[-1])
    model, zero = _row(first, "model"), _row(first, "zero-filled SENSE")
    cg, cs = _row(first, "SENSE-CG (10 CG iterations)"), _row(first, "L1-wavelet CS")
    # the same model and the same reference as the per-volume table above it
    assert model[2] == pytest.approx(summary["val_psnr"], abs=0.005)
    assert zero[2] == pytest.approx(summary["zero_filled_psnr"], abs=0.01)
    assert summary["l1_wavelet_psnr"] == pytest.approx(cs[2], abs=0.005)
    assert summary["sense_cg_psnr"] == pytest.approx(cg[2], abs=0.005)
    assert cs[2] > zero[2]  # CS improves on zero-filling: the references are real reconstructions
    best = max(cg[2], cs[2], zero[2])
    assert ("NOTE: the model is" in first) == (model[2] < best)

    assert main([*common, "--out", str(tmp_path / "b")]) == 0
    second = capsys.readouterr().out
    assert "read from the cache" in second
    assert _row(second, "L1-wavelet CS") == cs and _row(second, "SENSE-CG (10 CG iterations)") == cg


def test_no_classical_skips_them(synthetic_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", "--data", str(synthetic_dir), "--cache-dir", str(tmp_path / "cache"), "--out",
                 str(tmp_path / "m"), "--no-classical", *TINY]) == 0
    out = capsys.readouterr().out
    assert "classical references" not in out
    assert not re.search(r"l1_wavelet_psnr", out)


def test_evaluate_adds_sense_cg_and_l1_wavelet_per_file(synthetic_dir: Path, tmp_path: Path, capsys) -> None:
    import shutil
    import warnings

    from convexrecon.errors import DataWarning

    model = save_tiny_cnn(tmp_path / "model")
    common = ["--cache-dir", str(tmp_path / "cache")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out",
                     str(tmp_path / "r"), *common]) == 0
    capsys.readouterr()
    argv = ["evaluate", "--recon", str(tmp_path / "r"), "--data", str(synthetic_dir), *common]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "| SENSE-CG PSNR (dB) | SENSE-CG SSIM | L1-wavelet PSNR (dB) | L1-wavelet SSIM |" in first
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")[1:]]
            for line in first.splitlines() if line.startswith("| file_synth_")}
    assert len(rows) == 2
    for cells in rows.values():
        zero, cs = float(cells[4]), float(cells[9])
        assert cs > zero  # CS beats zero-filling on every file
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert "read from the cache" in second
    assert [line for line in second.splitlines() if line.startswith("| file_synth_")] == \
        [line for line in first.splitlines() if line.startswith("| file_synth_")]
    assert main([*argv, "--no-classical"]) == 0
    assert "L1-wavelet" not in capsys.readouterr().out
    shutil.rmtree(model)
    assert main(argv) == 0
    assert "(SENSE-CG and L1-wavelet columns skipped: the model" in capsys.readouterr().out


def _rescaled_copy(src: Path, dst: Path, factor: float | None) -> Path:
    """``src``'s files in ``dst``, their ``reconstruction_rss`` times ``factor`` (None: removed)."""
    import shutil

    import h5py

    dst.mkdir()
    for path in sorted(src.glob("*.h5")):
        shutil.copy(path, dst / path.name)
        with h5py.File(dst / path.name, "r+") as handle:
            if factor is None:
                del handle["reconstruction_rss"]
            else:
                handle["reconstruction_rss"][...] = handle["reconstruction_rss"][()] * factor
    return dst


def test_train_scores_against_the_files_rss_by_default_and_says_so(synthetic_dir: Path, tmp_path: Path,
                                                                    capsys) -> None:
    """One reference everywhere: `train` scores its tables against reconstruction_rss unless told otherwise; a
    reference scaled by 2 in the file moves every RSS score and no SENSE score."""
    scaled = _rescaled_copy(synthetic_dir, tmp_path / "scaled", 2.0)
    scores = {}
    for name, data, extra in (("rss", synthetic_dir, []), ("sense", synthetic_dir, ["--reference", "sense"]),
                              ("rss x2", scaled, []), ("sense x2", scaled, ["--reference", "sense"])):
        assert main(["train", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--out",
                     str(tmp_path / name), *TINY, *extra]) == 0
        out = capsys.readouterr().out
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["reference"] == name.split()[0]
        label = "the files' reconstruction_rss" if name.startswith("rss") else "the fully sampled SENSE target"
        assert f"validation slices and reference ({label})" in out
        assert f"reference: {summary['reference']} = " in out
        scores[name] = summary
    for key in ("val_psnr", "zero_filled_psnr", "l1_wavelet_psnr", "sense_cg_psnr"):
        assert scores["sense x2"][key] == pytest.approx(scores["sense"][key], abs=1e-6)  # SENSE ignores the file's RSS
        assert abs(scores["rss"][key] - scores["sense"][key]) > 1e-3  # two different references
        assert scores["rss x2"][key] < scores["rss"][key] - 3  # a reference at twice the scale: every score falls


def test_train_refuses_a_validation_file_without_rss_before_training(synthetic_dir: Path, tmp_path: Path,
                                                                     capsys) -> None:
    data = _rescaled_copy(synthetic_dir, tmp_path / "norss", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "m"),
              *TINY])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --reference: rss needs 'reconstruction_rss'; file_synth_0_0000.h5 has none (use --reference " \
           "sense)." in err
    assert not (tmp_path / "m" / "model.pt").exists()  # refused before training
    assert not any((tmp_path / "cache").rglob("*.npy"))  # and before any preprocessing
    assert main(["train", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "m"),
                 *TINY, "--reference", "sense"]) == 0  # the advice works
