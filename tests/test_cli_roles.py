"""``evaluate`` says of every file whether the model trained on it or validated on it."""

from __future__ import annotations

import json
import re

from convexrecon.cli import main
from convexrecon.stack.modelfiles import CONFIG_NAME

from .conftest import CROP

TINY = ["--mask", "poisson", "--crop", str(CROP), "--blocks", "1", "--kernel-size", "3", "--arrangements", "2",
        "--max-iter", "30", "--tol", "1e-2", "--patch-size", "8", "--patches-per-slice", "2", "--no-classical"]


def test_evaluate_rows_name_training_and_validation_files(synthetic_dir, tmp_path, capsys) -> None:
    model, recon = tmp_path / "model", tmp_path / "recon"
    assert main(["train", "--data", str(synthetic_dir), "--out", str(model), *TINY]) == 0
    config = json.loads((model / CONFIG_NAME).read_text())
    names = sorted(p.name for p in synthetic_dir.glob("*.h5"))
    assert config["split"] == {"training": names[1:], "validation": names[:1]}  # the first volume by name validates
    assert main(["reconstruct", "--model", str(model), "--data", str(synthetic_dir), "--out", str(recon)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--recon", str(recon), "--data", str(synthetic_dir), "--no-classical"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.strip("|").split("|")[-1].strip() for line in out.splitlines()
            if line.startswith("| ")}
    assert rows[names[0]] == "validation" and rows[names[1]] == "training" and rows["file"] == "role"
    assert rows["mean over 2 file(s)"] == "all"
    assert "training files were fitted and score optimistically" in out
    # a model without a recorded split: the column says it does not know
    del config["split"]
    (model / CONFIG_NAME).write_text(json.dumps(config))
    assert main(["evaluate", "--recon", str(recon), "--data", str(synthetic_dir), "--no-classical"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"\| {re.escape(names[0])} \|.*\| – \|$", out, re.M) and "records no training/validation split" in out
