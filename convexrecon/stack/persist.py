"""Saving and loading a :class:`~convexrecon.stack.network.ReconNet`: ``model.pt`` + ``config.json``.

``model.pt`` holds the state dict, ``config.json`` the architecture (``ReconNet.spec``) and
every piece of metadata the trainers store (method, β per block, gate seeds, data and mask
settings, solve reports). Both are written atomically (:mod:`convexrecon.io`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convexrecon.io import atomic_path, write_text
from convexrecon.stack.network import HiddenLayer, ReconNet

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.pt"


def save_network(net: ReconNet, directory: str | Path) -> Path:
    """Write ``model.pt`` (state dict) and ``config.json`` (architecture + metadata) atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buffer)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        tmp.write_bytes(buffer.getvalue())
    config = {"architecture": net.spec(), **net.config}
    write_text(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True, default=_json_default))
    return directory


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def network_from_spec(spec: dict[str, Any], config: dict[str, Any] | None = None) -> ReconNet:
    """An untrained :class:`ReconNet` with the architecture ``spec`` (as :meth:`ReconNet.spec`).

    A spec with ``kind == "unrolled"`` builds an :class:`~convexrecon.stack.unrolled.UnrolledNet`
    instead; specs without ``kind`` are the seed architecture.
    """
    if spec.get("kind", "seed") == "unrolled":
        from convexrecon.stack.unrolled import unrolled_from_spec  # unrolled imports persist: imported on use

        return unrolled_from_spec(spec, config)  # type: ignore[return-value]
    layers = [HiddenLayer.from_spec(s) for s in spec["layers"]]
    second = type(layers[-1].first)(layers[-1].first.out_channels, int(spec.get("out_channels", 2)), 1, bias=False)
    return ReconNet(layers, second, config)


def load_network(directory: str | Path, map_location: str | torch.device = "cpu") -> ReconNet:
    """Load a model written by :meth:`ReconNet.save` onto ``map_location`` (its parameters and buffers).

    Raises
    ------
    FileNotFoundError
        When ``directory`` lacks ``config.json`` or ``model.pt``.
    ValueError
        When either file is corrupt or they do not match each other.
    """
    directory = Path(directory)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"The 'model' directory must contain {name}. Not found in {directory}.")
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
        spec = config.pop("architecture")
        net = network_from_spec(spec, config)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"The model file {directory / CONFIG_NAME} is corrupt or not written by ReconNet.save "
                         f"({type(error).__name__}: {error}).") from None
    try:
        state = torch.load(directory / WEIGHTS_NAME, map_location=map_location, weights_only=True)
        dtype = next(iter(state.values())).dtype if state else torch.float32
        net.to(dtype=dtype)
        net.load_state_dict(state)
        net.to(map_location)  # load_state_dict copies into the module's own (host) tensors
    except Exception as error:  # unpickling a damaged file can fail in many ways; all mean "corrupt"
        raise ValueError(f"The model file {directory / WEIGHTS_NAME} is corrupt, truncated or does not match "
                         f"{CONFIG_NAME} ({type(error).__name__}: {error}).") from None
    return net
