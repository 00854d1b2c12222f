"""``benchmarks.kit``: the typed knee configurations, the unrolled block inputs, the weight-decay choice and the
recorded command line (the benchmark runs themselves are benchmarks)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmarks.kit.configs import CONFIGS, CS_INPUTS, KneeConfig, UnrolledConfig, estimate_seconds, hidden_width
from benchmarks.kit.methods import choose_weight_decay, unrolled_options
from benchmarks.kit.runinfo import command
from convexrecon.devices import DeviceError, default_device, parse_device


def test_configurations_are_frozen_and_json_ready() -> None:
    assert set(CONFIGS) == {"quick", "default", "full", "gpu"}
    for cfg in CONFIGS.values():
        assert isinstance(cfg, KneeConfig) and isinstance(cfg.unrolled, UnrolledConfig)
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.crop = 1  # type: ignore[misc]
        saved = json.loads(json.dumps(cfg.to_dict()))
        assert saved["synthetic"]["shape"] == list(cfg.synthetic.shape)
        assert saved["unrolled"]["cs_inputs"] == [list(c) for c in CS_INPUTS]
        assert all(v > 0 for v in estimate_seconds(cfg, "cpu").values())
    quick = CONFIGS["quick"]
    assert hidden_width(quick) == 8 and hidden_width(dataclasses.replace(quick, activation="relu")) == 16
    assert quick.cs_val_slices is None and not quick.allow_tf32 and CONFIGS["gpu"].cs_val_slices == 4


def test_overrides_from_json_become_tuples() -> None:
    u = dataclasses.replace(CONFIGS["quick"].unrolled, lambdas=[0.1, 1.0], cs_inputs=[[1, "haar"]])
    assert u.lambdas == (0.1, 1.0) and u.cs_inputs == ((1, "haar"),)
    assert "stages" in UnrolledConfig.setting_names() and "stage" not in UnrolledConfig.setting_names()


def test_unrolled_options_scale_the_cs_inputs_by_the_cs_lambda() -> None:
    # noise-relative weights: tests/test_bench_shift.py
    u = dataclasses.replace(CONFIGS["quick"].unrolled, cs_relative="max", dc_relative="fixed")
    options = unrolled_options(u, 0.01)
    assert options["cs_lambda"] == 0.01 and options["shrink"] == [] and options["bias"] is True
    assert options["dc_noise"] == 0.0
    assert options["cs_inputs"] == tuple((float(f) * 0.01, w) for f, w in CS_INPUTS)
    with pytest.raises(ValueError, match="cs_lambda"):
        unrolled_options(u, None)
    plain = unrolled_options(dataclasses.replace(u, cs_iterations=0), None)
    assert plain["cs_lambda"] == 0.0 and plain["cs_inputs"] == ()


class _Scaled(torch.nn.Module):
    """A stand-in network whose prediction is its input times ``decay``."""

    def __init__(self, decay: float) -> None:
        super().__init__()
        self.decay = torch.nn.Parameter(torch.tensor(decay))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.decay


def test_choose_weight_decay_keeps_the_smallest_held_out_error(tmp_path: Path) -> None:
    inputs = torch.ones(4, 2, 3, 3)
    part = {"inputs": inputs, "targets": 2 * inputs}
    held = torch.tensor([False, False, True, True])
    seen = []

    def train(x: torch.Tensor, y: torch.Tensor, decay: float, where: Path) -> _Scaled:
        seen.append((len(x), where.name))
        return _Scaled(decay)

    chosen, record = choose_weight_decay(part, held, [0.0, 1.0, 3.0], train, tmp_path)
    assert chosen == 1.0 and record["chosen"] == 1.0  # errors 4, 1, 1 per pixel: the first of the smallest
    assert record["holdout_sq_error"] == [144.0, 36.0, 36.0]
    assert (record["fit_slices"], record["holdout_slices"]) == (2, 2)
    assert seen == [(2, "end_to_end_select_0"), (2, "end_to_end_select_1"), (2, "end_to_end_select_2")]


def test_command_reproduces_the_run_from_the_repository_root() -> None:
    assert command("run_knee.py", ["--quick"]) == "python -m benchmarks.run_knee --quick"


def test_parse_device_names_what_it_expected() -> None:
    assert parse_device("cpu") == torch.device("cpu")
    assert parse_device(default_device()).type == default_device()
    for bad, message in (("nosuch", "expected a device such as"), ("mps", "expected a CPU or CUDA device")):
        with pytest.raises(DeviceError, match=message) as caught:
            parse_device(bad)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, argparse.ArgumentTypeError)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            parse_device("cuda")


def test_every_mode_trains_its_adam_baselines_by_the_rule() -> None:
    from benchmarks.kit.configs import RuleConfig

    for cfg in CONFIGS.values():
        assert isinstance(cfg.rule, RuleConfig) and isinstance(cfg.unrolled.rule, RuleConfig)
        rule = cfg.rule.training_rule(12.5)
        assert rule.max_epochs == cfg.rule.max_epochs and rule.snapshot_seconds == 12.5
    quick = CONFIGS["quick"].rule
    assert quick.runs() == len(quick.lrs) + len(quick.decay_factors) - 1  # lr first, then the decay
    grid = dataclasses.replace(quick, search="grid")
    assert grid.runs() == len(quick.lrs) * len(quick.decay_factors)


def test_effort_cells_curves_and_paired_differences() -> None:
    from benchmarks.kit.evidence import adam_effort, convex_effort, curve_of, effort_cell, paired

    runs = [{"epochs": 3, "converged": True, "lr": 1e-3, "weight_decay": 0.0, "best_epoch": 2, "seconds": 1.0,
             "curve": [{"seconds": 0.0, "held_loss": 4.0}, {"seconds": 1.0, "held_loss": 2.0}]},
            {"epochs": 5, "converged": False, "lr": 1e-2, "weight_decay": 0.1, "best_epoch": 5, "seconds": 2.0,
             "curve": [{"seconds": 0.5, "held_loss": 1.5}, {"seconds": 2.0, "held_loss": 1.0}]}]
    effort = adam_effort(runs)
    assert (effort["epochs"], effort["converged"], effort["rule_seconds"]) == (8, False, 3.0)
    assert effort_cell(effort) == ("8 ep", "**no** (max epochs)")
    assert curve_of(runs) == [[0.0, 4.0], [1.0, 2.0], [1.5, 1.5], [3.0, 1.0]]  # blocks one after another
    convex = convex_effort([{"iterations": 10, "status": "optimal"}, {"iterations": 5, "status": "max_iter"}])
    assert convex == {"iterations": 15, "certified": False}
    assert effort_cell(convex) == ("15 it", "**not certified**")
    entry = {"a": {"psnr_slices": [2.0, 4.0, 6.0]}, "b": {"psnr_slices": [1.0, 2.0, 3.0], "converged": False}}
    got = paired(entry, "a", "b")
    assert got["mean"] == 2.0 and got["n"] == 3 and got["text"].endswith("b not converged: not a finding")
    assert paired(entry, "a", "missing") is None


def test_resumed_stages_counts_the_leading_checkpoints_a_run_reads_back(tmp_path) -> None:
    from benchmarks.kit.methods import resumed_stages

    assert resumed_stages(tmp_path / "absent", 2) == 0
    for name in ("stage_01.pt", "stage_03.pt"):
        (tmp_path / name).write_bytes(b"")
    assert resumed_stages(tmp_path, 3) == 1  # stage 2 is solved again, and every stage after it
    (tmp_path / "stage_02.pt").write_bytes(b"")
    assert resumed_stages(tmp_path, 3) == 3
    assert resumed_stages(tmp_path, 2) == 2
