"""benchmarks/bench_recon.py: the phases of a saved unrolled model's inference, and the side-by-side timing of its
CS images with other numbers of wavelet-grid shifts (outside the sum of the phases)."""

import json

import pytest

from benchmarks import bench_recon
from tests.test_unrolled_input_cache import data_file, tiny_unrolled  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_phases_and_side_by_side_shifts(data_file, tmp_path):  # noqa: F811
    net = tiny_unrolled(cs_shifts=2)
    net.save(tmp_path / "model")
    out = tmp_path / "cost"
    results = bench_recon.main(["--model", str(tmp_path / "model"), "--data", str(data_file), "--slices", "2",
                                "--no-end-to-end", "--cs-shifts", "1", "4", "--out", str(out)])
    seconds = results["seconds_per_slice"]
    assert results["slices"] == 2 and results["kspace_shape"][0] == 4
    side = {k: v for k, v in seconds.items() if k.startswith("(side by side)")}
    assert set(side) == {"(side by side) CS images with cs_shifts=1", "(side by side) CS images with cs_shifts=4"}
    assert all(v > 0 for v in seconds.values())
    table = (out / "results.md").read_text()
    phases = sum(v for k, v in seconds.items() if not k.startswith("(side by side)"))
    assert f"| sum of the phases | {phases:.2f} |" in table
    assert json.loads((out / "results.json").read_text())["slices"] == 2
