"""Ctrl-C: one line, exit 130, no traceback, nothing half-written.

`train` names the block to resume from and the re-run says where it resumes; `reconstruct`, `evaluate` and
`prepare` name what they stopped in and what is complete, and the same command redoes the rest."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

import convexrecon.cli.train as train_cli
from convexrecon.cli import main
from convexrecon.stack import layerwise

from .conftest import CROP, SLICES, save_tiny_cnn


def ctrl_c(*args, **kwargs):
    """A stand-in for any step that the user interrupts."""
    raise KeyboardInterrupt

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--mask", "poisson", "--crop", str(CROP), "--blocks", "2", "--kernel-size", "3", "--arrangements", "2",
        "--max-iter", "30", "--tol", "1e-2", "--patch-size", "8", "--patches-per-slice", "2"]


def test_interrupt_names_the_block_and_the_rerun_resumes_after_it(synthetic_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    argv = ["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "model"),
            "--cache-dir", str(tmp_path / "cache"), *TINY]
    solve = layerwise._Stacker.solve

    def ctrl_c_in_block_2(self, i):
        if i == 1:
            raise KeyboardInterrupt
        return solve(self, i)

    monkeypatch.setattr(layerwise._Stacker, "solve", ctrl_c_in_block_2)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 130
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "interrupted" in line]
    assert lines == ["interrupted during block 2; run the same command to resume"]
    assert "Traceback" not in captured.err
    assert (tmp_path / "model" / "checkpoints" / "block_01.pt").is_file()

    monkeypatch.setattr(layerwise._Stacker, "solve", solve)
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["method"], summary["architecture"]) == ("layerwise_convex", "layerwise-cnn")
    assert f"resuming after block 1 (checkpoints in {tmp_path / 'model' / 'checkpoints'})" in out
    assert (tmp_path / "model" / "model.pt").is_file()


def test_interrupt_during_preprocessing_says_so(synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys) -> None:
    monkeypatch.setattr(train_cli, "SliceDataset", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(synthetic_dir), "--out", str(tmp_path / "model"),
              "--cache-dir", str(tmp_path / "cache"), *TINY])
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted during preprocessing (the slices done stay cached); run the same command to resume" in err
    assert not (tmp_path / "model").exists()  # nothing was written: the empty output directory is removed


def test_prepare_interrupt_is_one_line(synthetic_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys) -> None:
    import convexrecon.cli.prepare as prepare_cli

    monkeypatch.setattr(prepare_cli, "slice_problem", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--data", str(synthetic_dir), "--crop", str(CROP), "--cache-dir", str(tmp_path / "c")])
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert _interrupt_lines(err) == [
        "interrupted during the classical references (ESPIRiT maps of every slice); the preprocessed slices and the "
        "ESPIRiT maps done stay cached; run the same command to resume"]
    assert "Traceback" not in err


def _interrupt_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("interrupted")]


def test_prepare_interrupted_while_writing_the_synthetic_set_removes_its_files(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               capsys) -> None:
    import convexrecon.cli.prepare as prepare_cli

    make = prepare_cli.make_synthetic

    def ctrl_c_in_the_second_file(*args, only, **kwargs):
        if only == [1]:
            raise KeyboardInterrupt
        return make(*args, only=only, **kwargs)

    data = tmp_path / "data"
    argv = ["prepare", "--data", str(data), "--make-synthetic", "--volumes", "2", "--slices", "1", "--coils", "4",
            "--shape", "64", "45", "--crop", str(CROP), "--no-classical", "--cache-dir", str(tmp_path / "c")]
    monkeypatch.setattr(prepare_cli, "make_synthetic", ctrl_c_in_the_second_file)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert _interrupt_lines(err) == [
        "interrupted during writing the synthetic data set (file 2 of 2); the 1 complete file(s) it had written are "
        "removed; run the same command to redo it"]
    assert "Traceback" not in err
    assert sorted(p.name for p in data.iterdir()) == []  # no partial set for the re-run to keep
    monkeypatch.setattr(prepare_cli, "make_synthetic", make)
    assert main(argv) == 0
    assert len(list(data.glob("*.h5"))) == 2


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    """An untrained 1-block network saved with the config `train` writes (Poisson 4x, crop CROP)."""
    return save_tiny_cnn(tmp_path / "model")


def _files(directory: Path) -> list[str]:
    """Every file under ``directory``, hidden temporaries included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_reconstruct_interrupt_names_the_slice_and_the_complete_files(synthetic_dir: Path, tmp_path: Path, model: Path,
                                                                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import convexrecon.cli.reconstruct as reconstruct_cli

    names = sorted(p.name for p in synthetic_dir.glob("*.h5"))
    out = tmp_path / "recon"
    argv = ["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(out),
            "--crop", str(CROP), "--cache-dir", str(tmp_path / "cache")]
    real = reconstruct_cli.reconstruct_slice
    calls = []

    def ctrl_c_in_the_second_slice_of_the_second_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == SLICES + 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(reconstruct_cli, "reconstruct_slice", ctrl_c_in_the_second_slice_of_the_second_file)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert _interrupt_lines(err) == [
        f"interrupted during reconstruct of {names[1]} (slice 2 of {SLICES}, file 2 of 2); 1 of 2 output file(s) are "
        f"complete in {out} ({names[0]}); no partial file is left; run the same command to redo it (the ESPIRiT maps "
        f"done stay cached)"]
    assert "Traceback" not in err
    assert _files(out) == [names[0]]
    with h5py.File(out / names[0], "r") as handle:
        assert handle["reconstruction"].shape == (SLICES, CROP, CROP)

    monkeypatch.setattr(reconstruct_cli, "reconstruct_slice", real)
    assert main(argv) == 0
    assert _files(out) == names
    # the maps of the interrupted slice were done before its network ran
    assert f"ESPIRiT maps: {SLICES - 2} estimated, {SLICES + 2} reused from the cache" in capsys.readouterr().out


def test_reconstruct_interrupted_while_writing_leaves_no_partial_file(synthetic_dir: Path, tmp_path: Path,
                                                                      model: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys) -> None:
    name = sorted(p.name for p in synthetic_dir.glob("*.h5"))[0]
    out = tmp_path / "recon"
    create = h5py.Group.create_dataset

    def ctrl_c_between_datasets(self, key, *args, **kwargs):
        if key == "zero_filled":  # the reconstruction is already in the file
            raise KeyboardInterrupt
        return create(self, key, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", ctrl_c_between_datasets)
    with pytest.raises(SystemExit) as exit_:
        main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir / name), "--out", str(out),
              "--crop", str(CROP), "--cache-dir", str(tmp_path / "cache")])
    assert exit_.value.code == 130
    assert _interrupt_lines(capsys.readouterr().err) == [
        f"interrupted during reconstruct (writing {name}, file 1 of 1); no output file was written to {out}; run the "
        f"same command to redo it (the ESPIRiT maps done stay cached)"]
    assert not out.exists()  # the output directory this run created is removed, with no temporary left in it


