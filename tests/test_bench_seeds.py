"""``benchmarks.kit.seeds`` and ``run_knee.later_seeds``: mean ± std over seeds on known numbers, headline
differences pooled over seeds on known data, the first seed's rule choice reused, the global random state kept."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import run_knee
from benchmarks.kit.configs import CONFIGS, RuleConfig
from benchmarks.kit.report import seed_lines
from benchmarks.kit.seeds import fixed_rule, pooled_paired, seed_list, slim, spread

T3 = 3.182446305284263  # Student t, 3 degrees of freedom, 0.975 quantile (tables)


def _row(psnr: float, ssim: float, seconds: float, **extra) -> dict:
    return {"psnr_mean": psnr, "ssim_mean": ssim, "train_seconds": seconds, **extra}


def test_spread_is_mean_and_sample_std_over_seeds() -> None:
    per_seed = [{"end_to_end": _row(30.0, 0.90, 1.0, epochs=10, converged=True),
                 "layerwise_convex": _row(25.0, 0.80, 2.0, iterations=5, certified=True)},
                {"end_to_end": _row(32.0, 0.92, 3.0, epochs=20, converged=False),
                 "layerwise_convex": _row(25.0, 0.80, 2.0, iterations=7, certified=True)},
                {"end_to_end": _row(34.0, 0.94, 5.0, epochs=30, converged=True),
                 "layerwise_convex": _row(25.0, 0.80, 2.0, iterations=6, certified=True)}]
    got = spread(per_seed)
    e2e = got["end_to_end"]
    assert e2e["psnr_mean"] == pytest.approx(32.0) and e2e["psnr_std_seeds"] == pytest.approx(2.0)
    assert e2e["ssim_mean"] == pytest.approx(0.92) and e2e["ssim_std_seeds"] == pytest.approx(0.02)
    assert e2e["train_seconds_mean"] == pytest.approx(3.0) and e2e["epochs"] == [10, 20, 30]
    assert e2e["converged"] is False and e2e["seeds"] == 3
    convex = got["layerwise_convex"]
    assert convex["psnr_std_seeds"] == 0.0 and convex["certified"] is True and convex["iterations"] == [5, 7, 6]
    # a method missing from one seed has no spread; one seed: std 0
    assert "end_to_end" not in spread(per_seed + [{"layerwise_convex": _row(25.0, 0.8, 2.0)}])
    assert spread(per_seed[:1])["end_to_end"]["psnr_std_seeds"] == 0.0


def test_pooled_paired_averages_each_slice_over_seeds_then_intervals_over_slices() -> None:
    per_seed = [{"unrolled_convex": {"psnr_slices": [1.0, 2.0, 3.0, 4.0]}},
                {"unrolled_convex": {"psnr_slices": [3.0, 4.0, 5.0, 6.0]}}]
    shared = {"cs_cycle_spun": {"psnr_slices": [0.0, 0.0, 0.0, 0.0]}}  # a classical row: from the first seed's entry
    got = pooled_paired(per_seed, shared, "unrolled_convex", "cs_cycle_spun")
    d = np.array([2.0, 3.0, 4.0, 5.0])  # per-slice means over the two seeds
    half = T3 * d.std(ddof=1) / 2.0
    assert got["mean"] == pytest.approx(3.5) and got["n"] == 4 and got["seeds"] == 2
    assert got["low"] == pytest.approx(3.5 - half) and got["high"] == pytest.approx(3.5 + half)
    assert got["seed_means"] == pytest.approx([2.5, 4.5])
    assert got["text"].startswith("+3.50 dB") and "no significant" not in got["text"]
    # an interval containing 0 reads "no significant difference"; a non-converged seed is flagged
    per_seed[1]["unrolled_convex"] = {"psnr_slices": [-1.0, -5.0, -2.0, -3.0], "converged": False}
    flat = pooled_paired(per_seed, shared, "unrolled_convex", "cs_cycle_spun")
    assert flat["low"] <= 0.0 <= flat["high"] and flat["text"].startswith("no significant difference")
    assert "not converged in some seed: not a finding" in flat["text"]
    # no per-slice values in one seed, or counts that differ: no difference
    assert pooled_paired(per_seed + [{"unrolled_convex": {}}], shared, "unrolled_convex", "cs_cycle_spun") is None
    short = [{"unrolled_convex": {"psnr_slices": [1.0, 2.0, 3.0]}}]
    assert pooled_paired(short, shared, "unrolled_convex", "cs_cycle_spun") is None


def test_fixed_rule_keeps_the_first_seeds_choice_and_the_stopping_rule() -> None:
    rule = RuleConfig(lrs=(1e-3, 3e-3, 1e-2), decay_factors=(1.0, 0.0, 10.0), search="lr_then_decay",
                      max_epochs=400, patience=20, rel_tol=1e-3)
    base = 2.1e-4
    got = fixed_rule(rule, {"lr": 3e-3, "weight_decay": 10 * base * (1 + 1e-9)}, base)
    assert got.lrs == (3e-3,) and got.decay_factors == (10.0,) and got.runs() == 1
    assert (got.max_epochs, got.patience, got.rel_tol) == (400, 20, 1e-3)
    assert fixed_rule(rule, {"lr": 1e-2, "weight_decay": 0.0}, base).decay_factors == (0.0,)


def test_seed_list_and_slim() -> None:
    assert seed_list(0, 3) == [0, 1, 2] and seed_list(5, 1) == [5]
    with pytest.raises(ValueError, match="'seeds'"):
        seed_list(0, 0)
    entry = {"end_to_end": {"psnr_mean": 1.0, "curve": [[0, 1]], "epochs": 3}, "zero_filled": {"psnr_mean": 0.0}}
    assert slim(entry) == {"end_to_end": {"psnr_mean": 1.0, "epochs": 3}}


def _fake_train_learned(calls: list):
    def train(entry, images, split, cfg, seed, data_cfg, device, lamda, shared, ckpt, models_dir, e2e_rules=None,
              peer=True):
        torch.rand(3), np.random.rand(3), random.random()  # consume the global random state
        assert not peer  # the external peer trains with the first seed only
        calls.append((seed, ckpt, e2e_rules))
        shared["unrolled_starts"] = "computed once"
        for k, m in enumerate(("end_to_end", "layerwise_convex", "unrolled_end_to_end")):
            entry[m] = {"psnr_mean": 30.0 + seed + k, "ssim_mean": 0.9, "train_seconds": 1.0,
                        "psnr_slices": [30.0 + seed + k, 31.0 + seed + k]}
        return {}
    return train


def test_later_seeds_reuse_the_first_choice_and_restore_the_random_state(monkeypatch, tmp_path: Path) -> None:
    cfg = CONFIGS["quick"]
    calls: list = []
    monkeypatch.setattr(run_knee, "train_learned", _fake_train_learned(calls))
    first = {"end_to_end": {"psnr_mean": 30.0, "ssim_mean": 0.9, "train_seconds": 1.0, "psnr_slices": [30.0, 31.0],
                            "rule_record": {"lr": 1e-2, "weight_decay": 0.0}},
             "layerwise_convex": {"psnr_mean": 31.0, "ssim_mean": 0.9, "train_seconds": 1.0,
                                  "psnr_slices": [31.0, 32.0], "blocks": [{"beta": 2.0, "num_pixels": 1000}]},
             "unrolled_end_to_end": {"psnr_mean": 32.0, "ssim_mean": 0.9, "train_seconds": 1.0,
                                     "psnr_slices": [32.0, 33.0], "weight_decay": 1e-5,
                                     "rule_record": {"lr": 1e-3, "weight_decay": 1e-5}},
             "cs_cycle_spun": {"psnr_mean": 29.0, "ssim_mean": 0.85, "psnr_slices": [29.0, 29.0]}}
    torch.manual_seed(7)
    expected = torch.rand(2)
    torch.manual_seed(7)
    got = run_knee.later_seeds(first, {}, cfg, [0, 1, 2], {}, torch.device("cpu"), 1e-3, {}, tmp_path, "poisson",
                               5.0)
    assert torch.equal(torch.rand(2), expected)  # the next mask's first seed sees a single-seed run's state
    assert [c[0] for c in calls] == [1, 2] and calls[0][1] == tmp_path / "checkpoints" / "poisson" / "seed1"
    e2e_rule, unrolled_rule = calls[0][2]
    assert e2e_rule.lrs == (1e-2,) and e2e_rule.decay_factors == (0.0,)
    assert unrolled_rule.lrs == (1e-3,) and unrolled_rule.decay_factors == (1.0,)
    assert got["seeds"] == [0, 1, 2] and set(got["per_seed"]) == {"1", "2"}
    assert got["spread"]["end_to_end"]["psnr_mean"] == pytest.approx(31.0)  # seeds 0, 1, 2: 30, 31, 32
    assert got["spread"]["end_to_end"]["psnr_std_seeds"] == pytest.approx(1.0)
    diff = {(d["a"], d["b"]): d for d in got["differences"]}
    # layerwise_convex − end_to_end per seed: first seed +1 on both slices, later seeds +1 (fake): mean +1, spread 0
    assert diff[("layerwise_convex", "end_to_end")]["seed_means"] == pytest.approx([1.0, 1.0, 1.0])
    # layerwise_convex per slice over seeds: [31, 32], [32, 33], [33, 34] -> [32, 33]; cycle-spun CS [29, 29]
    assert diff[("layerwise_convex", "cs_cycle_spun")]["mean"] == pytest.approx(3.5)
    lines = "\n".join(seed_lines({**first, "seeds": got}, {"mode": "quick", "total_seconds": 280.0}))
    assert "| end_to_end | 31.00 ± 1.00 |" in lines and "cs_cycle_spun | 29.00 (seed-independent)" in lines
    assert "within the quick mode's 5-minute budget" in lines


def test_seeds_flag_is_checked_and_scales_the_estimate(capsys) -> None:
    with pytest.raises(SystemExit):
        run_knee.main(["--quick", "--seeds", "0", "--estimate-only"])
    assert "argument --seeds: expected an integer >= 1. Got 0." in capsys.readouterr().err
    assert run_knee.main(["--quick", "--seeds", "1", "--estimate-only"]) == 0
    one = capsys.readouterr().out
    assert run_knee.main(["--quick", "--estimate-only"]) == 0  # the quick mode's 3 seeds
    three = capsys.readouterr().out

    def minutes(text: str) -> float:
        return float(text.split("estimated ")[1].split(" min")[0])

    assert CONFIGS["quick"].seeds == 3 and minutes(three) > minutes(one)
