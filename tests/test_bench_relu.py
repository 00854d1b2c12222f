"""``benchmarks/bench_relu.py`` end to end on tiny blocks: every row (cold and warm), the side-by-side table, the
degeneracy count, the Newton floor and the Newton factorisation times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_relu import SIDE_BY_SIDE
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
    assert set(rows) == {"gated", "relu admm", "relu admm warm", "relu alm", "relu auto", "relu auto warm"}
    assert rows["relu admm"]["start"] == "cold" and rows["relu auto warm"]["start"] == "gated"
    for name in ("relu admm warm", "relu auto warm"):  # warm rows carry their gated solve, counted in their seconds
        warm = rows[name]["warm_start"]
        assert warm["gated_iterations"] > 0 and 0 < warm["gated_seconds"] <= rows[name]["seconds"]
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


def test_side_by_side_table_on_a_tiny_relu_feature_block(tmp_path: Path) -> None:
    out = tmp_path / "issue"
    run = subprocess.run([sys.executable, "-m", SCRIPT, "--block", "relu-features", "--images", "1", "--size", "7",
                          "--width", "6", "--channels", "2", "--kernel", "3", "--gates", "2", "--beta", "0.05",
                          "--dtype", "float64", "--admm-max-iter", "2000", "--no-pdhg", "--auto-tol", "1e-4", "--screening",
                          "--name", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    saved = json.loads((out / "results.json").read_text())
    meta, rows = saved["meta"], {r["solver"]: r for r in saved["rows"]}
    assert meta["block"] == "relu-features" and meta["n"] == 42 and meta["beta"] == 0.05 and meta["beta_given"]
    assert set(rows) == {"gated", "relu admm", "relu admm warm", "relu auto", "relu auto warm"}
    table = (out / "results.md").read_text()
    header = "| " + " | ".join(SIDE_BY_SIDE) + " |"
    assert header in table
    assert all(name in SIDE_BY_SIDE for name in ("seconds", "× gated", "iterations", "rel. gap", "violation", "status"))
    lines = table[table.index(header):].splitlines()[2:7]
    assert [line.split(" | ")[0].lstrip("| ") for line in lines] == ["gated", "relu admm", "relu admm warm",
                                                                     "relu auto", "relu auto warm"]
    gated_seconds = rows["gated"]["seconds"]
    for line in lines:  # each row: its own seconds and their ratio to the gated solve's
        cells = [c.strip() for c in line.split("|")[1:-1]]
        row = rows[cells[0]]
        assert len(cells) == len(SIDE_BY_SIDE) and cells[7] == row["status"] and int(cells[4]) == row["iterations"]
        assert float(cells[3]) == round(row["seconds"] / gated_seconds, 1)
        screen = row["screening"]  # safe: never drops an arrangement the (near-)optimal block uses
        assert cells[9] == f"{screen['dropped']} / {screen['active']} / 2" and screen["dropped"] + screen["active"] <= 2
        assert screen["gap"] >= 0 and screen["radius"] == pytest.approx((2 * screen["gap"]) ** 0.5)


def test_width_needs_the_relu_feature_block(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", SCRIPT, "--width", "7", "--name", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert run.returncode == 2 and "--width needs --block relu-features" in run.stderr
