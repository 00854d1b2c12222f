r"""Non-convex baselines on the layer-wise CNN's architecture (``docs/design.md`` §9, Baselines).

* **End-to-end**: the whole :class:`~convexrecon.stack.network.ReconNet` trained by Adam
  (:mod:`~convexrecon.stack.adam`: the convex blocks' objective per pixel, lr halved every
  ``halve_every`` epochs).
* **Non-convex layer-wise** (Belilovsky et al., ICML 2019): block ``i``
  (``first_i -> relu -> second_i``) trained by Adam on the same objective
  on ``(h_{i-1}, y - x_0)``, then frozen; ``second_i`` kept only for the last block.

Both run on one device (:class:`~convexrecon.stack.run.RunOptions`). Given a
:class:`~convexrecon.stack.adam.TrainingRule` and a ``holdout`` mask of training slices, each network
(each block) is trained by that rule (:func:`~convexrecon.stack.adam.train_by_rule`): lr and weight
decay chosen on the held-out slices, early stopping, the best checkpoint kept. bfloat16 autocast is not
offered: its effect on the reached PSNR cannot be checked on a CPU. Both write a checkpoint
atomically after every epoch; the same call on the same directory resumes there.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from convexrecon.checks import check_images
from convexrecon.metrics import validation_metrics
from convexrecon.stack.adam import (END_TO_END_EPOCHS, LAYERWISE_EPOCHS, AdamSettings, RuleHistory, TrainingRule,
                                    adam_config, adam_train, pixel_loss, train_by_rule)
from convexrecon.stack.checkpoint import checkpoint_file
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.run import RunOptions, with_keywords
from convexrecon.stack.settings import ValidationSet

__all__ = ["AdamSettings", "pixel_loss", "train_end_to_end", "train_layerwise_adam"]


def train_end_to_end(net: ReconNet, inputs: Tensor, targets: Tensor, *, adam: AdamSettings | None = None,
                     validation: ValidationSet | tuple | None = None, run: RunOptions | None = None,
                     rule: TrainingRule | None = None, holdout: Tensor | None = None,
                     **keywords: Any) -> list[dict[str, float]]:
    """Train ``net`` (in place) end to end; returns per-epoch loss (and validation PSNR/SSIM).

    Parameters
    ----------
    adam
        :class:`~convexrecon.stack.adam.AdamSettings` (default :data:`~convexrecon.stack.adam.END_TO_END_EPOCHS`
        epochs); its fields may be given as keywords too (``epochs=5``).
    validation
        A :class:`~convexrecon.stack.settings.ValidationSet` or ``(inputs, targets, scales, volumes)``;
        evaluated after every epoch when given.
    run
        :class:`~convexrecon.stack.run.RunOptions` (or its fields as keywords). ``device`` None: train where
        ``inputs`` are (``targets`` and the validation images on the same device); ``net`` is moved
        there and stays there afterwards.
    rule, holdout
        A :class:`~convexrecon.stack.adam.TrainingRule` and a boolean mask of the held-out training slices: the
        network is trained on the others by that rule (``adam.epochs`` and ``lr`` unused, ``weight_decay`` the
        base of the decay candidates; no checkpoints, no per-epoch validation) and ends in its best checkpoint.
        Returns a :class:`~convexrecon.stack.adam.RuleHistory` (the chosen run's records, ``.result`` the
        :class:`~convexrecon.stack.adam.RuleResult`); ``net.config["training"]["rule"]`` holds the result too.
    """
    if rule is not None:
        adam, run = with_keywords("train_end_to_end", keywords, adam or AdamSettings(), run or RunOptions())
        inputs, targets, _ = _placed(inputs, targets, None, run)
        held = holdout_of(holdout, len(inputs)).to(inputs.device)
        net.to(inputs.device)
        with run.precision():
            result = train_by_rule(net, net, inputs[~held], targets[~held], inputs[held], targets[held], adam, rule,
                                   seed=run.seed, desc="end-to-end (Adam, rule)", progress=run.progress)
        net.config.update({"method": "end_to_end", "training": {
            **adam_config(replace(adam, epochs=result.epochs, lr=result.lr), run.seed),
            "weight_decay": result.weight_decay, "rule": result.to_dict()}, "history": result.curve})
        return RuleHistory(result)
    adam, run = with_keywords("train_end_to_end", keywords, adam or AdamSettings(), run or RunOptions())
    adam = adam.with_epochs(END_TO_END_EPOCHS)
    inputs, targets, validation = _placed(inputs, targets, validation, run)
    net.to(inputs.device)
    on_epoch = None if validation is None else (
        lambda e: validation_metrics(net, validation.inputs, validation.targets, validation.scales,
                                     validation.volumes))
    with run.precision():
        history = adam_train(net, net, inputs, targets, adam, seed=run.seed,
                             checkpoint=checkpoint_file(run.checkpoint_dir, "end_to_end.pt"),
                             stop_after=run.stop_after, desc="end-to-end (Adam)", progress=run.progress,
                             on_epoch=on_epoch)
    net.config.update({"method": "end_to_end", "training": adam_config(
        adam, run.seed, schedule=f"lr halved every {adam.halve_every} epochs"), "history": history})
    return history


def train_layerwise_adam(inputs: Tensor, targets: Tensor, widths: Sequence[int], kernel_size: int, *,
                         adam: AdamSettings | None = None, validation: ValidationSet | tuple | None = None,
                         run: RunOptions | None = None, rule: TrainingRule | None = None,
                         holdout: Tensor | None = None, **keywords: Any) -> tuple[ReconNet, list[dict[str, Any]]]:
    """Non-convex layer-wise training: each two-layer block by Adam, then frozen.

    ``adam`` (default :data:`~convexrecon.stack.adam.LAYERWISE_EPOCHS` epochs per block; ``weight_decay``
    one value or one per block), ``validation`` and ``run`` as in :func:`train_end_to_end`: the features
    of every block stay on the run's device; the network is returned on it.

    ``rule`` and ``holdout`` as in :func:`train_end_to_end`, block by block: each block's lr and weight decay
    (candidates: the rule's factors times the block's value) chosen on the held-out slices' features; the
    block's record holds its :class:`~convexrecon.stack.adam.RuleResult` as ``"rule"``.

    Returns the network and one record per block (validation metrics when ``validation`` is given,
    seconds, final loss).
    """
    adam, run = with_keywords("train_layerwise_adam", keywords, adam or AdamSettings(), run or RunOptions())
    run = run.without_stop("train_layerwise_adam")
    adam = adam.with_epochs(LAYERWISE_EPOCHS)
    inputs, targets, validation = _placed(inputs, targets, validation, run)
    with run.precision():
        held = None if rule is None else holdout_of(holdout, len(inputs)).to(inputs.device)
        return _layerwise_adam(inputs, targets, list(widths), kernel_size, adam, validation, run, rule, held)


def _layerwise_adam(inputs: Tensor, targets: Tensor, widths: list[int], kernel_size: int, adam: AdamSettings,
                    validation: ValidationSet | None, run: RunOptions, rule: TrainingRule | None = None,
                    held: Tensor | None = None) -> tuple[ReconNet, list[dict[str, Any]]]:
    """:func:`train_layerwise_adam` on checked tensors on one device, inside its TF32 mode."""
    decays, seed = adam.decays(len(widths)), run.seed
    template = ReconNet.plain(widths, kernel_size, seed=seed, spatial_dims=inputs.ndim - 2).to(inputs.device)
    layers: list[HiddenLayer] = []
    records: list[dict[str, Any]] = []
    residual = targets - inputs
    second = template.second
    for i, layer in enumerate(template.layers):
        with torch.no_grad():
            h = inputs
            for frozen in layers:
                h = frozen(h)
        torch.manual_seed(seed + 1000 + i)
        head = type(layer.first)(layer.first.out_channels, 2, 1, bias=False).to(inputs.device)
        block = nn.Sequential(layer, head)
        start = time.perf_counter()
        if rule is None:
            history = adam_train(block, block, h, residual, adam, weight_decay=decays[i], seed=seed + i,
                                 checkpoint=checkpoint_file(run.checkpoint_dir, f"layerwise_adam_block_{i + 1:02d}.pt"),
                                 desc=f"layer-wise Adam block {i + 1}", progress=run.progress)
        else:
            got = train_by_rule(block, block, h[~held], residual[~held], h[held], residual[held], adam, rule,
                                weight_decay=decays[i], seed=seed + i, desc=f"layer-wise Adam block {i + 1} (rule)",
                                progress=run.progress)
            history = [r for r in got.curve if r["epoch"] > 0]
        for p in layer.parameters():
            p.requires_grad_(False)
        layers.append(layer)
        second = head
        record: dict[str, Any] = {"block": i + 1, "seconds": time.perf_counter() - start,
                                  "loss": history[-1]["loss"] if history else None}
        if rule is not None:
            record["rule"] = got.to_dict()
        if validation is not None:
            record.update(validation_metrics(ReconNet(list(layers), second), validation.inputs, validation.targets,
                                             validation.scales, validation.volumes))
        records.append(record)
    for p in second.parameters():
        p.requires_grad_(False)
    net = ReconNet(layers, second, {"method": "layerwise_adam", "blocks": records, "training": {
        "epochs_per_block": adam.epochs, "batch_size": adam.batch_size, "lr": adam.lr,
        "halve_every": adam.halve_every, "weight_decay": decays, "seed": seed,
        **({} if rule is None else {"rule": rule.settings(), "epochs_per_block": [r["rule"]["epochs"] for r in records],
                                    "lr": [r["rule"]["lr"] for r in records],
                                    "weight_decay": [r["rule"]["weight_decay"] for r in records]})}})
    net.requires_grad_(True)
    return net, records


def _placed(inputs: Any, targets: Any, validation: Any,
            run: RunOptions) -> tuple[Tensor, Tensor, ValidationSet | None]:
    """Checked training tensors and validation set on the run's device (``device``, or where the inputs are)."""
    validation = ValidationSet.of(validation)
    device = run.device_of(validation, inputs=inputs, targets=targets)
    inputs, targets = check_images("inputs", inputs), check_images("targets", targets)
    if validation is not None:
        check_images("val_inputs", validation.inputs)
        check_images("val_targets", validation.targets)
        validation = validation.to(device)
    return inputs.to(device), targets.to(device), validation


def holdout_of(holdout: Any, count: int) -> Tensor:
    """``holdout`` checked: a boolean mask of ``count`` training slices with some slices on either side."""
    if not (torch.is_tensor(holdout) and holdout.dtype == torch.bool and tuple(holdout.shape) == (count,)):
        raise ValueError(f"The 'holdout' parameter must be a boolean tensor of shape ({count},) with a rule. "
                         f"Got {getattr(holdout, 'dtype', type(holdout).__name__)} "
                         f"{tuple(getattr(holdout, 'shape', ()))} instead.")
    if not 0 < int(holdout.sum()) < count:
        raise ValueError(f"The 'holdout' parameter must hold out some but not all of the {count} training slices. "
                         f"Got {int(holdout.sum())} held out.")
    return holdout
