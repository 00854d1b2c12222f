r"""Convex, stage-by-stage training of the unrolled network (``docs/design.md`` §9.1; :mod:`~convexrecon.stack.unrolled`).

Given the frozen stages ``1..i-1``, stage ``i`` solves the convex program of a block on
(features of :math:`x_i`, residual :math:`y - P^T x_i`),

.. math:: \min\ \tfrac12\|\mathrm{block}_i(h_i) - (y - P^T x_i)\|^2
          + \tfrac{\beta_i}{2}(\|W_{1}\|^2 + \|W_{2}\|^2),

certified by its duality gap (``block.report``); GLEAM (Ozturkler et al., 2022) trains greedily in
the same way, here with each stage's block the certified convex two-layer block of
:func:`~convexrecon.block.fit.fit_layer`. The DC step is not part of the convex program:
:math:`\lambda_i` (and :math:`\beta_i` when ``beta_ratios`` are given) are chosen on held-out
training volumes by the squared error *after* the DC step, then the block is solved again on all
training slices. Held-out scores use a *selection chain* of stages solved without the held-out
slices, as :func:`~convexrecon.stack.layerwise.train_layerwise` does for β.

With ``keep_start`` the selection also weighs the **identity stage** (a zero block and no DC step,
:func:`~convexrecon.stack.unrolled.identity_stage`, which returns its input exactly): when every (β, λ)
candidate scores worse on the held-out slices than the stage's input, the stage is the identity (in both
chains). So on the held-out slices the selection chain's error never increases from stage to stage, and
the network never scores below its start there: with SENSE-CG as the start (``sense_start``), never below
SENSE-CG.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from convexrecon.block.fit import fit_layer, fit_layer_path
from convexrecon.block.options import FitOptions
from convexrecon.checks import bool_flag, check_images, device_of
from convexrecon.mri import (MeasuredData, MeasuredGroups, complex_to_channels, crop_center, measured_groups,
                             sense_adjoint)
from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, restoring, run_payload, save_checkpoint
from convexrecon.stack.run import RunOptions, with_keywords
from convexrecon.stack.settings import (BlockSettings, ValidationSet, block_beta, block_record, check_blocks,
                                        holdout_of, warn_choice_at_edge)
from convexrecon.stack.stage_inputs import StageInputs
from convexrecon.stack.unrolled import (ChainSet, UnrolledNet, UnrolledStage, block_from_spec, block_spec,
                                        identity_stage, initial_estimates, moved_initial, unrolled_metrics)

DEFAULT_LAMBDAS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def stage_checkpoint(directory: Path, index: int) -> Path:
    """The checkpoint file of stage ``index`` (0-based) of an unrolled convex run in ``directory``; stages resume
    in order, so a run with the files of stages 0 … j-1 resumes those and solves the rest."""
    return directory / f"stage_{index + 1:02d}.pt"


@dataclass
class UnrolledResult:
    """The trained network and one record per stage (β, λ, certificate, selection scores, validation metrics)."""

    network: UnrolledNet
    records: list[dict[str, Any]]


def check_measurements(inputs: Tensor, data: MeasuredData | MeasuredGroups, name: str) -> None:
    """``data`` (the parameter ``name``) must describe the slices of ``inputs``: ``crop(A^H k)`` equals the input."""
    if not isinstance(data, (MeasuredData, MeasuredGroups)):
        raise TypeError(f"The '{name}' parameter must be a MeasuredData (or MeasuredGroups). Got "
                        f"{type(data).__name__} instead.")
    if len(data) != len(inputs) or data.crop != inputs.shape[-1] or inputs.shape[-2] != inputs.shape[-1]:
        raise ValueError(f"The '{name}' parameter must hold the {len(inputs)} slices of the inputs at crop "
                         f"{inputs.shape[-1]}. Got {len(data)} slices at crop {data.crop} instead.")
    grouped = measured_groups(data)
    x1 = grouped.scatter([complex_to_channels(crop_center(sense_adjoint(g.kspace, g.maps, g.mask), g.crop))
                          for g in grouped.groups])
    error = float((x1.to(inputs.device, inputs.dtype) - inputs).abs().max())
    if error > 1e-3 * max(float(inputs.abs().max()), 1e-30):
        raise ValueError(f"The '{name}' parameter does not match the inputs: the crop of A^H k differs from the "
                         f"stored zero-filled images by {error:.3g} (max). Pass the measurements of the same slices "
                         "in the same order.")


def placed_measurements(run: RunOptions, targets: Tensor, data: Any, validation: ValidationSet | None,
                        inputs: Tensor | None = None) -> tuple[Tensor | None, Tensor, Any, ValidationSet | None]:
    """The training tensors, measurements and validation set on the run's device (``run.device``, or where
    ``targets`` and the measurements are), moved there once."""
    device = run.device_of(targets=targets, kspace=measured_groups(data).groups[0].kspace,
                           **({} if inputs is None else {"inputs": inputs}))
    return (None if inputs is None else inputs.to(device), targets.to(device), data.to(device),
            None if validation is None else validation.to(device))


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` name one device when the current device is 0."""
    def index(d: torch.device) -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and (a.type == "cpu" or index(a) == index(b))


