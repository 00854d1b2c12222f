"""The unrolled Adam baselines trained by the training rule: the choice, the kept checkpoint, the records."""

from __future__ import annotations

import pytest
import torch

from convexrecon.stack.adam import TrainingRule, held_out_loss
from convexrecon.stack.unrolled import unrolled_plain
from convexrecon.stack.unrolled_baselines import train_unrolled_end_to_end, train_unrolled_layerwise_adam
from tests.test_unrolled import CROP, toy_data


def test_unrolled_end_to_end_by_the_rule_ends_at_its_best_held_out_checkpoint() -> None:
    _, targets, data, _ = toy_data(5, seed=3)
    held = torch.tensor([False, False, False, True, True])
    net = unrolled_plain(2, 4, 3, [0.1, 1.0], CROP, cg_iterations=3, seed=0)
    rule = TrainingRule(lrs=(1e-3, 1e-2), max_epochs=3, patience=2, snapshot_seconds=0.0)
    history = train_unrolled_end_to_end(net, targets, data, batch_size=2, weight_decay=1e-4, rule=rule, holdout=held)
    result = history.result
    losses = {c["lr"]: c["best_held_loss"] for c in result.candidates}
    assert result.lr == min(losses, key=losses.get) and len(history) == result.epochs + 1
    ids = torch.nonzero(held).flatten()
    got = held_out_loss(lambda i: net(data.kspace[i], data.maps[i], data.mask[i]), ids, targets[held])
    assert got == pytest.approx(result.best_held_loss, rel=1e-5)
    assert result.snapshot["epoch"] == 0 and net.config["training"]["rule"]["lr"] == result.lr


def test_unrolled_layerwise_adam_by_the_rule_keeps_the_lambdas_and_records_each_stage() -> None:
    _, targets, data, _ = toy_data(5, seed=3)
    held = torch.tensor([False, False, False, True, True])
    rule = TrainingRule(lrs=(1e-2,), decay_factors=(0.0, 1.0), max_epochs=3, patience=2)
    net, records = train_unrolled_layerwise_adam(targets, data, 4, 3, [0.1, 1.0], cg_iterations=3, batch_size=2,
                                                 weight_decay=[1e-3, 1e-3], rule=rule, holdout=held)
    assert [float(s.lam) for s in net.stages] == pytest.approx([0.1, 1.0])
    assert [len(r["rule"]["candidates"]) for r in records] == [2, 2]
    assert net.config["training"]["epochs_per_stage"] == [r["rule"]["epochs"] for r in records]
