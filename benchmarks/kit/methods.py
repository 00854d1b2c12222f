"""The knee experiment's methods: scores, L1-wavelet CS, the layer-wise CNN (convex, exact ReLU) with its two Adam
baselines, and the unrolled network with data consistency (convex, Adam end to end, Adam layer-wise).

Every trainer of the benchmarks is called here, with the settings of a :class:`~benchmarks.kit.configs.KneeConfig`
on a split of :mod:`benchmarks.kit.data`.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from benchmarks.kit.configs import KneeConfig, RuleConfig, UnrolledConfig, hidden_width
from benchmarks.kit.evidence import slice_scores
from convexrecon.block.guard import fit_memory_terms
from convexrecon.data.splits import holdout_mask
from convexrecon.metrics import score_slices
from convexrecon.mri.classical import choose_lambda, l1_wavelet
from convexrecon.mri.consistency import crop_center
from convexrecon.mri.fft import complex_to_channels
from convexrecon.mri.sparsity import DEFAULT_WAVE
from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import BlockSettings, train_layerwise
from convexrecon.stack.network import ReconNet
from convexrecon.stack.unrolled import dc_reference, relative_noise
from convexrecon.stack.unrolled_train import stage_checkpoint
from convexrecon.stack import (UnrolledNet, initial_estimates, train_unrolled, train_unrolled_end_to_end,
                               train_unrolled_layerwise_adam, unrolled_plain)


# ---- scores and memory --------------------------------------------------------------------------

def scores(targets: torch.Tensor, predictions: torch.Tensor | np.ndarray, scales: torch.Tensor,
           volumes: list[str]) -> dict[str, float]:
    """Slice-wise PSNR/SSIM mean ± std at physical scale (:func:`convexrecon.metrics.score_slices`)."""
    result = score_slices(targets, predictions, scales, volumes, "slice")
    return {"psnr_mean": result["psnr"].mean, "psnr_std": result["psnr"].std,
            "ssim_mean": result["ssim"].mean, "ssim_std": result["ssim"].std}


def convex_solve_bytes(input_shape: tuple[int, ...], num_arrangements: int, kernel_size: int, activation: str,
                       gate_chunk: int | None = None, num_outputs: int = 2, device: str = "cpu") -> int:
    """The library's own estimate of one float32 ``fit_layer`` solve's big buffers on ``device``'s kind, summed
    (on ``"cuda"`` without the CPU's unfolded patches; no GPU is needed to count)."""
    return sum(fit_memory_terms(tuple(input_shape), num_outputs, num_arrangements, kernel_size,
                                relu=activation == "relu", chunk_size=None, dtype=torch.float32,
                                gate_chunk=gate_chunk, device=device).values())


def convex_solver_bytes(records: list[dict[str, Any]], cfg: KneeConfig) -> int:
    """The library's memory estimate (:func:`convexrecon.block.guard.fit_memory_terms`) of the largest convex
    block solve of a run, from its block records."""
    side = cfg.patch_size or cfg.crop
    return max(convex_solve_bytes((r["num_patches"], 2 if i == 0 else records[i - 1]["width"], side, side),
                                  cfg.num_arrangements, cfg.kernel_size, cfg.activation)
               for i, r in enumerate(records))


# ---- L1-wavelet CS ------------------------------------------------------------------------------

def cs_predictions(split: dict[str, Any], cfg: KneeConfig,
                   lamda: float | None = None) -> tuple[np.ndarray, float, dict[float, float]]:
    """L1-wavelet CS on the validation slices' problems (:func:`benchmarks.kit.data.measured_split`: no second
    ESPIRiT run), λ chosen on the first training slices (or the given ``lamda``)."""
    lambda_scores: dict[float, float] = {}
    if lamda is None:
        tune = split["train"]["problems"][: cfg.cs_lambda_slices]
        lamda, lambda_scores = choose_lambda(tune, list(cfg.cs_lambdas), cfg.cs_max_iter,
                                             where=f"on the first {len(tune)} training slice(s)")
    problems = split["val"]["problems"][: cfg.cs_val_slices]
    workers = min(len(problems), os.cpu_count() or 1)
    if workers > 1:  # one process per slice (sigpy's L1-wavelet is single-threaded numpy)
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing  # spawn: forked children of a process that ran torch's thread pool can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            preds = list(pool.map(_cs_slice, [(p, lamda, cfg.cs_max_iter) for p in problems]))
    else:
        preds = [l1_wavelet(p, lamda, cfg.cs_max_iter) for p in tqdm(problems, desc="L1-wavelet CS", unit="slice")]
    return np.stack(preds), lamda, lambda_scores


def _cs_slice(job: tuple) -> np.ndarray:
    problem, lamda, max_iter = job
    return l1_wavelet(problem, lamda, max_iter)


# ---- the layer-wise CNN and its Adam baselines ---------------------------------------------------

def train_convex(split: dict[str, Any], cfg: KneeConfig, ckpt: Path, seed: int,
                 data_cfg: dict[str, Any], device: Any = None) -> tuple[Any, float, list]:
    """Convex layer-wise training on ``split``; returns the result, solve seconds and caught warnings."""
    tr, va = split["train"], split["val"]
    ratios = cfg.beta_ratios
    settings = [BlockSettings(kernel_size=cfg.kernel_size, num_arrangements=cfg.num_arrangements,
                              activation=cfg.activation, beta_ratio=cfg.beta_ratio,
                              beta_ratios=None if ratios is None else tuple(ratios),
                              gate_sampling=cfg.gate_sampling, tol=cfg.tol,
                              max_iter=cfg.max_iter)] * cfg.blocks
    holdout = None if ratios is None else holdout_mask(tr["volumes"], cfg.holdout_volumes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convex = train_layerwise(tr["inputs"], tr["targets"], settings, val_inputs=va["inputs"],
                                 val_targets=va["targets"], val_scales=va["scales"], val_volumes=va["volumes"],
                                 patch_size=cfg.patch_size, patches_per_slice=cfg.patches_per_slice,
                                 seed=seed, chunk_size=4, solve_chunk_size=cfg.solve_chunk_size,
                                 checkpoint_dir=ckpt, progress=True, config=data_cfg, holdout=holdout,
                                 device=device, allow_tf32=cfg.allow_tf32)
    return convex, sum(r["seconds"] for r in convex.records), list(caught)


def train_end_to_end_baseline(split: dict[str, Any], cfg: KneeConfig, decays: list[float], ckpt: Path,
                              seed: int, data_cfg: dict[str, Any], device: Any = None,
                              snapshot_seconds: float | None = None,
                              rule: RuleConfig | None = None) -> tuple[ReconNet, float, dict[str, Any] | None]:
    """The same architecture trained end to end by Adam.

    With ``cfg.rule`` the library's training rule trains it (lr and weight decay ``{factors} x d`` chosen on the
    held-out training volume, early stopping, best checkpoint; ``rule`` replaces ``cfg.rule`` for this network
    alone, e.g. a later seed's one-candidate rule); the selection record is then
    ``{"rule": RuleResult.to_dict(), "snapshot_net": the network at snapshot_seconds or None}``.

    Weight decay ``d`` = mean of the convex blocks' ``beta_i / n_i`` (the same objective per pixel). When the
    convex blocks choose β on a held-out volume (``beta_ratios``), end-to-end gets the same chance
    (:func:`choose_weight_decay`), and the network is trained again on all training slices with the chosen decay.
    Returns the network, the wall time (selection included) and the selection record.
    """
    tr = split["train"]
    start = time.perf_counter()

    def train(inputs: torch.Tensor, targets: torch.Tensor, decay: float, where: Path) -> ReconNet:
        net = ReconNet.plain([hidden_width(cfg)] * cfg.blocks, cfg.kernel_size, seed=seed, config=data_cfg)
        train_end_to_end(net, inputs, targets, epochs=cfg.epochs_end_to_end, halve_every=cfg.halve_every,
                         batch_size=cfg.batch_size, weight_decay=decay, seed=seed, checkpoint_dir=where,
                         progress=True, device=device, allow_tf32=cfg.allow_tf32)
        return net

    decay, selection = float(np.mean(decays)), None
    rule = rule or cfg.rule
    if rule is not None:
        net = ReconNet.plain([hidden_width(cfg)] * cfg.blocks, cfg.kernel_size, seed=seed, config=data_cfg)
        history = train_end_to_end(net, tr["inputs"], tr["targets"], batch_size=cfg.batch_size, weight_decay=decay,
                                   seed=seed, progress=True, device=device, allow_tf32=cfg.allow_tf32,
                                   rule=rule.training_rule(snapshot_seconds),
                                   holdout=holdout_mask(tr["volumes"], cfg.holdout_volumes))
        return net, time.perf_counter() - start, {"rule": history.result.to_dict(),
                                                  "snapshot_net": snapshot_of(net, history.result)}
    if cfg.beta_ratios is not None:
        decay, selection = choose_weight_decay(tr, holdout_mask(tr["volumes"], cfg.holdout_volumes),
                                               [0.0, decay, 10 * decay], train, ckpt)
    net = train(tr["inputs"], tr["targets"], decay, ckpt)
    return net, time.perf_counter() - start, selection


def choose_weight_decay(part: dict[str, Any], held: torch.Tensor, candidates: list[float],
                        train: Callable[[torch.Tensor, torch.Tensor, float, Path], ReconNet],
                        ckpt: Path) -> tuple[float, dict[str, Any]]:
    """The candidate weight decay whose network, trained on the slices of ``part`` outside ``held``, has the
    smallest squared error on the ``held`` slices (the rule of the convex blocks' β choice,
    :func:`convexrecon.stack.layerwise.select_beta_ratio`); returns it and the selection record."""
    errors = []
    for j, candidate in enumerate(candidates):
        net = train(part["inputs"][~held], part["targets"][~held], candidate, ckpt / f"end_to_end_select_{j}")
        with torch.no_grad():
            held_inputs = part["inputs"][held].to(next(net.parameters()).device)
            errors.append(float((net.predict(held_inputs).cpu() - part["targets"][held]).double().pow(2).sum()))
    best = int(np.argmin(errors))
    return candidates[best], {"weight_decays": candidates, "holdout_sq_error": errors, "chosen": candidates[best],
                              "fit_slices": int((~held).sum()), "holdout_slices": int(held.sum())}


def train_layerwise_adam_baseline(split: dict[str, Any], cfg: KneeConfig, decays: list[float], ckpt: Path,
                                  seed: int, data_cfg: dict[str, Any],
                                  device: Any = None) -> tuple[Any, float, list[dict[str, Any]]]:
    """The same architecture block by block by Adam (weight decay ``decays[i]`` for block ``i``, then frozen; with
    ``cfg.rule`` each block by the library's training rule); returns the network, its training seconds and its
    per-block records."""
    tr, va = split["train"], split["val"]
    val = (va["inputs"], va["targets"], va["scales"], va["volumes"])
    start = time.perf_counter()
    rule = None if cfg.rule is None else cfg.rule.training_rule()
    net, records = train_layerwise_adam(
        tr["inputs"], tr["targets"], [hidden_width(cfg)] * cfg.blocks, cfg.kernel_size,
        epochs=cfg.epochs_layerwise, halve_every=cfg.halve_every, batch_size=cfg.batch_size,
        weight_decay=decays, seed=seed, checkpoint_dir=ckpt, validation=val, progress=True, device=device,
        allow_tf32=cfg.allow_tf32, rule=rule,
        holdout=None if rule is None else holdout_mask(tr["volumes"], cfg.holdout_volumes))
    seconds = time.perf_counter() - start
    net.config.update(data_cfg)
    return net, seconds, records


# ---- the unrolled network with data consistency --------------------------------------------------

def resumed_stages(directory: Path, stages: int) -> int:
    """How many leading stages of an unrolled convex run ``directory`` holds checkpoints of (they resume in order)."""
    count = 0
    while count < stages and stage_checkpoint(directory, count).is_file():
        count += 1
    return count


def unrolled_entry(result: dict[str, Any], seconds: float, **extra: Any) -> dict[str, Any]:
    """A results entry from :func:`benchmarks.kit.evidence.slice_scores` (or ``unrolled_metrics``' keys)."""
    if "psnr_mean" in result:
        return {**result, "train_seconds": seconds, "peak_memory_bytes": 0, **extra}
    return {"psnr_mean": result["psnr"], "psnr_std": result["psnr_std"], "ssim_mean": result["ssim"],
            "ssim_std": result["ssim_std"], "train_seconds": seconds, "peak_memory_bytes": 0, **extra}


def ensemble_entry(start: torch.Tensor, part: dict[str, Any], crop: int) -> dict[str, Any]:
    """Scores of the plain average of an unrolled network's CS images on ``part`` (``start``: its
    :func:`~convexrecon.stack.unrolled.initial_estimates`, the CS start and the CS inputs): what the CS
    ensemble gives without any learning, the reference for what the learned stages add."""
    mean = complex_to_channels(crop_center(start.mean(1), crop)).float().cpu()
    return {**scores(part["targets"], mean, part["scales"], part["volumes"]), "train_seconds": 0.0,
            "peak_memory_bytes": 0, "cs_images": int(start.shape[1])}


def unrolled_options(u: UnrolledConfig, cs_lambda: float | None, ratio: float | None = None,
                     reference: float | None = None, mask: str | None = None) -> dict[str, Any]:
    """The unrolled architecture's block inputs and CS start from ``u``; ``cs_lambda = "cs"`` means the CS
    baseline's λ (``cs_lambda``, chosen on training slices, relative to each slice's max |zero-filled|);
    ``cs_inputs`` are the further CS images, each a multiple of the start's λ or a ``(multiple, wavelet)`` pair.

    With ``u.cs_relative == "noise"`` the weights are relative to each slice's estimated noise level instead: the
    CS baseline's λ times ``noise_ratio``, the training slices' median of max |zero-filled| over the noise level
    (:func:`noise_ratio`), so that on training-like data the stages see the CS images they would see with
    ``"max"``, while on a scan with another noise level the weights follow its noise. ``reference``: the training
    slices' relative noise level, needed with ``u.dc_relative == "noise"`` (:func:`dc_noise`) or when ``mask`` (the
    split's sampling pattern) is one of ``u.cs_clean`` (:func:`cs_noise`)."""
    lam = u.cs_lambda
    if u.cs_iterations and lam == "cs":
        if cs_lambda is None:
            raise ValueError("cfg.unrolled.cs_lambda = 'cs' needs the CS baseline's λ. Got None.")
        lam = cs_lambda
    if u.cs_iterations and u.cs_relative == "noise":
        if ratio is None or not ratio > 0:
            raise ValueError(f"cfg.unrolled.cs_relative = 'noise' needs the training slices' noise ratio > 0. "
                             f"Got {ratio!r}.")
        lam = float(lam) * ratio
    inputs = [(f, DEFAULT_WAVE) if isinstance(f, (int, float)) else tuple(f) for f in u.cs_inputs]
    return {"bias": u.bias, "shrink": list(u.shrink), "cs_iterations": u.cs_iterations,
            "cs_lambda": float(lam) if u.cs_iterations else 0.0,
            "cs_inputs": tuple((float(f) * float(lam), w) for f, w in inputs) if u.cs_iterations else (),
            "sense_input": u.sense_input, "cs_relative": u.cs_relative, "residual": u.residual,
            "cs_shifts": u.cs_shifts, "dc_noise": dc_noise(u, reference),
            "cs_noise": cs_noise(u, reference, mask) if u.cs_iterations else 0.0}


def cs_noise(u: UnrolledConfig, reference: float | None, mask: str | None) -> float:
    """The relative noise level below which ``u``'s CS weights shrink with the noise (``StageInputs.cs_noise``):
    ``reference`` (the training slices' :func:`~convexrecon.stack.unrolled.dc_reference`) on a mask named in
    ``u.cs_clean``, 0 (weights as ``u.cs_relative`` says) otherwise."""
    if isinstance(u.cs_clean, str) or not all(isinstance(name, str) for name in u.cs_clean):
        raise ValueError(f"cfg.unrolled.cs_clean must be a sequence of mask names (e.g. ['poisson']). Got "
                         f"{u.cs_clean!r}.")
    if mask not in u.cs_clean:
        return 0.0
    if reference is None or not reference > 0:
        raise ValueError(f"cfg.unrolled.cs_clean = {u.cs_clean!r} needs the training slices' relative noise level > 0 "
                         f"on mask {mask!r}. Got {reference!r}.")
    return reference


def dc_noise(u: UnrolledConfig, reference: float | None) -> float:
    """The relative noise level at which ``u``'s DC weights hold (``StageInputs.dc_noise``): ``reference`` (the
    training slices' :func:`~convexrecon.stack.unrolled.dc_reference`) with ``u.dc_relative = "noise"``, 0 (fixed
    weights) otherwise."""
    if u.dc_relative not in ("fixed", "noise"):
        raise ValueError(f"cfg.unrolled.dc_relative must be 'fixed' or 'noise'. Got {u.dc_relative!r}.")
    if u.dc_relative == "fixed":
        return 0.0
    if reference is None or not reference > 0:
        raise ValueError(f"cfg.unrolled.dc_relative = 'noise' needs the training slices' relative noise level > 0. "
                         f"Got {reference!r}.")
    return reference


def noise_ratio(data: Any) -> float:
    """The median over the slices of ``data`` (:class:`~convexrecon.mri.consistency.MeasuredData`) of
    max |zero-filled| (cropped) over the noise level estimated from the slice's outer k-space: the reciprocal of
    :func:`~convexrecon.stack.unrolled.relative_noise`."""
    return float(torch.median(1.0 / relative_noise(data.kspace, data.maps, data.mask, data.crop)))


def split_options(split: dict[str, Any], u: UnrolledConfig, cs_lambda: float | None) -> dict[str, Any]:
    """:func:`unrolled_options` of ``u`` on ``split`` (its noise ratio from the training slices when needed)."""
    ratio = noise_ratio(split["train"]["data"]) if u.cs_iterations and u.cs_relative == "noise" else None
    mask = split.get("mask")
    reference = dc_reference(split["train"]["data"]) if u.dc_relative == "noise" or mask in u.cs_clean else None
    return unrolled_options(u, cs_lambda, ratio, reference, mask)


def unrolled_stage_settings(u: UnrolledConfig) -> list[BlockSettings]:
    """One :class:`BlockSettings` per convex stage of ``u`` (antithetic gates, β ratio chosen per stage)."""
    return [BlockSettings(kernel_size=u.kernel_size, num_arrangements=u.num_arrangements,
                          activation=u.activation, gate_sampling="antithetic",
                          beta_ratios=tuple(u.beta_ratios), tol=u.tol, max_iter=u.max_iter)] * u.stages


def train_unrolled_convex(split: dict[str, Any], u: UnrolledConfig, options: dict[str, Any], seed: int,
                          holdout_volumes: int, **run: Any) -> Any:
    """:func:`convexrecon.stack.unrolled.train_unrolled` on ``split`` with ``u``'s stages and the block inputs
    ``options`` (:func:`unrolled_options`), β ratio and λ_i chosen per stage on the last ``holdout_volumes``
    training volumes; ``run``: further keywords (checkpoints, progress, device, precomputed CS starts)."""
    tr, va = split["train"], split["val"]
    val = (va["inputs"], va["targets"], va["scales"], va["volumes"], va["data"])
    held = holdout_mask(tr["volumes"], holdout_volumes)
    return train_unrolled(tr["inputs"], tr["targets"], tr["data"], unrolled_stage_settings(u), lambdas=list(u.lambdas),
                          holdout=held, validation=val, concat_input=u.concat_input, keep_start=u.keep_start, **options,
                          cg_iterations=u.cg_iterations, seed=seed, solve_options={"gated_method": u.gated_method},
                          **run)


def unrolled_starts(split: dict[str, Any], cfg: KneeConfig, cs_lambda: float | None = None,
                    device: Any = None) -> dict[str, Any]:
    """The CS start and CS inputs (:func:`~convexrecon.stack.unrolled.initial_estimates`) of the training and
    validation slices for ``cfg.unrolled``'s architecture: seed-independent, so computed once per split and shared
    by the three unrolled methods of every seed."""
    u = cfg.unrolled
    if u is None:
        raise ValueError("unrolled_starts needs a configuration with 'unrolled' settings. Got None.")
    options = split_options(split, u, cs_lambda)
    tr, va = split["train"], split["val"]
    template = UnrolledNet([], cfg.crop, u.concat_input, **options).to(device or tr["data"].kspace.device)
    return {"initial": initial_estimates(template, tr["data"], u.batch_size),
            "validation_initial": initial_estimates(template, va["data"], u.batch_size)}


def train_unrolled_methods(split: dict[str, Any], cfg: KneeConfig, ckpt: Path, models: Path, seed: int,
                           data_cfg: dict[str, Any], device: Any = None,
                           cs_lambda: float | None = None,
                           starts: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The convex unrolled network (:func:`train_unrolled_convex`) and the same architecture by Adam, end to end
    (λ_i learned from the convex choices) and layer-wise (λ_i fixed at them), on ``split``
    (:func:`benchmarks.kit.data.measured_split`), with ``cfg.unrolled``'s settings (``cs_lambda``: the CS
    baseline's λ, for a CS start), on ``device`` (TF32 as ``cfg.allow_tf32``, as for the CNN methods).

    Returns the ``results.json`` entries (validation PSNR/SSIM, per-stage certificates), the trained networks, by
    method name, and the validation slices' CS start (:func:`~convexrecon.stack.unrolled.initial_estimates`, None
    without one): the three methods share one architecture, so their CS start and CS inputs are computed once per
    part of the split (``starts``: :func:`unrolled_starts`' result, computed here when None).
    """
    u = cfg.unrolled
    if u is None:
        raise ValueError("train_unrolled_methods needs a configuration with 'unrolled' settings. Got None.")
    options = split_options(split, u, cs_lambda)
    tr, va = split["train"], split["val"]
    if starts is None:  # the architecture without stages: its CS start, shared by the three methods
        starts = unrolled_starts(split, cfg, cs_lambda, device)
    on = {"device": device, "allow_tf32": cfg.allow_tf32, **starts}
    val = (va["inputs"], va["targets"], va["scales"], va["volumes"], va["data"])
    def score(net: UnrolledNet) -> dict[str, Any]:  # mean ± std and every slice's PSNR, for paired differences
        with torch.no_grad():
            return slice_scores(va, net.predict(va["data"], initial=starts["validation_initial"]).cpu())

    entries: dict[str, Any] = {}
    if options["cs_inputs"]:
        entries["cs_ensemble_mean"] = ensemble_entry(starts["validation_initial"], va, cfg.crop)
    nets: dict[str, Any] = {}
    resumed = resumed_stages(ckpt / "unrolled_convex", u.stages)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train_unrolled_convex(split, u, options, seed, cfg.holdout_volumes,
                                       checkpoint_dir=ckpt / "unrolled_convex", progress=True, config=data_cfg, **on)
    # a stage read back from its checkpoint costs nothing now: count the solve seconds it recorded when it was
    # solved, so that a resumed run reports (and the Adam twins' equal-time rows use) a fresh run's time
    seconds = time.perf_counter() - start + sum(r["seconds"] for r in result.records[:resumed])
    result.network.save(models / "unrolled_convex")
    # an identity stage (keep_start) has no DC step (λ = inf): the Adam twins start that stage's λ at the median of
    # the other stages' choices instead, so they keep a full unrolled architecture to train
    finite = [r["lam"] for r in result.records if math.isfinite(r["lam"])] or list(u.lambdas)
    lambdas = [r["lam"] if math.isfinite(r["lam"]) else float(np.median(finite)) for r in result.records]
    decays = [r["beta"] / r["num_pixels"] for r in result.records]
    entries["unrolled_convex"] = unrolled_entry(
        score(result.network), seconds, warnings=sorted({str(w.message)[:200] for w in caught}),
        architecture={**options, "shrink": list(options["shrink"]),
                      "cs_inputs": [list(c) for c in options["cs_inputs"]],
                      "stages": u.stages, "concat_input": u.concat_input, "activation": u.activation,
                      "keep_start": u.keep_start},
        stages=[{**{k: r.get(k) for k in ("stage", "identity", "psnr", "ssim", "lam", "beta", "beta_ratio", "width", "status",
                                          "relative_gap", "duality_gap", "iterations", "seconds", "selection")},
                 "solver": (r.get("report") or {}).get("solver")} for r in result.records])
    nets["unrolled_convex"] = result.network
    # the convex block's largest width: one neuron per group, P C_out gated, 2 P C_out exact (C_out = 2)
    width = (4 if u.activation == "relu" else 2) * u.num_arrangements
    start = time.perf_counter()
    e2e = unrolled_plain(u.stages, width, u.kernel_size, lambdas, cfg.crop, concat_input=u.concat_input,
                         **options,
                         cg_iterations=u.cg_iterations, seed=seed, learn_lambda=True, config=data_cfg)
    convex_seconds = entries["unrolled_convex"]["train_seconds"]
    by_rule = {} if u.rule is None else {"rule": u.rule.training_rule(convex_seconds),
                                         "holdout": holdout_mask(tr["volumes"], cfg.holdout_volumes)}
    history = train_unrolled_end_to_end(e2e, tr["targets"], tr["data"], epochs=u.epochs_end_to_end,
                                        batch_size=u.batch_size, lr=u.lr, halve_every=u.halve_every,
                                        weight_decay=float(np.mean(decays)), seed=seed,
                                        checkpoint_dir=ckpt / "unrolled_end_to_end", progress=True, **on, **by_rule)
    seconds = time.perf_counter() - start
    e2e.save(models / "unrolled_end_to_end")
    entries["unrolled_end_to_end"] = unrolled_entry(
        score(e2e), seconds, final_loss=history[-1]["loss"] if history else None,
        weight_decay=float(np.mean(decays)), learned_lambdas=[float(s.lam.detach()) for s in e2e.stages])
    if u.rule is not None:
        entries["unrolled_end_to_end"]["rule"] = history.result.to_dict()
        nets["unrolled_end_to_end@convex_time"] = snapshot_of(e2e, history.result)
    nets["unrolled_end_to_end"] = e2e
    start = time.perf_counter()
    lw, records = train_unrolled_layerwise_adam(
        tr["targets"], tr["data"], width, u.kernel_size, lambdas, concat_input=u.concat_input,
        **options,
        cg_iterations=u.cg_iterations, epochs=u.epochs_layerwise, batch_size=u.batch_size, lr=u.lr,
        halve_every=u.halve_every, weight_decay=decays, seed=seed,
        checkpoint_dir=ckpt / "unrolled_layerwise_adam", validation=val, progress=True, **on,
        **({} if u.stage_rule() is None else {"rule": u.stage_rule().training_rule(),
                                               "holdout": holdout_mask(tr["volumes"], cfg.holdout_volumes)}))
    seconds = time.perf_counter() - start
    lw.save(models / "unrolled_layerwise_adam")
    entries["unrolled_layerwise_adam"] = unrolled_entry(
        score(lw), seconds, stages=[{k: r.get(k) for k in ("stage", "psnr", "ssim", "rule")} for r in records])
    nets["unrolled_layerwise_adam"] = lw
    return entries, nets, starts["validation_initial"]


def snapshot_of(net: Any, result: Any) -> Any:
    """A copy of ``net`` in the state the rule kept at its ``snapshot_seconds`` (None without a snapshot)."""
    if result.snapshot_state is None:
        return None
    other = copy.deepcopy(net)
    other.load_state_dict(result.snapshot_state)
    return other
