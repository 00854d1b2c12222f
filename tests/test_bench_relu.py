"""``benchmarks/bench_relu.py`` end to end on a tiny block: every row, the degeneracy count, the Newton floor and the
Newton factorisation times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from solvers.interior import NEWTON_MATRIX_COPIES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "benchmarks.bench_relu"  # run as a module from ROOT: it imports benchmarks.kit


def test_tiny_block_rows_degeneracy_and_gram_time(tmp_path: Path) -> None:
    out = tmp_path / "relu"
    run = subprocess.run([sys.executable, "-m", SCRIPT, "--images", "1", "--size", "8", "--channels", "2", "--kernel", "3",
                          "--gates", "2", "--beta-ratio", "0.1", "--dtype", "float64", "--admm-max-iter", "4000",
                          "--alm-max-iter", "200", "--no-pdhg", "--newton-sizes", "50,120", "--name", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    saved = json.loads((out / "results.json").read_text())
    rows = {r["solver"]: r for r in saved["rows"]}
    assert set(rows) == {"gated", "relu admm", "relu alm", "relu auto"}
    assert rows["relu alm"]["method"] == "augmented_lagrangian" and rows["relu alm"]["iterations"] <= 200
    auto = rows["relu auto"]
    assert auto["method"] == "interior_point" and auto["status"] == "optimal"
    # the exact optimum lies above the gated one (a relaxation): every certified exact dual is below the exact primal
    assert rows["gated"]["dual"] <= auto["primal"] * (1 + 1e-9)
    a = auto["active_constraints"]
    assert a["d"] == 2 * 3 * 3 and a["neurons"] >= 1
    assert 0 <= a["min"] <= a["p10"] <= a["median"] <= a["max"] <= 64  # rows at equality, of n = 64 patches
    assert saved["meta"]["data_gram_seconds"] > 0
    newton = saved["meta"]["newton"]
    assert [r["unknowns"] for r in newton] == [50, 120] and newton[1]["matrix_bytes"] == 8 * NEWTON_MATRIX_COPIES * 120 * 120
    assert all(r["float64_seconds"] > 0 and r["float32_seconds"] > 0 for r in newton)
    table = (out / "results.md").read_text()
    assert "Degeneracy of the exact optimum" in table and "Forming the data Gram matrix" in table
    assert "| 120 | " in table


def test_bad_alm_budget_names_the_option(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", SCRIPT, "--alm-max-iter", "-3", "--name", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 2 and "--alm-max-iter must be >= 0; got -3" in run.stderr
    assert not (tmp_path / "x").exists()
