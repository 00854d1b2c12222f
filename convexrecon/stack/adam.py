r"""The Adam loop shared by every non-convex baseline (``docs/design.md`` §9, Baselines).

The objective is the convex blocks' one divided by the number of pixels ``n``,

.. math:: \frac{1}{n}\sum_{\text{pixels}} \tfrac12\|\hat x - y\|^2 + \tfrac{\lambda}{2}\|W\|^2,

so ``weight_decay = beta / n`` matches a block's ``beta`` (Adam's ``weight_decay`` adds
``lambda W`` to the gradient). The learning rate is halved every ``halve_every`` epochs (the
paper's schedule: 1e-4, every 10). The loop writes a checkpoint atomically after every epoch
(model, optimizer, scheduler, epoch); the same call resumes there. Batches are shuffled by a
generator seeded with ``(seed, epoch)``, so a resumed run ends with the same model as an
uninterrupted one.

:class:`TrainingRule` and :func:`train_by_rule` are the one rule by which the benchmarks train every
Adam baseline to convergence: learning rate and weight decay chosen from a small grid by the loss on
held-out *training* slices (never the validation set), early stopping on that loss (relative
tolerance, patience), a maximum of epochs (reaching it is reported as not converged), and the
checkpoint of best held-out loss kept. :func:`adam_train` stays the fixed-epoch loop.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, restoring, run_payload, save_checkpoint


def pixel_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """``1/2 * sum of squares / number of pixels`` (channels summed, pixels (voxels) averaged)."""
    return 0.5 * (prediction - target).pow(2).sum() / prediction[:, 0].numel()


def _check_positive_ints(settings: Any, names: tuple[str, ...], optional: str) -> None:
    """``ValueError`` naming the first of ``names`` that is not an int > 0 (``optional`` may also be None)."""
    for name in names:
        value = getattr(settings, name)
        if value is None and name == optional:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"The '{name}' parameter must be an int > 0. Got {value!r} instead.")


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
        _check_positive_ints(self, ("epochs", "batch_size", "halve_every"), optional="epochs")
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
    batch_size = adam.batch_size
    bar = tqdm(range(first_epoch, last), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        loss = _epoch(forward, inputs, targets, optimizer, batch_size, seed, epoch)
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": loss, "seconds": time.perf_counter() - start}
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


def _epoch(forward: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor, optimizer: torch.optim.Optimizer,
           batch_size: int, seed: int, epoch: int) -> float:
    """One epoch of Adam over batches shuffled by a generator seeded with ``(seed, epoch)``; the mean loss."""
    n = len(inputs)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    total = 0.0
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = pixel_loss(forward(inputs[idx]), targets[idx])
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(idx)
    return total / n


# ---- the training rule of every Adam baseline -------------------------------------------------------

@torch.no_grad()
def held_out_loss(forward: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor, chunk_size: int = 8) -> float:
    """:func:`pixel_loss` over all of ``inputs`` (pixels averaged over the whole set), ``chunk_size`` at a time."""
    total, pixels = 0.0, 0
    for s in range(0, len(inputs), chunk_size):
        prediction = forward(inputs[s:s + chunk_size])
        total += float(0.5 * (prediction - targets[s:s + chunk_size]).double().pow(2).sum())
        pixels += prediction[:, 0].numel()
    return total / pixels


class Plateau:
    """Early stopping on a loss to minimise.

    An epoch *improves* when its loss is below ``(1 - rel_tol)`` times the best improving loss so far
    (the relative threshold of ``torch.optim.lr_scheduler.ReduceLROnPlateau``); :attr:`stopped` is True
    once ``patience`` epochs in a row have not improved, or a loss is not finite. :attr:`best_epoch`
    is the epoch of the smallest loss seen (improving or not): the checkpoint to keep.
    """

    def __init__(self, rel_tol: float, patience: int) -> None:
        self.rel_tol, self.patience = float(rel_tol), int(patience)
        self.reference = math.inf
        self.best, self.best_epoch, self.epoch, self.waiting = math.inf, 0, 0, 0
        self.diverged = False

    def update(self, loss: float) -> bool:
        """Record the next epoch's loss; True when it is the smallest so far (keep this checkpoint)."""
        self.epoch += 1
        if not math.isfinite(loss):
            self.diverged = True
            return False
        if loss < (1.0 - self.rel_tol) * self.reference:
            self.reference, self.waiting = loss, 0
        else:
            self.waiting += 1
        if loss < self.best:
            self.best, self.best_epoch = loss, self.epoch
            return True
        return False

    @property
    def stopped(self) -> bool:
        return self.diverged or self.waiting >= self.patience


