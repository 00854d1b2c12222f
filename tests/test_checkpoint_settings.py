"""Checkpoint settings: floats derived from the data match within a relative tolerance, nothing else does."""

from __future__ import annotations

import pytest
import torch

from convexrecon.errors import CheckpointError
from convexrecon.stack.checkpoint import FLOAT_RTOL, load_checkpoint, run_payload, save_checkpoint, settings_differences


def test_float_settings_that_move_in_the_last_digits_match() -> None:
    stored = {"lambda": 0.144189468, "stages": [{"beta": 2.5, "width": 8}]}
    current = {"lambda": 0.144189479, "stages": [{"beta": 2.5 * (1 + FLOAT_RTOL / 2), "width": 8}]}
    assert settings_differences(stored, current) == []


@pytest.mark.parametrize("stored, current", [
    ({"lambda": 0.1442}, {"lambda": 0.1443}),               # a different weight
    ({"lambda": 0.0}, {"lambda": 1e-300}),                  # zero matches only zero
    ({"width": 8}, {"width": 9}),                           # integers exactly
    ({"flag": True}, {"flag": 1.0}),                        # a bool is not a number here
    ({"name": "a"}, {"name": "b"}),
])
def test_other_settings_differ_and_are_named(stored, current) -> None:
    differences = settings_differences(stored, current)
    assert len(differences) == 1 and differences[0].startswith(next(iter(stored)))


def test_load_checkpoint_resumes_across_last_digit_jitter_and_refuses_a_real_change(tmp_path) -> None:
    path = tmp_path / "stage_01.pt"
    save_checkpoint(path, run_payload({"cs_lambda": 0.144189468, "seed": 0}, "abc", state=torch.ones(2)))
    payload = load_checkpoint(path, {"cs_lambda": 0.144189479, "seed": 0}, "abc", ("state",))
    torch.testing.assert_close(payload["state"], torch.ones(2))
    with pytest.raises(CheckpointError, match=r"cs_lambda: checkpoint 0.144189468, now 0.145"):
        load_checkpoint(path, {"cs_lambda": 0.145, "seed": 0}, "abc", ("state",))
    with pytest.raises(CheckpointError, match="training data differ"):
        load_checkpoint(path, {"cs_lambda": 0.144189468, "seed": 0}, "abd", ("state",))
