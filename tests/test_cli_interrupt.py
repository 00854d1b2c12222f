"""Ctrl-C during `train`: one line naming the block to resume from, exit 130; the re-run says where it resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import convexrecon.cli.train as train_cli
from convexrecon.cli import main
from convexrecon.stack import layerwise

from .conftest import CROP

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
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

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

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_cli, "slice_problem", ctrl_c)
    with pytest.raises(SystemExit) as exit_:
        main(["prepare", "--data", str(synthetic_dir), "--crop", str(CROP), "--cache-dir", str(tmp_path / "c")])
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert "interrupted during preprocessing (the slices done stay cached); run the same command to resume" in err
    assert "Traceback" not in err
