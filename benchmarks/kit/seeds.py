"""Spread over seeds: the knee experiment's learned methods trained with several seeds (gates, initialisation, data
order), on the data, masks, preprocessing and classical rows of the first seed.

* :func:`seed_list` the seeds of a run; :func:`fixed_rule` the first seed's chosen (lr, weight decay) as a
  one-candidate rule, for the end-to-end baselines of later seeds;
* :func:`slim` what ``results.json`` keeps of a later seed's methods;
* :func:`spread` mean ± std over seeds per method;
* :func:`pooled_paired` a headline difference pooled over seeds: each slice's difference averaged over the seeds,
  then the paired Student-t interval over slices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from benchmarks.kit.configs import RuleConfig
from convexrecon.metrics import paired_difference

# the methods whose numbers depend on the seed; every other row (zero-filled, CS, cycle-spun CS, the CS ensemble
# mean) is computed once
FIRST_SEED_ONLY = ("peer_varnet",)  # trained with the first seed only (the external peer): no spread, no pooling
LEARNED = ("end_to_end", "layerwise_adam", "layerwise_convex", "layerwise_convex_relu", "unrolled_convex",
           "unrolled_end_to_end", "unrolled_layerwise_adam")
SLIM_KEYS = ("psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "psnr_slices", "train_seconds", "epochs", "converged",
             "iterations", "certified", "chosen")


def seed_list(first: int, count: int) -> list[int]:
    """``count`` consecutive seeds from ``first`` (the first one is the single-seed run's)."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"The 'seeds' parameter must be an int >= 1. Got {count!r} instead.")
    return [first + i for i in range(count)]


def fixed_rule(rule: RuleConfig, chosen: dict[str, Any], base_decay: float) -> RuleConfig:
    """``rule`` with one candidate: the lr the first seed chose and the decay factor of ``rule.decay_factors`` whose
    multiple of ``base_decay`` (the first seed's base weight decay) is nearest its chosen weight decay. Stopping,
    patience and the maximum of epochs stay the rule's."""
    wd = float(chosen["weight_decay"])
    factor = min(rule.decay_factors, key=lambda f: abs(f * base_decay - wd))
    return dataclasses.replace(rule, lrs=(float(chosen["lr"]),), decay_factors=(float(factor),), search="grid")


def slim(entry: dict[str, Any], methods: Sequence[str] = LEARNED) -> dict[str, dict[str, Any]]:
    """The scores, per-slice PSNRs, seconds and effort of ``entry``'s learned methods (no curves, no blocks)."""
    return {m: {k: entry[m][k] for k in SLIM_KEYS if k in entry[m]} for m in methods if m in entry}


def spread(per_seed: Sequence[dict[str, dict[str, Any]]], methods: Sequence[str] = LEARNED) -> dict[str, Any]:
    """Per method present in every seed: mean and sample std (ddof 1; 0 with one seed) over seeds of its mean
    PSNR and SSIM, its mean training seconds, its epochs / iterations per seed, and whether it converged / was
    certified in every seed."""
    out: dict[str, Any] = {}
    n = len(per_seed)
    for m in methods:
        rows = [s[m] for s in per_seed if m in s]
        if n == 0 or len(rows) != n:
            continue
        got: dict[str, Any] = {"seeds": n}
        for key in ("psnr", "ssim"):
            values = np.array([r[f"{key}_mean"] for r in rows], dtype=np.float64)
            got[f"{key}_mean"] = float(values.mean())
            got[f"{key}_std_seeds"] = float(values.std(ddof=1)) if n > 1 else 0.0
        got["train_seconds_mean"] = float(np.mean([r.get("train_seconds", 0.0) for r in rows]))
        for key in ("epochs", "iterations"):
            if all(key in r for r in rows):
                got[key] = [r[key] for r in rows]
        for key in ("converged", "certified"):
            if all(key in r for r in rows):
                got[key] = all(bool(r[key]) for r in rows)
        out[m] = got
    return out


def pooled_paired(per_seed: Sequence[dict[str, dict[str, Any]]], shared: dict[str, Any], a: str,
                  b: str) -> dict[str, Any] | None:
    """``a - b`` PSNR pooled over seeds: each validation slice's difference averaged over the seeds (a method not in
    a seed's entry, e.g. a classical row, takes its value from ``shared``), then the paired 95 % Student-t interval
    over slices (:func:`convexrecon.metrics.paired_difference`). Also the mean difference of each seed. None when a
    method lacks per-slice PSNRs in some seed or the counts differ.

    The interval's spread is the slices' after averaging over seeds: it says whether the seed-averaged methods differ
    on these slices, not how far one seed's result can fall.
    """
    def slices(name: str, seed_entry: dict[str, Any]) -> list[float] | None:
        return (seed_entry.get(name) or shared.get(name) or {}).get("psnr_slices")

    xs = [slices(a, s) for s in per_seed]
    ys = [slices(b, s) for s in per_seed]
    if not per_seed or any(v is None for v in xs + ys) or len({len(v) for v in xs + ys}) != 1 or len(xs[0]) < 2:
        return None
    x, y = np.mean(np.asarray(xs, dtype=np.float64), 0), np.mean(np.asarray(ys, dtype=np.float64), 0)
    got = paired_difference(x, y)
    seed_means = [float(np.mean(np.subtract(xi, yi))) for xi, yi in zip(xs, ys)]
    caveat = sorted({m for m in (a, b) for s in per_seed
                     if (s.get(m) or shared.get(m) or {}).get("converged") is False})
    text = (got.text() + f", per-slice means over {len(per_seed)} seeds; per-seed means "
            + ", ".join(f"{v:+.2f}" for v in seed_means) + " dB"
            + (f"; {', '.join(caveat)} not converged in some seed: not a finding" if caveat else ""))
    return {**got.to_dict(), "a": a, "b": b, "seeds": len(per_seed), "seed_means": seed_means, "text": text}
