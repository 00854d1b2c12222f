r"""Adam baselines on the unrolled architecture (:mod:`~convexrecon.stack.unrolled`).

:func:`train_unrolled_end_to_end` trains all blocks and, by default, the :math:`\lambda_i` by Adam
through the differentiable CG; :func:`train_unrolled_layerwise_adam` trains each stage's block by
Adam on the convex block's objective, then freezes it, with fixed :math:`\lambda_i`. Both use the
loop of :mod:`~convexrecon.stack.adam` and its checkpoints, or, given a ``rule`` and a ``holdout`` mask,
its :class:`~convexrecon.stack.adam.TrainingRule` (lr and weight decay chosen on held-out training
slices, early stopping, best checkpoint kept).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import Tensor

from convexrecon.checks import check_images
from convexrecon.mri import MeasuredData, MeasuredGroups, complex_to_channels, crop_center
from convexrecon.stack.adam import (END_TO_END_EPOCHS, LAYERWISE_EPOCHS, AdamSettings, RuleHistory, TrainingRule,
                                    adam_config, adam_train, train_by_rule)
from convexrecon.stack.baselines import holdout_of
from convexrecon.stack.checkpoint import checkpoint_file, fingerprint
from convexrecon.stack.run import RunOptions, with_keywords
from convexrecon.stack.settings import ValidationSet
from convexrecon.stack.stage_inputs import StageInputs
from convexrecon.stack.unrolled import (EstimateChain, UnrolledNet, UnrolledStage, initial_estimates, moved_initial,
                                        relu_block, unrolled_metrics)
from convexrecon.stack.unrolled_train import placed_measurements


def _one_grid(data: Any, name: str) -> None:
    """The Adam baselines batch slices through the DC steps, so they take slices of one k-space grid."""
    if isinstance(data, MeasuredGroups):
        grids = ", ".join(f"{g.kspace.shape[-2]}x{g.kspace.shape[-1]}" for g in data.groups)
        raise ValueError(f"{name}: the 'data' parameter must hold slices of one k-space grid (a MeasuredData). Got "
                         f"{len(data.groups)} grids ({grids}) instead; train_unrolled takes several.")


def train_unrolled_end_to_end(net: UnrolledNet, targets: Tensor, data: MeasuredData, *,
                              adam: AdamSettings | None = None, validation: ValidationSet | tuple | None = None,
                              initial: Tensor | None = None, validation_initial: Tensor | None = None,
                              run: RunOptions | None = None, rule: TrainingRule | None = None,
                              holdout: Tensor | None = None, **keywords: Any) -> list[dict[str, float]]:
    r"""Train ``net`` (in place) end to end by Adam through the differentiable DC steps.

    The loss is :func:`~convexrecon.stack.adam.pixel_loss` of the cropped output,
    :math:`\frac1n\sum \tfrac12\|\hat x - y\|^2`, with Adam's ``weight_decay`` on every
    trainable parameter. The λ_i are trained too when their ``log_lam`` requires a gradient
    (:func:`~convexrecon.stack.unrolled.unrolled_plain`'s default ``learn_lambda=True``); weight decay
    then also pulls ``log λ_i`` towards 0. Returns per-epoch loss (and validation PSNR/SSIM).

    ``adam`` (default :data:`~convexrecon.stack.adam.END_TO_END_EPOCHS` epochs) and ``run`` (or their
    fields as keywords); ``validation``, ``initial`` and ``validation_initial`` as in
    :func:`~convexrecon.stack.unrolled_train.train_unrolled`. ``run.device`` None trains where ``targets``
    and ``data`` are (``net`` is moved there); an explicit device moves them once. ``net`` stays there.

    ``rule`` and ``holdout`` (a boolean mask of the held-out training slices) as in
    :func:`~convexrecon.stack.baselines.train_end_to_end`: trained on the other slices by the
    :class:`~convexrecon.stack.adam.TrainingRule`; returns a :class:`~convexrecon.stack.adam.RuleHistory`.
    """
    _one_grid(data, "train_unrolled_end_to_end")
    adam, run = with_keywords("train_unrolled_end_to_end", keywords, adam or AdamSettings(), run or RunOptions())
    adam = adam.with_epochs(END_TO_END_EPOCHS)
    targets = check_images("targets", targets)
    _, targets, data, validation = placed_measurements(run, targets, data, ValidationSet.of(validation))
    net.to(targets.device)
    index = torch.arange(len(targets), device=targets.device)  # adam_train batches the inputs: slice indices
    # the CS start (and CS inputs), computed once
    starts = moved_initial(initial, targets) if initial is not None else initial_estimates(net, data, adam.batch_size)

    def forward(ids: Tensor) -> Tensor:
        return net(data.kspace[ids], data.maps[ids], data.mask[ids], initial=None if starts is None else starts[ids])

    val_start = moved_initial(validation_initial, targets, "validation_initial")
    if val_start is None and validation is not None:
        val_start = initial_estimates(net, validation.data)
    on_epoch = None if validation is None else (
        lambda e: unrolled_metrics(net, validation.targets, validation.scales, validation.volumes, validation.data,
                                   initial=val_start))
    learned = any(s.log_lam.requires_grad for s in net.stages)
    if rule is not None:
        held = holdout_of(holdout, len(targets)).to(targets.device)
        with run.precision():
            result = train_by_rule(net, forward, index[~held], targets[~held], index[held], targets[held], adam,
                                   rule, seed=run.seed, desc="unrolled end-to-end (Adam, rule)", progress=run.progress)
        history: list[dict[str, Any]] = RuleHistory(result)
        training = {**adam_config(replace(adam, epochs=result.epochs, lr=result.lr), run.seed, learned_lambda=learned,
                                  allow_tf32=run.allow_tf32), "weight_decay": result.weight_decay,
                    "rule": result.to_dict()}
    else:
        with run.precision():
            history = adam_train(net, forward, index, targets, adam, seed=run.seed,
                                 checkpoint=checkpoint_file(run.checkpoint_dir, "unrolled_end_to_end.pt"),
                                 stop_after=run.stop_after, desc="unrolled end-to-end (Adam)", progress=run.progress,
                                 on_epoch=on_epoch)
        training = adam_config(adam, run.seed, learned_lambda=learned, allow_tf32=run.allow_tf32)
    net.config.update({"method": "unrolled_end_to_end", "training": training,
                       "lambdas": [float(s.lam.detach()) for s in net.stages], "history": list(history)})
    return history


def train_unrolled_layerwise_adam(targets: Tensor, data: MeasuredData, width: int, kernel_size: int,
                                  lambdas: Sequence[float], *, concat_input: bool = True,
                                  stage_inputs: StageInputs | None = None, cg_iterations: int = 10,
                                  adam: AdamSettings | None = None, validation: ValidationSet | tuple | None = None,
                                  initial: Tensor | None = None, validation_initial: Tensor | None = None,
                                  chunk_size: int = 4, run: RunOptions | None = None,
                                  rule: TrainingRule | None = None, holdout: Tensor | None = None,
                                  **keywords: Any) -> tuple[UnrolledNet, list[dict[str, Any]]]:
    """Non-convex layer-wise training of the unrolled network: stage ``i``'s ReLU block by Adam on the
    convex block's objective (features of ``x_i``, residual ``y - x_i``, weight decay ``weight_decay[i]``),
    then frozen; the DC weights are fixed at ``lambdas`` (e.g. the convex model's choices).

    ``concat_input``, ``stage_inputs`` (or its fields as keywords), ``cg_iterations``, ``validation``,
    ``initial`` and ``validation_initial`` as in :func:`~convexrecon.stack.unrolled_train.train_unrolled`;
    ``adam`` (default :data:`~convexrecon.stack.adam.LAYERWISE_EPOCHS` epochs per stage) and ``run`` (or
    their fields as keywords) as in :func:`train_unrolled_end_to_end`; the network is returned on the
    run's device.

    ``run.checkpoint_dir``: each stage's Adam state is written there after every epoch
    (``unrolled_layerwise_adam_XX.pt``); the same call resumes. A stage's checkpoint is identified by
    the measurements, targets, settings and the frozen stages before it (not by its inputs, which the
    DC chain need not reproduce bit for bit), so a resumed stage may continue on inputs that differ
    from the interrupted run's by rounding.

    ``rule`` and ``holdout`` as in :func:`train_unrolled_end_to_end`, stage by stage (lr and weight decay of each
    stage chosen on the held-out slices' features; the stage's record holds the result as ``"rule"``).

    Returns the network and one record per stage.
    """
    _one_grid(data, "train_unrolled_layerwise_adam")
    stage_inputs, adam, run = with_keywords("train_unrolled_layerwise_adam", keywords, stage_inputs or StageInputs(),
                                            adam or AdamSettings(), run or RunOptions())
    adam, run = adam.with_epochs(LAYERWISE_EPOCHS), run.without_stop("train_unrolled_layerwise_adam")
    targets = check_images("targets", targets)
    _, targets, data, validation = placed_measurements(run, targets, data, ValidationSet.of(validation))
    net = UnrolledNet([], targets.shape[-1], concat_input, cg_iterations, {"method": "unrolled_layerwise_adam"},
                      stage_inputs=stage_inputs)
    held = None if rule is None else holdout_of(holdout, len(targets)).to(targets.device)
    with run.precision():
        records = _stagewise_adam(net, targets, data, width, kernel_size, [float(v) for v in lambdas], adam,
                                  validation, moved_initial(initial, targets),
                                  moved_initial(validation_initial, targets, "validation_initial"), chunk_size, run,
                                  rule, held)
    net.config["training"]["allow_tf32"] = run.allow_tf32
    return net, records


def _stagewise_adam(net: UnrolledNet, targets: Tensor, data: MeasuredData, width: int, kernel_size: int,
                    lambdas: list[float], adam: AdamSettings, validation: ValidationSet | None,
                    initial: Tensor | None, validation_initial: Tensor | None, chunk_size: int,
                    run: RunOptions, rule: TrainingRule | None = None,
                    held: Tensor | None = None) -> list[dict[str, Any]]:
    """Train the stages of the empty ``net`` in place (on the device of ``targets``, inside the run's TF32 mode)."""
    decays, seed, crop = adam.decays(len(lambdas)), run.seed, targets.shape[-1]
    net.to(targets.device, targets.dtype)  # dtype/device of the chain before any stage exists
    chain = EstimateChain(net, data, chunk_size, initial=initial)
    val_start = validation_initial
    if val_start is None and validation is not None:
        val_start = initial_estimates(net, validation.data, chunk_size)
    records: list[dict[str, Any]] = []
    # stage i's checkpoint is keyed on the measurements, the targets and the frozen stages before it, not on its
    # inputs: those come through the DC chain, whose FFTs need not repeat bit for bit in another process
    source = fingerprint(targets, data.kspace, data.maps, data.mask, data.crop, width, kernel_size, net.concat_input,
                         net.cg_iterations, lambdas, json.dumps(net.stage_inputs.settings()))
    for i, lam in enumerate(lambdas):
        start = time.perf_counter()
        h = chain.features()
        residual = targets - complex_to_channels(crop_center(chain.x, crop)).to(targets.dtype)
        block = relu_block(net.in_channels, width, kernel_size, seed + i).to(targets.device, targets.dtype)
        key = fingerprint(source, i, *[t for s in net.stages for t in s.block.state_dict().values()])
        if rule is None:
            history = adam_train(block, block, h, residual, adam, weight_decay=decays[i], seed=seed + i,
                                 checkpoint=checkpoint_file(run.checkpoint_dir,
                                                            f"unrolled_layerwise_adam_{i + 1:02d}.pt"),
                                 desc=f"unrolled layer-wise Adam stage {i + 1}", progress=run.progress, data_key=key)
        else:
            got = train_by_rule(block, block, h[~held], residual[~held], h[held], residual[held], adam, rule,
                                weight_decay=decays[i], seed=seed + i,
                                desc=f"unrolled layer-wise Adam stage {i + 1} (rule)", progress=run.progress)
            history = [r for r in got.curve if r["epoch"] > 0]
        block.requires_grad_(False)
        stage = UnrolledStage(block, lam)
        net.stages.append(stage)
        chain.advance(stage)
        record: dict[str, Any] = {"stage": i + 1, "seconds": time.perf_counter() - start, "lam": lam,
                                  "loss": history[-1]["loss"] if history else None}
        if rule is not None:
            record["rule"] = got.to_dict()
        if validation is not None:
            record.update(unrolled_metrics(net, validation.targets, validation.scales, validation.volumes,
                                           validation.data, chunk_size, initial=val_start))
        records.append(record)
    net.config.update({"stages": records, "training": {
        "epochs_per_stage": adam.epochs, "batch_size": adam.batch_size, "lr": adam.lr,
        "halve_every": adam.halve_every, "weight_decay": decays, "seed": seed, "lambdas": lambdas,
        **({} if rule is None else {"rule": rule.settings(), "epochs_per_stage": [r["rule"]["epochs"] for r in records],
                                    "lr": [r["rule"]["lr"] for r in records],
                                    "weight_decay": [r["rule"]["weight_decay"] for r in records]})}})
    return records
