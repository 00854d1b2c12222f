"""The knee experiment's out-of-distribution protocol (:mod:`benchmarks.kit.shift`) and the noise-relative CS weights
of its unrolled network (:func:`benchmarks.kit.methods.unrolled_options`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from benchmarks.kit.configs import CONFIGS, QUICK_SET, Condition, shifted
from benchmarks.kit.data import anatomy_slices
from benchmarks.kit.methods import noise_ratio, unrolled_options
from benchmarks.kit.shift import CLASSICAL, CS_GRID, RECOMMENDED, condition_root, score_condition, write_conditions
from convexrecon.stack.unrolled import UnrolledNet, dc_reference


def test_the_protocol_covers_family_snr_above_and_below_and_coils() -> None:
    conditions = shifted(QUICK_SET)
    assert {(c.anatomy, c.snr, c.coils) for c in conditions} == {
        ("brain", 25.0, 6), ("brain", 100.0, 6), ("knee", 100.0, 6), ("knee", 10.0, 6), ("knee", 25.0, 12)}
    assert len({c.name for c in conditions}) == len(conditions)
    for name, cfg in CONFIGS.items():
        assert cfg.conditions, name
        assert {c.anatomy for c in cfg.conditions} == {"knee", "brain"}
        assert min(c.snr for c in cfg.conditions) < cfg.synthetic.snr < max(c.snr for c in cfg.conditions)
        assert any(c.coils != cfg.synthetic.coils for c in cfg.conditions)
    roots = {condition_root(Path("out"), CONFIGS["quick"], i, c) for i, c in enumerate(conditions)}
    assert len(roots) == len(conditions)


@pytest.fixture(scope="module")
def part(tmp_path_factory):
    """Every slice of a tiny brain-family set at SNR 100 (two slices, 4 coils), preprocessed as run_knee does."""
    out = tmp_path_factory.mktemp("shift")
    tiny = dataclasses.replace(CONFIGS["quick"], crop=32, cs_max_iter=10, cs_shifts=2,
                               synthetic=dataclasses.replace(QUICK_SET, shape=(64, 48), slices=2, coils=4),
                               conditions=(Condition(name="brain, SNR 100", anatomy="brain", snr=100.0, coils=4),))
    (root,) = write_conditions(out, tiny, seed=0, workers=1)
    assert write_conditions(out, tiny, seed=0, workers=1) == [root]  # written once
    return tiny, anatomy_slices(root, "poisson", tiny, 0, out / "cache")


def test_classical_rows_choose_the_oracle_lambda_and_name_the_best(part) -> None:
    cfg, data = part
    sense_start = UnrolledNet([], cfg.crop, False, sense_start=True)  # no stages: returns its SENSE-CG start
    entry = score_condition(data, cfg, {RECOMMENDED: sense_start})
    assert entry["cs_l1_wavelet"]["lambda"] in CS_GRID and entry["cs_cycle_spun"]["lambda"] == entry["cs_l1_wavelet"]["lambda"]
    best = entry["best_classical"]
    assert best in CLASSICAL and all(entry[best]["psnr_mean"] >= entry[m]["psnr_mean"] for m in CLASSICAL)
    # the network that returns SENSE-CG scores exactly the SENSE-CG row, and its paired difference to the best row
    # is the difference of the two rows
    assert entry[RECOMMENDED]["psnr_mean"] == pytest.approx(entry["sense_cg"]["psnr_mean"], abs=1e-4)
    versus = entry["versus_best_classical"][RECOMMENDED]
    assert versus["mean"] == pytest.approx(entry["sense_cg"]["psnr_mean"] - entry[best]["psnr_mean"], abs=1e-4)
    assert versus["low"] <= versus["mean"] <= versus["high"]


def test_noise_relative_weights_are_the_cs_lambda_at_the_training_ratio(part) -> None:
    cfg, data = part
    ratio = noise_ratio(data["data"])
    assert ratio > 1
    u = dataclasses.replace(cfg.unrolled, cs_relative="noise", sense_input=True, dc_relative="noise")
    reference = dc_reference(data["data"])
    options = unrolled_options(u, 0.01, ratio, reference)
    assert options["cs_lambda"] == pytest.approx(0.01 * ratio) and options["cs_relative"] == "noise"
    assert options["sense_input"] is True and options["dc_noise"] == reference > 0
    assert options["cs_inputs"][0][0] == pytest.approx(options["cs_lambda"] * u.cs_inputs[0][0])
    with pytest.raises(ValueError, match="noise ratio"):
        unrolled_options(u, 0.01, None, reference)
    with pytest.raises(ValueError, match="relative noise level"):
        unrolled_options(u, 0.01, ratio, None)
    with pytest.raises(ValueError, match="'fixed' or 'noise'"):
        unrolled_options(dataclasses.replace(u, dc_relative="sometimes"), 0.01, ratio, reference)
    # the CS weights shrink on cleaner scans on the masks named in cs_clean only (the configurations: Poisson)
    assert options["cs_noise"] == 0.0  # no mask given
    assert unrolled_options(u, 0.01, ratio, reference, "lines")["cs_noise"] == 0.0
    assert unrolled_options(u, 0.01, ratio, reference, "poisson")["cs_noise"] == reference
    assert CONFIGS["default"].unrolled.cs_clean == ("poisson",)
    with pytest.raises(ValueError, match="relative noise level"):
        unrolled_options(u, 0.01, ratio, None, "poisson")
    with pytest.raises(ValueError, match="sequence of mask names"):
        unrolled_options(dataclasses.replace(u, cs_clean="poisson"), 0.01, ratio, reference, "poisson")