def _error(cropped: Tensor, targets: Tensor) -> float:
    """Squared error of cropped complex estimates against ``(N, 2, crop, crop)`` targets."""
    return float((complex_to_channels(cropped).to(targets.dtype) - targets).double().pow(2).sum())


def train_unrolled(
    inputs: Tensor,
    targets: Tensor,
    data: MeasuredData,
    stages: Sequence[BlockSettings],
    *,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    holdout: Any = None,
    validation: ValidationSet | tuple | None = None,
    concat_input: bool = True,
    stage_inputs: StageInputs | None = None,
    cg_iterations: int = 10,
    initial: Tensor | None = None,
    validation_initial: Tensor | None = None,
    chunk_size: int = 4,
    solve_chunk_size: int | None = None,
    solve_options: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    run: RunOptions | None = None,
    keep_start: bool = False,
    solve_progress: bool | None = None,
    fit_window: int | None = None,
    **keywords: Any,
) -> UnrolledResult:
    r"""Train ``len(stages)`` unrolled stages greedily, each block by its convex program.

    Parameters
    ----------
    inputs, targets
        Training zero-filled images and targets ``(N, 2, crop, crop)`` (stored scale).
    data
        Their measurements (:class:`~convexrecon.mri.consistency.MeasuredData`, e.g. from
        :func:`~convexrecon.data.problems.measured_data`); checked against ``inputs``.
    stages
        One :class:`~convexrecon.stack.settings.BlockSettings` per stage; ``beta_ratios`` makes
        β a choice on ``holdout`` as well.
    lambdas
        Candidate λ of every DC step, chosen per stage on ``holdout`` by the held-out squared
        error after the DC step. One value needs no ``holdout``.
    holdout
        Boolean per training slice: the slices that score the (β, λ) candidates (whole volumes,
        e.g. :func:`~convexrecon.data.splits.holdout_mask`). The chosen block is solved again on
        all slices with the chosen β ratio.
    validation
        :class:`~convexrecon.stack.settings.ValidationSet` with ``data``, or ``(inputs, targets, scales,
        volumes, data)``; PSNR/SSIM recorded after every stage.
    concat_input
        Blocks see ``[x_i, x_1]`` (4 channels) instead of ``x_i``.
    stage_inputs
        Further block inputs and the CS start (:class:`~convexrecon.stack.stage_inputs.StageInputs`; its
        fields ``bias``, ``shrink``, ``cs_iterations``, ``cs_lambda``, ``cs_inputs`` may be keywords too).
    cg_iterations
        CG iterations per DC step.
    initial, validation_initial
        :meth:`UnrolledNet.initial` of the training (validation) slices, as
        :func:`~convexrecon.stack.unrolled.initial_estimates` returns it for a network of these settings,
        when the caller has computed it (e.g. once for this trainer and both Adam baselines: a CS start
        with CS inputs costs several CS reconstructions per slice); None computes it.
    chunk_size, solve_chunk_size
        Slices per chunk for the chains and DC; images per chunk inside ``fit_layer``.
    solve_options
        Further :class:`~convexrecon.block.options.FitOptions` fields for every solve, e.g.
        ``{"gated_method": "interior_point"}`` (far faster for small blocks).
    config
        Extra metadata stored in the network's config (e.g. ``{"data": dataset.settings()}``).
    run
        :class:`~convexrecon.stack.run.RunOptions` (or its fields as keywords): gates of stage ``i`` are
        seeded ``seed + i``; ``stage_XX.pt`` go to ``checkpoint_dir`` after every stage (the same call
        resumes); ``device`` None trains where ``inputs``, ``targets`` and ``data`` are, an explicit one
        moves them and the validation set there once (``solve_options["device"]``, if given, must agree);
        ``allow_tf32`` holds for the whole training (solves, chains, DC steps).
    keep_start
        Also weigh the identity stage on ``holdout`` (needs it): a stage whose every candidate scores worse
        there than its input becomes the identity, so the network never scores below its start on the
        held-out slices (the module doc).
    solve_progress
        Progress bars inside every solve (default: ``run.progress``; the stage bar follows ``run.progress``).
    fit_window
        Side of the centre window of every training slice on which each stage's block program is posed (None,
        or at least the crop: the whole crop). The block is convolutional, so a window poses the same program on
        fewer pixels: ``train`` uses it where the whole crop would exceed the interior point's limits, so that
        the stages are still solved to a certificate. β candidates are ratios of the window program's β_max;
        the held-out selection, the DC steps and the validation see whole crops.

    Returns
    -------
    UnrolledResult
    """
    stage_inputs, run = with_keywords("train_unrolled", keywords, stage_inputs or StageInputs(), run or RunOptions())
    inputs, targets = check_images("inputs", inputs), check_images("targets", targets)
    if inputs.ndim != 4 or inputs.shape != targets.shape:
        raise ValueError(f"The 'targets' must have the shape of 'inputs' {tuple(inputs.shape)} (images). "
                         f"Got {tuple(targets.shape)} instead.")
    check_measurements(inputs, data, "data")
    check_blocks("stages", stages)
    lambdas = tuple(float(v) for v in lambdas)
    if not lambdas or not all(v > 0 and math.isfinite(v) for v in lambdas):
        raise ValueError(f"The 'lambdas' parameter must be a non-empty sequence of finite numbers > 0. "
                         f"Got {lambdas!r} instead.")
    keep_start = bool_flag("keep_start", keep_start)
    if fit_window is not None and (isinstance(fit_window, bool) or not isinstance(fit_window, int)
                                   or fit_window < max(b.kernel_size for b in stages)):
        raise ValueError(f"The 'fit_window' parameter must be None or an int of at least the kernel size "
                         f"{max(b.kernel_size for b in stages)}. Got {fit_window!r} instead.")
    if fit_window is not None and fit_window >= inputs.shape[-1]:
        fit_window = None  # the whole crop
    selecting = len(lambdas) > 1 or any(b.beta_ratios is not None for b in stages) or keep_start
    held = holdout_of(holdout, len(inputs), torch.device("cpu"),
                      f"Choosing λ among {lambdas} (or β among 'beta_ratios', or the identity stage with "
                      f"'keep_start')" if selecting else None)
    validation = ValidationSet.of(validation)
    if validation is not None:
        check_images("validation inputs", validation.inputs)
        check_measurements(validation.inputs, validation.data, "validation data")
    inputs, targets, data, validation = placed_measurements(run, targets, data, validation, inputs)
    solve_options = dict(solve_options or {})
    asked = solve_options.pop("device", None)
    if asked is not None and not _same_device(device_of(asked), targets.device):
        raise ValueError(f"The 'solve_options' device must be the training device {targets.device}. "
                         f"Got {asked!r} instead.")
    solve_options["allow_tf32"] = run.allow_tf32
    trainer = _StageTrainer(inputs=inputs, targets=targets, data=data, stages=list(stages), lambdas=lambdas, held=held,
                            validation=validation, concat_input=concat_input, stage_inputs=stage_inputs,
                            cg_iterations=cg_iterations, chunk_size=chunk_size, solve_chunk_size=solve_chunk_size,
                            solve_options=solve_options, run=run, keep_start=keep_start,
                            solve_progress=run.progress if solve_progress is None else bool(solve_progress),
                            fit_window=fit_window)
    with run.precision():
        records = trainer.train(initial, validation_initial)
    meta = {"method": "unrolled_convex", "training": trainer.settings,
            "stages": [{k: v for k, v in r.items() if k != "report"} for r in records],
            "solve_reports": [r.get("report") for r in records], **(config or {})}
    return UnrolledResult(trainer.network(list(trainer.main.net.stages), meta), records)


