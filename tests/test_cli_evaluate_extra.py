"""``evaluate`` on files that one reference cannot score: one instruction that works, never a circle."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from convexrecon.cli import main
from convexrecon.errors import DataWarning

from .conftest import CROP, SHAPE, save_tiny_cnn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return save_tiny_cnn(tmp_path / "model")


def _without_rss(src: Path, dst: Path) -> str:
    """A fully sampled copy of ``src`` in ``dst`` without 'reconstruction_rss'."""
    shutil.copy(src, dst / src.name)
    with h5py.File(dst / src.name, "r+") as handle:
        del handle["reconstruction_rss"]
    return src.name


def _undersampled(src: Path, dst: Path) -> str:
    """A copy of ``src`` in ``dst`` whose k-space keeps every 4th column and a centre band of 9 (challenge style)."""
    columns = np.zeros(SHAPE[1], bool)
    columns[::4] = True
    columns[SHAPE[1] // 2 - 4:SHAPE[1] // 2 + 5] = True
    shutil.copy(src, dst / src.name)
    with h5py.File(dst / src.name, "r+") as handle:
        kspace = handle["kspace"][()]
        kspace[..., ~columns] = 0
        handle["kspace"][...] = kspace
    return src.name


def _reconstruct(model: Path, data: Path, out: Path, cache: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        assert main(["reconstruct", "--model", str(model), "--data", str(data), "--out", str(out),
                     "--cache-dir", str(cache)]) == 0


def _evaluate(recon: Path, data: Path, reference: str, cache: Path) -> list[str]:
    return ["evaluate", "--recon", str(recon), "--data", str(data), "--reference", reference, "--no-classical",
            "--cache-dir", str(cache)]


def test_a_file_without_rss_gets_one_instruction_that_works(synthetic_dir: Path, tmp_path: Path, model: Path,
                                                            capsys) -> None:
    first, second = sorted(synthetic_dir.glob("*.h5"))
    data, recon, cache = tmp_path / "data", tmp_path / "recon", tmp_path / "cache"
    data.mkdir()
    lacking = _without_rss(first, data)
    shutil.copy(second, data / second.name)
    _reconstruct(model, data, recon, cache)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(_evaluate(recon, data, "rss", cache))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert (f"argument --reference: rss needs a 'reconstruction_rss' dataset, which {lacking} lacks. Run the same "
            f"command with --reference sense, which scores every file.") in err
    # the advice, run: it scores every file, with the reference convention and each file's role printed
    assert main(_evaluate(recon, data, "sense", cache)) == 0
    out = capsys.readouterr().out
    assert "Reference: sense = the fully sampled SENSE image" in out
    header = next(line for line in out.splitlines() if line.startswith("| file |"))
    assert header.rstrip(" |").endswith("role")
    rows = [line for line in out.splitlines() if line.startswith(f"| {lacking} |") or
            line.startswith(f"| {second.name} |")]
    assert len(rows) == 2 and all(row.rstrip(" |").endswith("–") for row in rows)  # an untrained model: no split


def test_no_single_reference_names_the_two_groups_and_each_run_works(synthetic_dir: Path, tmp_path: Path,
                                                                    model: Path, capsys) -> None:
    first, second = sorted(synthetic_dir.glob("*.h5"))
    data, recon, cache = tmp_path / "data", tmp_path / "recon", tmp_path / "cache"
    data.mkdir()
    full = _without_rss(first, data)
    under = _undersampled(second, data)
    _reconstruct(model, data, recon, cache)
    capsys.readouterr()
    for reference, other in (("rss", "sense"), ("sense", "rss")):
        with pytest.raises(SystemExit) as exit_:
            main(_evaluate(recon, data, reference, cache))
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "no one reference scores every file" in err
        groups = {"rss": under, "sense": full}
        assert (f"{groups[other]} with --reference {other}; {groups[reference]} with --reference {reference}."
                in err.replace("\n", " "))
    # the advice, run: one directory per group
    for reference, name in (("sense", full), ("rss", under)):
        group = tmp_path / f"recon-{reference}"
        group.mkdir()
        shutil.copy(recon / name, group / name)
        assert main(_evaluate(group, data, reference, cache)) == 0
        assert f"| {name} |" in capsys.readouterr().out
