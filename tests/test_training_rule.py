"""The training rule of every Adam baseline: plateau stop, lr choice, best checkpoint, not converged at the maximum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from convexrecon.stack.adam import AdamSettings, Plateau, TrainingRule, held_out_loss, train_by_rule


class Scale(nn.Module):
    """``w * x`` with one weight, starting at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_plateau_stops_after_patience_epochs_without_relative_improvement() -> None:
    # improves by 50 %, 50 %, then three epochs stay above (1 - rel_tol) x 2 = 1.998: stops at epoch 6 (patience 3)
    curve = [8.0, 4.0, 2.0, 1.9995, 1.999, 1.9985, 1.0]
    plateau = Plateau(rel_tol=1e-3, patience=3)
    stops = []
    for loss in curve:
        plateau.update(loss)
        stops.append(plateau.stopped)
    assert stops == [False, False, False, False, False, True, False]
    assert plateau.epoch == 7 and plateau.best == 1.0 and plateau.best_epoch == 7
    # the smallest loss is kept even when its improvement is below the tolerance
    again = Plateau(rel_tol=1e-3, patience=3)
    for loss in curve[:6]:
        again.update(loss)
    assert again.best_epoch == 6 and again.best == 1.9985 and again.stopped


def test_plateau_stops_at_a_non_finite_loss() -> None:
    plateau = Plateau(rel_tol=0.0, patience=10)
    plateau.update(1.0)
    plateau.update(math.nan)
    assert plateau.stopped and plateau.diverged and plateau.best_epoch == 1


def test_rule_picks_the_lr_of_lowest_held_out_loss_and_never_sees_other_data() -> None:
    x, hx = _images(4, 0), _images(2, 1)
    module = Scale()
    rule = TrainingRule(lrs=(1e-5, 0.05), max_epochs=60, patience=5, rel_tol=1e-4)
    result = train_by_rule(module, module, x, 2 * x, hx, 2 * hx, AdamSettings(batch_size=2), rule)
    losses = {c["lr"]: c["best_held_loss"] for c in result.candidates}
    assert result.lr == 0.05 == min(losses, key=losses.get)
    assert losses[0.05] < losses[1e-5]
    assert result.best_held_loss == pytest.approx(held_out_loss(module, hx, 2 * hx), rel=1e-12)
    assert [c["lr"] for c in result.candidates] == [1e-5, 0.05]


def test_rule_keeps_the_checkpoint_of_best_held_out_loss() -> None:
    # the fit slices pull w towards 2, the held-out slices are best at w = 1: the held-out loss falls, then rises
    x, hx = _images(4, 0), _images(4, 1)
    module = Scale()
    rule = TrainingRule(lrs=(0.05,), max_epochs=200, patience=8, rel_tol=1e-3)
    result = train_by_rule(module, module, x, 2 * x, hx, hx, AdamSettings(batch_size=4), rule)
    held = [r["held_loss"] for r in result.curve]
    best = min(range(len(held)), key=held.__getitem__)
    assert result.best_epoch == best and 0 < best < result.epochs
    assert held[-1] > held[best]  # it went on past the best epoch and came back to it
    assert held_out_loss(module, hx, hx) == pytest.approx(held[best], rel=1e-12)
    assert result.converged and result.epochs == best + rule.patience


def test_rule_reports_not_converged_at_the_maximum_of_epochs() -> None:
    x, hx = _images(4, 0), _images(2, 1)
    module = Scale()
    rule = TrainingRule(lrs=(1e-3,), max_epochs=5, patience=3)
    result = train_by_rule(module, module, x, 2 * x, hx, 2 * hx, AdamSettings(batch_size=2), rule)
    assert result.epochs == 5 and not result.converged
    assert [r["epoch"] for r in result.curve] == [0, 1, 2, 3, 4, 5]
    assert result.best_epoch == 5  # still improving


def test_weight_decay_is_chosen_with_the_lr_and_snapshot_kept() -> None:
    x, hx = _images(4, 0), _images(2, 1)
    module = Scale()
    rule = TrainingRule(lrs=(0.05, 0.1), decay_factors=(0.0, 1.0), search="lr_then_decay", max_epochs=20,
                        snapshot_seconds=0.0)
    result = train_by_rule(module, module, x, 2 * x, hx, 2 * hx, AdamSettings(batch_size=2, weight_decay=50.0), rule)
    runs = [(c["lr"], c["weight_decay"]) for c in result.candidates]
    assert len(runs) == 3 and runs[:2] == [(0.05, 0.0), (0.1, 0.0)]
    assert result.weight_decay == 0.0  # a decay of 50 holds w far from 2
    assert result.snapshot == {"seconds": 0.0, "epoch": 0, "held_loss": result.curve[0]["held_loss"]}
    assert float(result.snapshot_state["w"]) == 0.0


@pytest.mark.parametrize("kwargs, match", [({"lrs": ()}, "'lrs'"), ({"lrs": (0.0,)}, "'lrs'"),
                                           ({"decay_factors": (-1.0,)}, "'decay_factors'"),
                                           ({"search": "random"}, "'search'"), ({"max_epochs": 0}, "'max_epochs'"),
                                           ({"patience": 0}, "'patience'"), ({"rel_tol": 1.0}, "'rel_tol'")])
def test_bad_rule(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        TrainingRule(**kwargs)
