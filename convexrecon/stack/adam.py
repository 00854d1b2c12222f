r"""The Adam loop shared by every non-convex baseline (``docs/design.md`` §9, Baselines).

The objective is the convex blocks' one divided by the number of pixels ``n``,

.. math:: \frac{1}{n}\sum_{\text{pixels}} \tfrac12\|\hat x - y\|^2 + \tfrac{\lambda}{2}\|W\|^2,

so ``weight_decay = beta / n`` matches a block's ``beta`` (Adam's ``weight_decay`` adds
``lambda W`` to the gradient). The learning rate is halved every ``halve_every`` epochs (the
paper's schedule: 1e-4, every 10). The loop writes a checkpoint atomically after every epoch
(model, optimizer, scheduler, epoch); the same call resumes there. Batches are shuffled by a
generator seeded with ``(seed, epoch)``, so a resumed run ends with the same model as an
uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, restoring, run_payload, save_checkpoint


def pixel_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """``1/2 * sum of squares / number of pixels`` (channels summed, pixels (voxels) averaged)."""
    return 0.5 * (prediction - target).pow(2).sum() / prediction[:, 0].numel()


@dataclass(frozen=True)
class AdamSettings:
    """Settings of the Adam baselines.

    Attributes
    ----------
    epochs
        Epochs (per block or stage for the layer-wise baselines); None: the trainer's default
        (:data:`END_TO_END_EPOCHS` end to end, :data:`LAYERWISE_EPOCHS` per block).
    batch_size, lr
        Batch size and initial learning rate.
    halve_every
        Epochs between halvings of the learning rate.
    weight_decay
        Adam's weight decay; the layer-wise baselines also take one value per block.
    """

    epochs: int | None = None
    batch_size: int = 4
    lr: float = 1e-4
    halve_every: int = 10
    weight_decay: float | Sequence[float] = 0.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "halve_every"):
            value = getattr(self, name)
            if value is None and name == "epochs":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"The '{name}' parameter must be an int > 0. Got {value!r} instead.")
        if not self.lr > 0:
            raise ValueError(f"The 'lr' parameter must be > 0. Got {self.lr!r} instead.")
        decays = self.weight_decay if isinstance(self.weight_decay, (list, tuple)) else [self.weight_decay]
        for value in decays:
            if not value >= 0:
                raise ValueError(f"The 'weight_decay' parameter must be >= 0. Got {value!r} instead.")

    def with_epochs(self, default: int) -> "AdamSettings":
        """These settings with ``epochs`` set to ``default`` when None."""
        return self if self.epochs is not None else replace(self, epochs=default)

    def decays(self, count: int) -> list[float]:
        """One weight decay per block (stage): the single value repeated, or the given sequence."""
        if isinstance(self.weight_decay, (int, float)):
            return [float(self.weight_decay)] * count
        return list(self.weight_decay)


END_TO_END_EPOCHS = 40
LAYERWISE_EPOCHS = 30


def adam_train(module: nn.Module, forward: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor,
               adam: AdamSettings, *, weight_decay: float | None = None, seed: int = 0,
               checkpoint: Path | None = None, stop_after: int | None = None, desc: str = "Adam",
               progress: bool = False, on_epoch: Callable[[int], dict[str, float]] | None = None,
               data_key: str | None = None) -> list[dict[str, float]]:
    """Train ``module`` by Adam on ``pixel_loss(forward(x), y)``; returns one record per epoch.

    ``adam.epochs`` must be set; ``weight_decay`` (a number) replaces ``adam.weight_decay``, for
    the layer-wise baselines' value per block. ``checkpoint`` is a file rewritten atomically after
    every epoch and read on a restart; it is refused when the settings or the data differ. The data
    are identified by the hash of ``inputs`` and ``targets``, or by ``data_key`` when given: a
    fingerprint of what the inputs are computed from, for inputs that a restart cannot reproduce bit
    for bit (e.g. the estimates of an unrolled network's earlier stages, computed through FFTs whose
    multithreaded rounding may vary).
    """
    epochs, decay = adam.epochs, adam.weight_decay if weight_decay is None else weight_decay
    if epochs is None or not isinstance(decay, (int, float)):
        raise ValueError(f"adam_train needs 'epochs' and one 'weight_decay'. Got {epochs!r} and {decay!r}.")
    params = list(module.parameters())
    if params and params[0].device != inputs.device:
        raise ValueError(f"The module and the 'inputs' must be on one device. Got the module on {params[0].device}, "
                         f"'inputs' on {inputs.device} instead.")
    optimizer = torch.optim.Adam(module.parameters(), lr=adam.lr, weight_decay=decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=adam.halve_every, gamma=0.5)
    settings = {"epochs": epochs, "batch_size": adam.batch_size, "lr": adam.lr, "weight_decay": decay,
                "halve_every": adam.halve_every, "seed": seed}
    key = fingerprint(inputs, targets) if data_key is None else str(data_key)
    history: list[dict[str, float]] = []
    first_epoch = 0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, settings, key, ("module", "optimizer", "scheduler", "epoch", "history"))
        with restoring(checkpoint, "to restart this training"):
            module.load_state_dict(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        first_epoch, history = int(state["epoch"]), list(state["history"])
    last = epochs if stop_after is None else min(epochs, int(stop_after))
    n, batch_size = len(inputs), adam.batch_size
    bar = tqdm(range(first_epoch, last), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        total = 0.0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = pixel_loss(forward(inputs[idx]), targets[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": total / n, "seconds": time.perf_counter() - start}
        if on_epoch is not None:
            record.update(on_epoch(epoch + 1))
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3g}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, run_payload(settings, key, module=module.state_dict(),
                                                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                                    epoch=epoch + 1, history=history))
    return history


def adam_config(adam: AdamSettings, seed: int, **extra: Any) -> dict[str, Any]:
    """The ``training`` entry a baseline stores in its network's config."""
    return {"epochs": adam.epochs, "batch_size": adam.batch_size, "lr": adam.lr, "weight_decay": adam.weight_decay,
            "seed": seed, "halve_every": adam.halve_every, **extra}