SEARCHES = ("grid", "lr_then_decay")


@dataclass(frozen=True)
class TrainingRule:
    """The rule by which every Adam baseline is trained to convergence (:func:`train_by_rule`).

    Attributes
    ----------
    lrs
        Learning-rate candidates.
    decay_factors
        Weight-decay candidates as multiples of the trainer's base weight decay (``AdamSettings.weight_decay``,
        or a block's value): ``(0, 1, 10)`` tries no decay, the base and ten times it.
    search
        ``"grid"``: every (lr, decay) pair. ``"lr_then_decay"``: the lr at the first decay factor, then the
        decay factors at that lr (``len(lrs) + len(decay_factors) - 1`` runs).
    max_epochs
        The most epochs of one run; a run that reaches it without a plateau is not converged.
    patience, rel_tol
        A run stops when its held-out loss has not fallen below ``(1 - rel_tol)`` times its best for
        ``patience`` epochs (:class:`Plateau`).
    halve_every
        Epochs between halvings of the lr; None: a constant lr (a fixed decay would end runs by shrinking the
        step, not by convergence).
    snapshot_seconds
        When set, the chosen run's best checkpoint among the epochs finished within this many seconds of its
        start is kept too (:attr:`RuleResult.snapshot_state`): the baseline at another method's wall time.
    """

    lrs: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    decay_factors: tuple[float, ...] = (1.0,)
    search: str = "grid"
    max_epochs: int = 200
    patience: int = 10
    rel_tol: float = 1e-3
    halve_every: int | None = None
    snapshot_seconds: float | None = None

    def __post_init__(self) -> None:
        for name, minimum in (("lrs", 0.0), ("decay_factors", -1.0)):
            values = getattr(self, name)
            if not isinstance(values, (tuple, list)) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and v > minimum for v in values):
                bound = "> 0" if minimum == 0 else ">= 0"
                raise ValueError(f"The '{name}' parameter must be a non-empty sequence of numbers {bound}. "
                                 f"Got {values!r} instead.")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if self.search not in SEARCHES:
            raise ValueError(f"The 'search' parameter must be one of {SEARCHES}. Got {self.search!r} instead.")
        _check_positive_ints(self, ("max_epochs", "patience", "halve_every"), optional="halve_every")
        if not (isinstance(self.rel_tol, (int, float)) and 0 <= self.rel_tol < 1):
            raise ValueError(f"The 'rel_tol' parameter must be a number in [0, 1). Got {self.rel_tol!r} instead.")
        if self.snapshot_seconds is not None and not self.snapshot_seconds >= 0:
            raise ValueError(f"The 'snapshot_seconds' parameter must be >= 0 or None. "
                             f"Got {self.snapshot_seconds!r} instead.")

    def settings(self) -> dict[str, Any]:
        """The rule as JSON-ready values."""
        return {"lrs": list(self.lrs), "decay_factors": list(self.decay_factors), "search": self.search,
                "max_epochs": self.max_epochs, "patience": self.patience, "rel_tol": self.rel_tol,
                "halve_every": self.halve_every, "snapshot_seconds": self.snapshot_seconds}


