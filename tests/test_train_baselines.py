"""End-to-end and non-convex layer-wise baselines: resume, architecture, bad input."""

from __future__ import annotations

import pytest
import torch

from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.network import ReconNet
from convexrecon.stack.persist import load_network


def _data(n: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(n, 2, 9, 7, generator=gen)
    return target + 0.3 * torch.randn(n, 2, 9, 7, generator=gen), target


def _e2e(**kwargs) -> ReconNet:
    x, y = _data()
    net = ReconNet.plain([4, 3], 3, seed=1)
    train_end_to_end(net, x, y, epochs=4, batch_size=2, lr=1e-2, weight_decay=1e-3, seed=2, **kwargs)
    return net


def test_end_to_end_lowers_the_loss_and_records_validation() -> None:
    x, y = _data()
    net = ReconNet.plain([4, 3], 3, seed=1)
    hist = train_end_to_end(net, x, y, epochs=5, batch_size=2, lr=1e-2, validation=(x[:2], y[:2], torch.ones(2), ["v", "v"]))
    assert len(hist) == 5 and hist[-1]["loss"] < hist[0]["loss"]
    assert "psnr" in hist[-1]


def test_end_to_end_resume_equals_uninterrupted(tmp_path) -> None:
    full = _e2e(checkpoint_dir=tmp_path / "a")
    _e2e(checkpoint_dir=tmp_path / "b", stop_after=2)
    resumed = _e2e(checkpoint_dir=tmp_path / "b")
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)


def test_layerwise_adam_same_architecture_and_resume(tmp_path) -> None:
    x, y = _data()
    net, records = train_layerwise_adam(x, y, [4, 3], 3, epochs=3, batch_size=2, lr=1e-2, seed=0,
                                        checkpoint_dir=tmp_path, validation=(x, y, torch.ones(5), ["v"] * 5))
    assert [r["block"] for r in records] == [1, 2] and all("psnr" in r for r in records)
    assert [layer.first.out_channels for layer in net.layers] == [4, 3]
    again, _ = train_layerwise_adam(x, y, [4, 3], 3, epochs=3, batch_size=2, lr=1e-2, seed=0, checkpoint_dir=tmp_path)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(again.state_dict()[k], v, rtol=0, atol=0)
    net.save(tmp_path / "model")
    with torch.no_grad():
        torch.testing.assert_close(load_network(tmp_path / "model")(x), net(x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, match", [({"epochs": 0}, "'epochs'"), ({"batch_size": -1}, "'batch_size'"),
                                           ({"lr": 0.0}, "'lr'"), ({"weight_decay": -1.0}, "'weight_decay'")])
def test_bad_input(kwargs, match) -> None:
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        train_end_to_end(ReconNet.plain([2], 3), x, y, **kwargs)


def test_learning_rate_schedule_follows_halve_every(tmp_path) -> None:
    """lr 1e-2 halved every 2 epochs: after 4 epochs the checkpointed scheduler is at 1e-2 / 4."""
    net = _e2e(checkpoint_dir=tmp_path, halve_every=2)
    assert net.config["training"]["halve_every"] == 2
    state = torch.load(tmp_path / "end_to_end.pt", weights_only=False)
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(1e-2 / 4)
    with pytest.raises(ValueError, match="halve_every"):
        _e2e(halve_every=0)


def test_end_to_end_by_the_rule_exposes_its_choice_and_ends_at_the_best_checkpoint() -> None:
    from convexrecon.stack.adam import TrainingRule, held_out_loss

    x, y = _data(6)
    held = torch.tensor([False] * 4 + [True] * 2)
    net = ReconNet.plain([4, 3], 3, seed=1)
    rule = TrainingRule(lrs=(1e-3, 1e-2), decay_factors=(0.0, 1.0), max_epochs=30, patience=5)
    history = train_end_to_end(net, x, y, batch_size=2, weight_decay=1e-3, rule=rule, holdout=held)
    result = history.result
    assert len(result.candidates) == 4
    assert (result.lr, result.weight_decay) == min(((c["lr"], c["weight_decay"]) for c in result.candidates),
                                                   key=lambda k: next(c["best_held_loss"] for c in result.candidates
                                                                      if (c["lr"], c["weight_decay"]) == k))
    with torch.no_grad():
        assert held_out_loss(net, x[held], y[held]) == pytest.approx(result.best_held_loss, rel=1e-9)
    assert net.config["training"]["rule"]["converged"] == result.converged
    assert net.config["training"]["lr"] == result.lr and len(history) == result.epochs + 1
    with pytest.raises(ValueError, match="'holdout'"):
        train_end_to_end(ReconNet.plain([2], 3), x, y, rule=rule, holdout=torch.ones(6, dtype=torch.bool))


def test_layerwise_adam_by_the_rule_records_each_block() -> None:
    from convexrecon.stack.adam import TrainingRule

    x, y = _data(6)
    held = torch.tensor([False] * 4 + [True] * 2)
    rule = TrainingRule(lrs=(1e-2,), max_epochs=4, patience=2)
    net, records = train_layerwise_adam(x, y, [4, 3], 3, batch_size=2, weight_decay=[0.0, 1e-3], rule=rule,
                                        holdout=held)
    assert [r["rule"]["epochs"] for r in records] == net.config["training"]["epochs_per_block"]
    for r in records:  # converged exactly when the held-out curve met the plateau test (patience 2, rel_tol 1e-3)
        held_losses = [c["held_loss"] for c in r["rule"]["curve"][1:]]
        stalled = [b >= (1 - 1e-3) * min(held_losses[:i + 1]) for i, b in enumerate(held_losses[1:])]
        assert r["rule"]["epochs"] <= 4
        assert r["rule"]["converged"] == any(a and b for a, b in zip(stalled, stalled[1:]))
    assert [r["rule"]["weight_decay"] for r in records] == [0.0, 1e-3]
