"""Loading a saved network of either architecture: ``model.pt`` + ``config.json`` (:mod:`~convexrecon.stack.modelfiles`).

``config.json`` holds the architecture (``spec()`` of the network) and every piece of metadata the
trainers store (method, β per block, gate seeds, data and mask settings, solve reports).
:func:`load_network` rebuilds the class its ``kind`` names — ``"layerwise-cnn"`` (also written
``"seed"``, or absent in older files) or ``"unrolled"`` — and loads the weights into it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from convexrecon.stack.modelfiles import (LAYERWISE_CNN, UNROLLED, architecture_kind, corrupt_config, load_weights,
                                          read_config, write_model)
from convexrecon.stack.network import ReconNet
from convexrecon.stack.unrolled import UnrolledNet, unrolled_from_spec

BUILDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], nn.Module]] = {
    LAYERWISE_CNN: ReconNet.from_spec,
    UNROLLED: unrolled_from_spec,
}


def save_network(net: nn.Module, directory: str | Path) -> Path:
    """Write ``model.pt`` and ``config.json`` atomically (the same as ``net.save(directory)``)."""
    return write_model(net, directory)


def network_from_spec(spec: dict[str, Any], config: dict[str, Any] | None = None) -> nn.Module:
    """An untrained network of the architecture ``spec`` (``spec()`` of a :class:`ReconNet` or
    :class:`~convexrecon.stack.unrolled.UnrolledNet`)."""
    kind = architecture_kind(spec)
    if kind not in BUILDERS:
        raise ValueError(f"The architecture 'kind' must be one of {sorted(BUILDERS)}. Got {kind!r} instead.")
    return BUILDERS[kind](spec, config)


def load_network(directory: str | Path, map_location: str | torch.device = "cpu") -> ReconNet | UnrolledNet:
    """Load a model written by ``save`` onto ``map_location`` (its parameters and buffers).

    Raises
    ------
    FileNotFoundError
        When ``directory`` lacks ``config.json`` or ``model.pt``.
    ValueError
        When either file is corrupt or they do not match each other.
    """
    spec, config = read_config(directory)
    try:
        net = network_from_spec(spec, config)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise corrupt_config(directory, error) from None
    return load_weights(net, directory, map_location)  # type: ignore[return-value]


def load_unrolled(directory: str | Path, map_location: str | torch.device = "cpu") -> UnrolledNet:
    """Load a model written by :meth:`UnrolledNet.save`; ``ValueError`` for another architecture."""
    net = load_network(directory, map_location)
    if not isinstance(net, UnrolledNet):
        raise ValueError(f"The model in {directory} is not an unrolled network (architecture kind "
                         f"{json.dumps(net.spec().get('kind', LAYERWISE_CNN))}).")
    return net
