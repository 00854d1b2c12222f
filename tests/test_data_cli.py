"""``python -m convexrecon prepare``: output and usage errors (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convexrecon.cli import main

SMALL = ["--coils", "6", "--shape", "64", "45", "--crop", "31", "--max-iter", "20", "--lambdas", "1e-3", "3e-3"]


def test_prepare_synthetic_prints_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    argv = ["prepare", "--data", str(data), "--make-synthetic", "--volumes", "2", "--slices", "1",
            "--json", str(tmp_path / "t.json"), *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "slice-wise" in out and "volume-wise" in out
    for method in ("zero-filled", "SENSE-CG", "L1-wavelet"):
        assert f"| {method} |" in out
    payload = json.loads((tmp_path / "t.json").read_text())
    # every file is scored; λ of each file chosen on the other one (leave-one-volume-out)
    assert payload["lambda_selection"] == "leave-one-volume-out" and payload["reference"] == "rss"
    assert sorted(payload["lambdas"]) == sorted(p.name for p in data.glob("*.h5"))
    assert set(payload["lambdas"].values()) <= {1e-3, 3e-3}
    assert payload["table"]["zero-filled"]["slice"]["psnr"]["n"] == 2
    assert not (data / ".cache").exists()  # the cache lives in the user cache directory
    assert len(list(data.glob("*.h5"))) == 2
    assert main(["prepare", "--data", str(data), "--no-classical", "--crop", "31"]) == 0  # reuses the cache


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mask", "radial"], "invalid choice"),
        (["--acceleration", "1"], "--acceleration"),
        (["--center-fraction", "1.5"], "--center-fraction"),
        (["--crop", "100"], "crop"),
    ],
)
def test_prepare_usage_errors(
    extra: list[str], message: str, synthetic_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--data", str(synthetic_dir), "--no-classical", *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_prepare_missing_or_empty_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path, words in ((tmp_path / "missing", "does not exist"), (tmp_path, "holds no .h5")):
        with pytest.raises(SystemExit) as exit_info:
            main(["prepare", "--data", str(path)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert words in err and "--make-synthetic" in err


def test_no_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