@dataclass
class _StageTrainer:
    """One run of :func:`train_unrolled` on checked tensors on one device: the two chains and the stages so far."""

    inputs: Tensor
    targets: Tensor
    data: MeasuredData | MeasuredGroups
    stages: list[BlockSettings]
    lambdas: tuple[float, ...]
    held: Tensor | None
    validation: ValidationSet | None
    concat_input: bool
    stage_inputs: StageInputs
    cg_iterations: int
    chunk_size: int
    solve_chunk_size: int | None
    solve_options: dict[str, Any]
    run: RunOptions
    keep_start: bool = False
    solve_progress: bool = False
    fit_window: int | None = None
    main: ChainSet = field(init=False)
    sel: ChainSet = field(init=False)

    def __post_init__(self) -> None:
        self.settings = {"stages": [asdict(b) for b in self.stages], "lambdas": list(self.lambdas),
                         "seed": self.run.seed, "concat_input": self.concat_input, **self.stage_inputs.settings(),
                         "cg_iterations": self.cg_iterations,
                         "holdout": None if self.held is None else self.held.nonzero().flatten().tolist(),
                         "solve_options": self.solve_options, **({"keep_start": True} if self.keep_start else {}),
                         **({"fit_window": self.fit_window} if self.fit_window is not None else {})}
        self.key = fingerprint(self.inputs, self.targets, *[t for g in measured_groups(self.data).groups
                                                             for t in (g.mask, g.kspace.abs())])

    def network(self, stages: list[UnrolledStage], config: dict[str, Any] | None = None) -> UnrolledNet:
        """The unrolled network of ``stages`` with this run's architecture."""
        return UnrolledNet(stages, self.inputs.shape[-1], self.concat_input, self.cg_iterations, config,
                           stage_inputs=self.stage_inputs)

    def train(self, initial: Tensor | None, validation_initial: Tensor | None) -> list[dict[str, Any]]:
        """Solve (or resume) every stage in order; returns one record per stage."""
        main_net, sel_net = self.network([]), self.network([])
        main_net.to(self.inputs.device, self.inputs.dtype)  # dtype/device of the chains before any stage exists
        sel_net.to(self.inputs.device, self.inputs.dtype)
        self.main = ChainSet(main_net, self.data, self.chunk_size, initial=moved_initial(initial, self.inputs))
        self.sel = ChainSet(sel_net, self.data, self.chunk_size, twin=self.main)
        val_start = moved_initial(validation_initial, self.inputs, "validation_initial")
        if val_start is None and self.validation is not None:
            val_start = initial_estimates(main_net, self.validation.data, self.chunk_size)
        ckpt = Path(self.run.checkpoint_dir) if self.run.checkpoint_dir is not None else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        bar = tqdm(range(self.run.last(len(self.stages))), desc="unrolled convex stages", unit="stage",
                   disable=not self.run.progress)
        for i in bar:
            path = stage_checkpoint(ckpt, i) if ckpt is not None else None
            if path is not None and path.is_file():
                stage, sel_stage, record = self.resume(i, path)
            else:
                stage, sel_stage, record = self.solve(i)
                if self.validation is not None:
                    v = self.validation
                    probe = self.network(list(main_net.stages) + [stage])
                    record.update(unrolled_metrics(probe, v.targets, v.scales, v.volumes, v.data, self.chunk_size,
                                                   initial=val_start))
                    bar.set_postfix(psnr=f"{record['psnr']:.2f}")
                if path is not None:
                    save_checkpoint(path, run_payload(
                        self.settings, self.key, block=(block_spec(stage.block), stage.block.state_dict()),
                        lam=float(stage.lam), limit=float(stage.limit), record=record,
                        selection=None if sel_stage is None else
                        ((block_spec(sel_stage.block), sel_stage.block.state_dict()), float(sel_stage.lam))))
            main_net.stages.append(stage)
            self.main.advance(stage)
            if sel_stage is not None:
                sel_net.stages.append(sel_stage)
                self.sel.advance(sel_stage)
            records.append(record)
        return records

    def resume(self, i: int, path: Path) -> tuple[UnrolledStage, UnrolledStage | None, dict[str, Any]]:
        """Stage ``i`` (and its selection-chain twin) from its checkpoint ``path``, on the run's device."""
        payload = load_checkpoint(path, self.settings, self.key, ("block", "lam", "limit", "record", "selection"))
        with restoring(path, f"to recompute stage {i + 1}"):
            stage = self._stage_from(payload["block"], payload["lam"])
            stage.limit.fill_(float(payload["limit"]))
            sel_stage = None if payload["selection"] is None else self._stage_from(*payload["selection"])
        return stage, sel_stage, payload["record"]

    def _stage_from(self, block: tuple[dict[str, Any], dict[str, Tensor]], lam: float) -> UnrolledStage:
        spec, state = block
        b = block_from_spec(spec)
        b.load_state_dict(state)
        return UnrolledStage(b.to(device=self.inputs.device, dtype=self.inputs.dtype), float(lam))

    def solve(self, i: int) -> tuple[UnrolledStage, UnrolledStage | None, dict[str, Any]]:
        """Stage ``i``: choose (β ratio, λ) on the hold-out with the selection chain, then solve on all slices."""
        start = time.perf_counter()
        b, seed, targets, lambdas = self.stages[i], self.run.seed + i, self.targets, self.lambdas
        device = targets.device
        progress, solve = self.solve_progress, dict(self.solve_options)
        selection, ratio, lam, sel_stage = None, None, lambdas[0], None
        if self.held is not None:
            hd, sel = self.held.to(device), self.sel
            x, y = sel.features(), targets - complex_to_channels(sel.cropped()).to(targets.dtype)
            fit_x, fit_y = self._window(x[~hd]), self._window(y[~hd])
            if b.beta is not None:
                ratios: list[float | None] = [None]
                betas = [float(b.beta)]
            else:
                ratios = list(b.beta_ratios or (b.beta_ratio,))
                unit = block_beta(b, fit_x, fit_y, seed, self.solve_chunk_size, ratio=1.0)  # β_max of the fit slices
                betas = [r * unit for r in ratios]
            options = b.fit_options(**{"seed": seed, "chunk_size": self.solve_chunk_size, "progress": progress,
                                        "device": device, **solve})
            blocks = fit_layer_path(fit_x, fit_y, betas, options=options)
            index = hd.nonzero().flatten()
            errors = np.empty((len(blocks), len(lambdas)))
            for r, block in enumerate(blocks):
                candidate = UnrolledStage(block, lambdas[0])
                for j, lam_j in enumerate(lambdas):
                    errors[r, j] = _error(sel.cropped_advanced(candidate, index, lam=lam_j), targets[index])
            r_best, j_best = np.unravel_index(int(np.argmin(errors)), errors.shape)
            ratio, lam = ratios[r_best], lambdas[j_best]
            input_error = _error(sel.cropped(index), targets[index])
            if self.keep_start and not errors.min() <= input_error:  # every candidate worse than the identity
                return self._identity(i, blocks[r_best], start, {
                    "beta_ratios": ratios, "lambdas": list(lambdas), "holdout_sq_error": errors.tolist(),
                    "holdout_input_sq_error": input_error, "chosen_identity": True,
                    "fit_slices": int((~hd).sum()), "holdout_slices": int(hd.sum())})
            if ratio is not None:
                warn_choice_at_edge(f"Stage {i + 1}", "β ratio", ratio, ratios, "beta_ratios", stacklevel=5)
            warn_choice_at_edge(f"Stage {i + 1}", "data-consistency λ", lam, lambdas, "lambdas", stacklevel=5)
            sel_stage = UnrolledStage(blocks[r_best], lam)
            selection = {"beta_ratios": ratios, "lambdas": list(lambdas), "holdout_sq_error": errors.tolist(),
                         "holdout_target_energy": float(targets[index].double().pow(2).sum()),
                         "holdout_input_sq_error": input_error,
                         "widths": [blk.width for blk in blocks], "chosen_ratio": ratio, "chosen_lambda": lam,
                         "fit_slices": int((~hd).sum()), "holdout_slices": int(hd.sum())}
        x, y = self.main.features(), targets - complex_to_channels(self.main.cropped()).to(targets.dtype)
        options = b.fit_options(**{"seed": seed, "chunk_size": self.solve_chunk_size, "progress": progress,
                                   "device": device, **solve})
        if ratio is not None:
            options = FitOptions.of(options, beta_ratio=ratio)
        block = fit_layer(self._window(x), self._window(y), beta=b.beta, options=options)
        with torch.no_grad():  # the correction bound: twice the largest ratio on the training slices (never active)
            r = block(x).pow(2).sum(1).sqrt().flatten(1).max(1).values
            h = complex_to_channels(self.main.cropped()).to(x.dtype).pow(2).sum(1).sqrt().flatten(1)
            h = h.max(1).values
            ratio_max = float((r / h.clamp_min(torch.finfo(h.dtype).tiny)).max())
        stage = UnrolledStage(block, lam, limit=2.0 * ratio_max if ratio_max > 0 else math.inf)
        record: dict[str, Any] = {"stage": i + 1, "lam": lam, "correction_limit": float(stage.limit),
                                  **block_record(block, b, seed, self._window(y), ratio, selection,
                                                 time.perf_counter() - start)}
        return stage, sel_stage, record

    def _window(self, images: Tensor) -> Tensor:
        """The centre ``fit_window`` square of ``(N, C, crop, crop)`` images (all of them without a window)."""
        return images if self.fit_window is None else crop_center(images, self.fit_window)

    def _identity(self, i: int, like: Any, start: float,
                  selection: dict[str, Any]) -> tuple[UnrolledStage, UnrolledStage, dict[str, Any]]:
        """Stage ``i`` as the identity stage (zero block of the shape of ``like``, no DC step) in both chains."""
        spec = block_spec(like)
        stage, sel_stage = identity_stage(spec), identity_stage(spec)
        for s in (stage, sel_stage):
            s.to(device=self.inputs.device, dtype=self.inputs.dtype)
        record: dict[str, Any] = {"stage": i + 1, "lam": math.inf, "correction_limit": math.inf, "identity": True,
                                  **block_record(stage.block, self.stages[i], self.run.seed + i, self.targets, None,
                                                 selection, time.perf_counter() - start)}
        return stage, sel_stage, record