@dataclass
class RuleResult:
    """What :func:`train_by_rule` chose and how the chosen run went.

    ``lr``, ``weight_decay``: the chosen pair; ``epochs``: epochs the chosen run trained; ``best_epoch``: the
    epoch of its kept checkpoint; ``converged``: its held-out loss met the plateau test within ``max_epochs``
    (False when it ran out of epochs still improving, or diverged); ``best_held_loss``: its held-out loss there; ``curve``: one record per epoch (epoch 0 = the
    initial network) with ``loss`` (training), ``held_loss`` and ``seconds`` since the run's start;
    ``seconds``: the whole rule's wall time, every candidate included; ``candidates``: one summary per run;
    ``snapshot``: the chosen run at ``rule.snapshot_seconds`` (epoch, held-out loss), its state in
    ``snapshot_state``.
    """

    lr: float
    weight_decay: float
    epochs: int
    best_epoch: int
    converged: bool
    best_held_loss: float
    curve: list[dict[str, float]]
    seconds: float
    candidates: list[dict[str, Any]]
    rule: dict[str, Any]
    snapshot: dict[str, float] | None = None
    snapshot_state: dict[str, Tensor] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Every field but the snapshot's state, JSON-ready."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "epochs": self.epochs, "best_epoch": self.best_epoch,
                "converged": self.converged, "best_held_loss": self.best_held_loss, "curve": self.curve,
                "seconds": self.seconds, "candidates": self.candidates, "rule": self.rule, "snapshot": self.snapshot}


class RuleHistory(list):
    """The chosen run's per-epoch records (a list, as :func:`adam_train`'s), with the :class:`RuleResult`."""

    def __init__(self, result: RuleResult) -> None:
        super().__init__(result.curve)
        self.result = result


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _rule_run(module: nn.Module, forward: Callable[[Tensor], Tensor], data: tuple[Tensor, Tensor, Tensor, Tensor],
              lr: float, decay: float, adam: AdamSettings, rule: TrainingRule, seed: int, desc: str,
              progress: bool) -> dict[str, Any]:
    """One candidate of :func:`train_by_rule`, from ``module``'s present state; leaves ``module`` trained."""
    inputs, targets, held_inputs, held_targets = data
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=decay)
    scheduler = (None if rule.halve_every is None else
                 torch.optim.lr_scheduler.StepLR(optimizer, step_size=rule.halve_every, gamma=0.5))
    plateau = Plateau(rule.rel_tol, rule.patience)
    start = time.perf_counter()
    first = held_out_loss(forward, held_inputs, held_targets)
    curve = [{"epoch": 0, "loss": None, "held_loss": first, "seconds": time.perf_counter() - start}]
    best = {"state": _state(module), "epoch": 0, "held_loss": first}
    budget = rule.snapshot_seconds
    snapshot = dict(best) if budget is not None else None
    bar = tqdm(range(rule.max_epochs), desc=f"{desc} lr {lr:g} wd {decay:.3g}", unit="epoch", disable=not progress)
    for epoch in bar:
        loss = _epoch(forward, inputs, targets, optimizer, adam.batch_size, seed, epoch)
        if scheduler is not None:
            scheduler.step()
        held = held_out_loss(forward, held_inputs, held_targets)
        seconds = time.perf_counter() - start
        curve.append({"epoch": epoch + 1, "loss": loss, "held_loss": held, "seconds": seconds})
        if plateau.update(held) and held < best["held_loss"]:
            best = {"state": _state(module), "epoch": epoch + 1, "held_loss": held}
        if snapshot is not None and seconds <= budget:
            snapshot = dict(best)
        bar.set_postfix(held=f"{held:.3g}")
        if plateau.stopped:
            break
    epochs = len(curve) - 1
    return {"lr": lr, "weight_decay": decay, "curve": curve, "best": best, "snapshot": snapshot, "epochs": epochs,
            "converged": plateau.stopped and not plateau.diverged, "diverged": plateau.diverged,
            "seconds": time.perf_counter() - start}


