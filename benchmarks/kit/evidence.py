"""What the knee tables need to be read fairly: cycle-spun CS (the strongest classical row), per-method effort
(epochs or solver iterations, seconds, converged or certified), paired per-slice differences with intervals, and
the held-out loss curves of the Adam baselines."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from benchmarks.kit.configs import KneeConfig
from convexrecon.data.splits import holdout_mask
from convexrecon.metrics import paired_difference, score_slices, slice_psnr
from convexrecon.mri.consistency import crop_center
from convexrecon.mri.fft import complex_to_channels
from convexrecon.mri.sense import sense_adjoint
from convexrecon.mri.sparsity import CYCLE_SHIFTS, l1_wavelet_fista
from convexrecon.stack.unrolled import UnrolledNet

CS_SHIFTS = CYCLE_SHIFTS  # grid shifts of cycle-spun CS (convexrecon.mri.sparsity), the first cfg.cs_shifts used


def fista_images(part: dict[str, Any], lamda: float, iterations: int, shifts: tuple) -> torch.Tensor:
    """Cropped 2-channel CS images of every slice of ``part`` (λ relative to each slice's max |zero-filled|)."""
    d = part["data"]
    rho = crop_center(sense_adjoint(d.kspace, d.maps, d.mask), d.crop).abs().flatten(1).amax(1)
    x = l1_wavelet_fista(d.kspace, d.maps, d.mask, lamda, iterations, scale=rho, shifts=list(shifts))
    return complex_to_channels(crop_center(x, d.crop)).float().cpu()


def cycle_spun_cs(split: dict[str, Any], cfg: KneeConfig) -> tuple[dict[str, Any], torch.Tensor]:
    """Cycle-spun L1-wavelet CS (:func:`convexrecon.mri.sparsity.l1_wavelet_fista` averaged over
    ``cfg.cs_shifts`` wavelet grids, ``cfg.cs_max_iter`` FISTA steps), λ (× each slice's max |zero-filled|) chosen
    from ``cfg.cs_lambdas`` by the mean PSNR on the held-out training volume; the validation entry and images."""
    start = time.perf_counter()
    tr, va = split["train"], split["val"]
    held = holdout_mask(tr["volumes"], cfg.holdout_volumes)
    index = torch.nonzero(held).flatten()
    part = {"data": tr["data"].subset(index)}
    shifts = CS_SHIFTS[:cfg.cs_shifts]
    lambda_scores = {}
    for lam in cfg.cs_lambdas:
        pred = fista_images(part, float(lam), cfg.cs_max_iter, shifts)
        lambda_scores[float(lam)] = score_slices(tr["targets"][index], pred, tr["scales"][index],
                                                 [tr["volumes"][i] for i in index])["psnr"].mean
    lamda = max(lambda_scores, key=lambda_scores.__getitem__)
    images = fista_images(va, lamda, cfg.cs_max_iter, shifts)
    entry = {**slice_scores(va, images), "lambda": lamda, "lambda_scores": lambda_scores, "shifts": len(shifts),
             "iterations": cfg.cs_max_iter, "train_seconds": 0.0, "peak_memory_bytes": 0,
             "seconds": time.perf_counter() - start}
    return entry, images


def model_scores(model: Any, part: dict[str, Any], initial: Any = None) -> dict[str, Any]:
    """:func:`slice_scores` of a layer-wise CNN or an unrolled network on ``part`` (``initial``: the unrolled
    network's start and CS images of ``part``, computed once for several networks of one architecture)."""
    with torch.no_grad():
        if isinstance(model, UnrolledNet):
            predictions = model.predict(part["data"], initial=initial).cpu()
        elif getattr(model, "needs_measurements", False):  # e.g. the external peer (benchmarks.kit.peer)
            predictions = model.predict(part["data"]).cpu()
        else:
            weight = next(model.parameters())
            predictions = model.predict(part["inputs"].to(weight.device, weight.dtype)).cpu()
    return slice_scores(part, predictions)


def slice_scores(part: dict[str, Any], predictions: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """PSNR/SSIM mean ± std over the slices of ``part`` and every slice's PSNR (for paired differences)."""
    result = score_slices(part["targets"][:len(predictions)], predictions, part["scales"][:len(predictions)],
                          part["volumes"][:len(predictions)])
    return {"psnr_mean": result["psnr"].mean, "psnr_std": result["psnr"].std, "ssim_mean": result["ssim"].mean,
            "ssim_std": result["ssim"].std,
            "psnr_slices": slice_psnr(part["targets"][:len(predictions)], predictions,
                                      part["scales"][:len(predictions)]).tolist()}


# ---- effort: epochs or iterations, seconds, converged or certified -----------------------------------------------

def convex_effort(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Solver iterations (summed over blocks/stages) and whether every solve is certified (status ``optimal``; an
    identity stage, kept by the held-out selection, has no program to certify)."""
    return {"iterations": int(sum(r.get("iterations") or 0 for r in records)),
            "certified": all(r.get("status") == "optimal" or bool(r.get("identity")) for r in records)}


def adam_effort(rules: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs of the chosen runs (summed over blocks/stages), their chosen lr/decay, and whether all converged."""
    return {"epochs": int(sum(r["epochs"] for r in rules)), "converged": all(r["converged"] for r in rules),
            "chosen": [{"lr": r["lr"], "weight_decay": r["weight_decay"], "epochs": r["epochs"],
                        "best_epoch": r["best_epoch"], "converged": r["converged"]} for r in rules],
            "rule_seconds": float(sum(r["seconds"] for r in rules))}


def effort_cell(entry: dict[str, Any]) -> tuple[str, str]:
    """The table's "epochs / iterations" and "converged / certified" cells of a results entry."""
    if "epochs" in entry:
        return f"{entry['epochs']} ep", "yes" if entry["converged"] else "**no** (max epochs)"
    if "iterations" in entry and "certified" in entry:
        return f"{entry['iterations']} it", "certified" if entry["certified"] else "**not certified**"
    if "iterations" in entry:
        return f"{entry['iterations']} it", "—"
    return "—", "—"


def curve_of(rules: list[dict[str, Any]]) -> list[list[float]]:
    """``[seconds, held-out loss]`` points of the chosen runs, blocks/stages one after another (each block's own
    objective: the network truncated there)."""
    points, offset = [], 0.0
    for r in rules:
        for c in r["curve"]:
            points.append([offset + c["seconds"], c["held_loss"]])
        offset += r["curve"][-1]["seconds"]
    return points


# ---- paired differences -------------------------------------------------------------------------------------------

def paired(entry: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
    """``a - b`` PSNR per validation slice with a 95 % Student-t interval over slices (None when either lacks
    per-slice values or they differ in count); ``text`` says "no significant difference" when it contains 0."""
    x, y = (entry.get(a) or {}).get("psnr_slices"), (entry.get(b) or {}).get("psnr_slices")
    if not x or not y or len(x) != len(y) or len(x) < 2:
        return None
    got = paired_difference(x, y)
    caveat = [m for m in (a, b) if entry[m].get("converged") is False]
    text = got.text() + (f"; {', '.join(caveat)} not converged: not a finding" if caveat else "")
    return {**got.to_dict(), "a": a, "b": b, "text": text}
