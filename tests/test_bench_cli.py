"""The command-line benchmark (:mod:`benchmarks.cli_recommended`) reads `evaluate`'s table by column name."""

from __future__ import annotations

import pytest
from benchmarks.cli_recommended import TEST_SETS, VARIANTS, certified, mean_row
from convexrecon.cli.common import markdown_table


def test_mean_row_reads_the_mean_over_files_by_column_name() -> None:
    header = ["file", "slices", "model PSNR (dB)", "model SSIM", "SENSE-CG PSNR (dB)", "L1-wavelet PSNR (dB)", "role"]
    rows = [["a.h5", "2", "33.10", "0.9100", "30.00", "31.50", "unseen"],
            ["mean over 1 file(s)", "2", "33.10", "0.9100", "30.00", "31.50", "all"],
            ["slice-wise mean (data range per slice)", "2", "32.90", "0.9000", "29.80", "31.20", "all"]]
    output = "Reference: sense\n\n" + markdown_table(header, rows) + "\n\nrole: unseen"
    row = mean_row(output)
    assert row == {"slices": 2.0, "model PSNR (dB)": 33.10, "model SSIM": 0.91, "SENSE-CG PSNR (dB)": 30.0,
                   "L1-wavelet PSNR (dB)": 31.5}
    with pytest.raises(ValueError, match="mean over"):
        mean_row(markdown_table(header, rows[:1]))


def test_certified_quotes_trains_last_certificate_line_and_says_when_there_is_none() -> None:
    out = "stage 1: optimal\nEvery block the model keeps is certified: relative duality gap <= tol 0.001.\n"
    assert certified(out).startswith("Every block the model keeps is certified")
    assert certified("stage 1: max_iter\n") == "no certificate line printed"


def test_every_variant_changes_one_part_of_the_preset_or_drops_the_fallback() -> None:
    assert VARIANTS["recommended"] == ["--recommended"]
    assert all(v[0] == "--recommended" for k, v in VARIANTS.items() if k != "no-fallback")
    assert "--recommended" not in VARIANTS["no-fallback"]
    assert len({seed for _, _, seed in TEST_SETS.values()} | {0}) == len(TEST_SETS) + 1  # subjects apart
