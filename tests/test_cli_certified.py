"""Unrolled stages are certified by default, and the advice printed for a block short of ``--tol`` certifies it."""

from __future__ import annotations

import json
import re

import pytest
from solvers.interior import MAX_ARRAY_NUMBERS, fits_gated_interior_point

from convexrecon.cli import main
from convexrecon.cli.summary import advice, largest_fitting_crop, stage_solver
from convexrecon.data.synthetic import make_synthetic
from convexrecon.stack.persist import load_network

ADVICE = re.compile(r"run the same command with ((?:--[a-z-]+ \S+ ?)+) and a new --out")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("certified")
    make_synthetic(root / "data", volumes=3, slices=2, coils=4, seed=0, shape=(64, 45), recon=(32, 32), snr=40.0)
    return root


def _train(root, out: str, flags: list[str], capsys) -> tuple[str, dict]:
    args = ["train", "--data", str(root / "data"), "--mask", "poisson", "--out", str(root / out), "--architecture",
            "unrolled", "--blocks", "2", "--crop", "32", "--kernel-size", "3", "--arrangements", "4", "--lambdas",
            "0.1", "1", "--device", "cpu", "--cache-dir", str(root / "cache"), "--no-classical", *flags]
    assert main(args) == 0
    captured = capsys.readouterr()
    return captured.out + captured.err, json.loads(captured.out.strip().splitlines()[-1])


def _with(flags: list[str], advised: list[str]) -> list[str]:
    """``flags`` with every advised flag set to its advised value (added where absent)."""
    flags = list(flags)
    for name, value in zip(advised[::2], advised[1::2]):
        if name in flags:
            flags[flags.index(name) + 1] = value
        else:
            flags += [name, value]
    return flags


@pytest.mark.parametrize("flags", [["--max-iter", "2"], ["--stage-solver", "fista", "--max-iter", "5"]],
                         ids=["interior-point-budget", "fista"])
def test_the_advice_on_an_uncertified_stage_certifies_it(data, flags, capsys) -> None:
    short, advised_out = f"short-{flags[1]}", f"advised-{flags[1]}"
    out, summary = _train(data, short, flags, capsys)
    assert "did NOT reach the relative duality gap" in out
    statuses = [s["status"] for s in load_network(data / short).config["stages"]]
    assert statuses != ["optimal", "optimal"]
    match = ADVICE.search(out)
    assert match, out
    advised = _with(flags, match.group(1).split())
    out, summary = _train(data, advised_out, advised, capsys)
    assert "Every block the model keeps is certified" in out and "did NOT reach" not in out
    stages = load_network(data / advised_out).config["stages"]
    assert [s["status"] for s in stages] == ["optimal", "optimal"]
    assert all(s["relative_gap"] <= 1e-3 for s in stages) and summary["stage_solver"] == "interior_point"


def test_candidate_solves_that_miss_tol_are_marked_as_selection(data, capsys, recwarn) -> None:
    out, _ = _train(data, "marked", ["--max-iter", "2"], capsys)
    shown = [str(w.message) for w in recwarn if w.category.__name__ == "ConvergenceWarning"]
    marked = [m for m in shown if m.startswith("selection (a β/λ candidate on the fit slices, not a block")]
    assert marked and all("fit_layer:" in m for m in marked)
    assert f"{len(marked)} candidate solve(s) of the β/λ selection did not reach tol" in out
    assert len(shown) - len(marked) == 2  # unmarked: the two stages the model keeps


def test_stage_solver_takes_the_interior_point_where_it_fits() -> None:
    small = stage_solver("auto", 4, 64, 11, 5, 8)
    assert small.method == "interior_point" and small.fits
    assert stage_solver("fista", 4, 64, 11, 5, 8).method == "fista"
    # 9 full-size slices: a 921,600 x 275 patch matrix; the interior point on the largest centre window that fits
    large = stage_solver("auto", 9, 320, 11, 5, 8)
    assert not large.fits and 9 * 320 * 320 * 275 > MAX_ARRAY_NUMBERS
    assert large.method == "interior_point" and large.window is not None and 16 <= large.window < 320
    assert fits_gated_interior_point(9 * large.window ** 2, 8, 275)
    assert not fits_gated_interior_point(9 * (large.window + 2) ** 2, 8, 275)
    assert "centre" in large.line() and f"{large.window}x{large.window} window" in large.line()
    assert stage_solver("interior-point", 9, 320, 11, 5, 8) == large
    # P d = 64 * 275 Newton unknowns exceed the limit at every window: FISTA, and interior-point is refused
    assert stage_solver("auto", 9, 320, 11, 5, 64).method == "fista"
    with pytest.raises(ValueError, match="--stage-solver"):
        stage_solver("interior-point", 9, 320, 11, 5, 64)


def test_advice_where_the_interior_point_does_not_fit_names_a_crop_that_fits() -> None:
    solver = stage_solver("fista", 9, 320, 11, 5, 8)
    side = largest_fitting_crop(solver, 320)
    assert fits_gated_interior_point(9 * side * side, 8, 275) and not fits_gated_interior_point(9 * (side + 2) ** 2, 8, 275)
    records = [{"block": 1, "solver": "fista", "status": "max_iter", "relative_gap": 0.042},
               {"block": 2, "solver": "fista", "status": "max_iter", "relative_gap": 0.023}]
    text = advice(records, 1e-3, 2000, solver, 320)
    assert "--tol 0.05 " in text and f"--crop {side} " in text
    # a gap above 10 % is no certificate worth accepting: only the crop is offered
    text = advice([{**records[0], "relative_gap": 0.54}], 1e-3, 400, solver, 320)
    assert "--tol" not in text and f"--crop {side}" in text
