"""The files of a saved model: ``model.pt`` (state dict) and ``config.json`` (architecture + metadata).

This module knows the file layout only, no model class: a network saves itself through
:func:`write_model` (anything with ``state_dict()``, ``spec()`` and a ``config`` dict), and
:mod:`convexrecon.stack.persist` picks the class to rebuild from the architecture's ``kind``.
Both files are written atomically (:mod:`convexrecon.io`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convexrecon.io import atomic_path, write_text

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.pt"

LAYERWISE_CNN = "layerwise-cnn"  # the paper's image-domain CNN: blocks stacked, skip from the input
UNROLLED = "unrolled"  # stages of a block and a data-consistency step
ARCHITECTURE_ALIASES = {"seed": LAYERWISE_CNN}  # the earlier spelling, still read from saved configs


def architecture_kind(spec: dict[str, Any]) -> str:
    """The architecture's ``kind``: absent and ``"seed"`` both mean :data:`LAYERWISE_CNN`."""
    kind = spec.get("kind", LAYERWISE_CNN)
    return ARCHITECTURE_ALIASES.get(kind, kind)


def write_model(net: nn.Module, directory: str | Path) -> Path:
    """Write ``model.pt`` (``net.state_dict()`` on the host) and ``config.json`` (``{"architecture": net.spec(),
    **net.config}``) atomically into ``directory`` (created if needed); returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        tmp.write_bytes(buffer.getvalue())
    config = {"architecture": net.spec(), **net.config}  # type: ignore[operator]
    write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True, default=_json_default))
    return directory


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)  # paths and anything else: their text


def read_config(directory: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(architecture spec, the rest of config.json)`` of a saved model.

    Raises
    ------
    FileNotFoundError
        When ``directory`` lacks ``config.json`` or ``model.pt``.
    ValueError
        When ``config.json`` is not a model config.
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"The 'model' directory must contain {name}. Not found in {directory}.")
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
        spec = config.pop("architecture")
        if not isinstance(spec, dict):
            raise TypeError(f"'architecture' is a {type(spec).__name__}, not an object")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise corrupt_config(directory, error) from None
    return spec, config


def corrupt_config(directory: str | Path, error: Exception) -> ValueError:
    """The error for a ``config.json`` that does not describe a model."""
    return ValueError(f"The model file {Path(directory) / CONFIG_NAME} is corrupt or not written by ReconNet.save "
                      f"({type(error).__name__}: {error}).")


def load_weights(net: nn.Module, directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load ``model.pt`` into ``net`` (in its stored dtype) and move ``net`` to ``map_location``.

    Raises
    ------
    ValueError
        When the file is corrupt or does not match ``net``'s architecture.
    """
    path = Path(directory) / WEIGHTS_NAME
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        dtype = next(iter(state.values())).dtype if state else torch.float32
        net.to(dtype=dtype)
        net.load_state_dict(state)
        net.to(map_location)  # load_state_dict copies into the module's own (host) tensors
    except Exception as error:  # unpickling a damaged file can fail in many ways; all mean "corrupt"
        raise ValueError(f"The model file {path} is corrupt, truncated or does not match "
                         f"{CONFIG_NAME} ({type(error).__name__}: {error}).") from None
    return net
