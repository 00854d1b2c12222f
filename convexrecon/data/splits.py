"""Training, validation and held-out splits of a prepared data set, by whole volumes.

Volumes are ordered by name: the first ``val_volumes`` validate, the rest train, and the
last ``holdout_volumes`` training volumes score the β candidates of the layer-wise trainer
(never the validation volumes).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import torch

from convexrecon.data.dataset import SliceDataset


class Split(NamedTuple):
    """Stacked slices of some volumes (stored scale; physical = stored × scale)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    scales: torch.Tensor
    volumes: list[str]
    pairs: list[tuple[Path, int]]

    @property
    def validation(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """``(inputs, targets, scales, volumes)`` as the trainers' ``validation`` argument."""
        return self.inputs, self.targets, self.scales, self.volumes


def stack_split(dataset: SliceDataset, val_volumes: int = 1) -> tuple[Split, Split]:
    """Training and validation splits: the first ``val_volumes`` volumes by name validate.

    Raises
    ------
    ValueError
        When fewer than ``val_volumes + 1`` volumes are present.
    """
    files = sorted(dataset.volumes)
    if not isinstance(val_volumes, int) or val_volumes < 1 or len(files) < val_volumes + 1:
        raise ValueError(f"The data must hold more than 'val_volumes' = {val_volumes!r} volumes "
                         f"(training needs at least one). Got {len(files)}.")
    val_files = set(files[:val_volumes])
    splits = []
    for keep in (lambda p: p not in val_files, lambda p: p in val_files):
        items = [(i, p, s) for i, (p, s) in enumerate(dataset.index) if keep(p)]
        samples = [dataset[i] for i, _, _ in items]
        splits.append(Split(torch.stack([s.input for s in samples]), torch.stack([s.target for s in samples]),
                            torch.tensor([s.scale for s in samples], dtype=torch.float64),
                            [s.fname for s in samples], [(p, s) for _, p, s in items]))
    return splits[0], splits[1]


def holdout_mask(volumes: Sequence[str], count: int) -> torch.Tensor:
    """Boolean per slice: the slices of the last ``count`` volumes by name (for choosing beta).

    Raises
    ------
    ValueError
        When fewer than ``count + 1`` volumes are present (the fit needs at least one).
    """
    names = sorted(set(volumes))
    if not isinstance(count, int) or count < 1 or len(names) < count + 1:
        raise ValueError(f"Choosing beta on held-out volumes needs more than 'holdout_volumes' = {count!r} training "
                         f"volumes (the fit keeps at least one). Got {len(names)}.")
    held = set(names[-count:])
    return torch.tensor([v in held for v in volumes], dtype=torch.bool)