def train_by_rule(module: nn.Module, forward: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor,
                  held_inputs: Tensor, held_targets: Tensor, adam: AdamSettings, rule: TrainingRule, *,
                  weight_decay: float | None = None, seed: int = 0, desc: str = "Adam",
                  progress: bool = False) -> RuleResult:
    """Train ``module`` by Adam on ``pixel_loss(forward(x), y)`` by the :class:`TrainingRule` ``rule``.

    Every candidate (lr, weight decay) starts from ``module``'s state at the call and trains on
    ``(inputs, targets)`` (``adam.batch_size``, batches shuffled as in :func:`adam_train`) until its loss on
    ``(held_inputs, held_targets)`` -- held-out *training* slices, never the validation set -- plateaus or
    ``rule.max_epochs`` is reached. The chosen candidate has the smallest held-out loss (the first of equals
    in the search order); ``module`` ends in its best checkpoint. ``weight_decay`` (a number) replaces
    ``adam.weight_decay`` as the base the rule's ``decay_factors`` multiply.

    Runs are not checkpointed to disk; a killed run starts again.
    """
    base = adam.weight_decay if weight_decay is None else weight_decay
    if not isinstance(base, (int, float)) or not base >= 0:
        raise ValueError(f"train_by_rule needs one 'weight_decay' >= 0. Got {base!r} instead.")
    if len(inputs) == 0 or len(held_inputs) == 0:
        raise ValueError(f"train_by_rule needs training and held-out slices. Got {len(inputs)} and "
                         f"{len(held_inputs)} instead.")
    start = time.perf_counter()
    initial = _state(module)
    decays = [f * float(base) for f in rule.decay_factors]
    runs: dict[tuple[float, float], dict[str, Any]] = {}
    kept: dict[str, Any] | None = None

    def run(lr: float, decay: float) -> dict[str, Any]:
        nonlocal kept
        if (lr, decay) not in runs:
            module.load_state_dict(initial)
            got = _rule_run(module, forward, (inputs, targets, held_inputs, held_targets), lr, decay, adam, rule,
                            seed, desc, progress)
            if kept is None or _score(got) < _score(kept):
                kept, dropped = got, kept
            else:
                dropped = got
            if dropped is not None:  # only the chosen run's states are kept
                dropped["best"] = {k: v for k, v in dropped["best"].items() if k != "state"}
                dropped["snapshot"] = None
            runs[(lr, decay)] = got
        return runs[(lr, decay)]

    if rule.search == "grid":
        for lr in rule.lrs:
            for decay in decays:
                run(lr, decay)
    else:
        chosen_lr = min(rule.lrs, key=lambda lr: _score(run(lr, decays[0])))
        for decay in decays:
            run(chosen_lr, decay)
    assert kept is not None
    module.load_state_dict(kept["best"]["state"])
    snapshot = kept["snapshot"]
    return RuleResult(
        lr=kept["lr"], weight_decay=kept["weight_decay"], epochs=kept["epochs"], best_epoch=kept["best"]["epoch"],
        converged=kept["converged"], best_held_loss=kept["best"]["held_loss"], curve=kept["curve"],
        seconds=time.perf_counter() - start, rule=rule.settings(),
        candidates=[{"lr": r["lr"], "weight_decay": r["weight_decay"], "best_held_loss": r["best"]["held_loss"],
                     "best_epoch": r["best"]["epoch"], "epochs": r["epochs"], "converged": r["converged"],
                     "diverged": r["diverged"], "seconds": r["seconds"]} for r in runs.values()],
        snapshot=None if snapshot is None else {"seconds": rule.snapshot_seconds, "epoch": snapshot["epoch"],
                                                "held_loss": snapshot["held_loss"]},
        snapshot_state=None if snapshot is None else snapshot["state"])


def _score(run: dict[str, Any]) -> float:
    """A candidate's best held-out loss; infinite when not finite."""
    value = run["best"]["held_loss"]
    return value if math.isfinite(value) else math.inf
