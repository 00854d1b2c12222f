"""How a training run executes: seed, checkpoints, progress, device and precision (:class:`RunOptions`).

Every trainer takes one :class:`RunOptions` (or its fields as keywords, converted by
:func:`with_keywords`) and places its data with :meth:`RunOptions.device_of`: ``device=None``
trains where the given tensors are (all must be on one device), an explicit device moves them
there once. TF32 is off unless ``allow_tf32=True`` (the package's default everywhere, so the
methods compare at one precision); :meth:`RunOptions.precision` holds it for the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import Tensor

from convexrecon.block.precision import tf32_mode
from convexrecon.checks import bool_flag, training_device


@dataclass(frozen=True)
class RunOptions:
    """Settings of a run that do not change what is trained, only how it executes (and its seed).

    Attributes
    ----------
    seed
        Seeds gates, windows, initialisations and batch order (each trainer says how).
    checkpoint_dir
        Where checkpoints are written atomically; the same call on the same directory resumes.
    stop_after
        Stop after this many blocks, stages or epochs (simulates an interruption).
    progress
        Progress bars.
    device
        None: train where the inputs are (every tensor given on that one device); an explicit
        device (``"cpu"``, ``"cuda:0"``) moves the data there once. The result lives there.
    allow_tf32
        TF32 convolutions and matrix products for the whole run (CUDA only).
    """

    seed: int = 0
    checkpoint_dir: str | Path | None = None
    stop_after: int | None = None
    progress: bool = False
    device: Any = None
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        bool_flag("allow_tf32", self.allow_tf32)

    def last(self, count: int) -> int:
        """How many of ``count`` steps this run trains: ``count``, or fewer with ``stop_after``."""
        return count if self.stop_after is None else min(count, int(self.stop_after))

    def without_stop(self, trainer: str) -> "RunOptions":
        """These options, refused with a ``stop_after`` that ``trainer`` does not offer."""
        if self.stop_after is not None:
            raise ValueError(f"{trainer} has no 'stop_after' (its checkpoints resume every block). "
                             f"Got {self.stop_after!r}.")
        return self

    def device_of(self, validation: Any = None, **tensors: Tensor | None) -> torch.device:
        """The run's device: ``device``, or where ``tensors`` and the validation images are (one device)."""
        extra = {} if validation is None else validation.tensors()
        return training_device(self.device, **tensors, **extra)

    def precision(self) -> ContextManager[None]:
        """The TF32 mode of the whole run, restored after."""
        return tf32_mode(self.allow_tf32)


def with_keywords(function: str, keywords: dict[str, Any], *objects: Any) -> list[Any]:
    """``objects`` (frozen dataclasses) with the fields named in ``keywords`` replaced, in order.

    This is how a trainer accepts its option objects' fields as keywords too
    (``train_end_to_end(net, x, y, epochs=5)`` as well as ``adam=AdamSettings(epochs=5)``).
    A keyword that no object has is a ``TypeError``, as for any function.
    """
    left = dict(keywords)
    out = []
    for obj in objects:
        names = {f.name for f in fields(obj)}
        mine = {name: left.pop(name) for name in list(left) if name in names}
        out.append(replace(obj, **mine) if mine else obj)
    if left:
        raise TypeError(f"{function}() got an unexpected keyword argument {next(iter(left))!r}")
    return out