def test_evaluate_interrupt_is_one_line(synthetic_dir: Path, tmp_path: Path, model: Path,
                                        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import convexrecon.cli.evaluate as evaluate_cli

    names = sorted(p.name for p in synthetic_dir.glob("*.h5"))
    out = tmp_path / "recon"
    assert main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    score = evaluate_cli.evaluate
    calls = []

    def ctrl_c_in_the_second_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the model's and zero-filling's scores of the first file are done
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    monkeypatch.setattr(evaluate_cli, "evaluate", ctrl_c_in_the_second_file)
    capsys.readouterr()
    argv = ["evaluate", "--recon", str(out), "--data", str(synthetic_dir), "--no-classical"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 130
    captured = capsys.readouterr()
    assert _interrupt_lines(captured.err) == [
        f"interrupted during evaluate (scoring {names[1]}, file 2 of 2); evaluate writes no file; the ESPIRiT maps "
        f"done stay cached; run the same command to redo it"]
    assert "Traceback" not in captured.err and "| file |" not in captured.out  # no partial table either
    monkeypatch.setattr(evaluate_cli, "evaluate", score)
    assert main(argv) == 0


def test_prepare_interrupted_while_preprocessing_says_what_train_says(synthetic_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import convexrecon.cli.prepare as prepare_cli

    monkeypatch.setattr(prepare_cli, "SliceDataset", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--data", str(synthetic_dir), "--crop", str(CROP), "--cache-dir", str(tmp_path / "c")])
    assert exit_.value.code == 130
    assert _interrupt_lines(capsys.readouterr().err) == [
        "interrupted during preprocessing (the slices done stay cached); run the same command to resume"]
