"""Run checkpoints: written atomically, read back only by the run that wrote them.

A checkpoint stores the settings of its run (as JSON-compatible values) and a
hash of the training data. :func:`load_checkpoint` refuses a file that cannot
be read (truncated, corrupt) or that another run wrote, with a
:class:`CheckpointError` naming the file and, for another run, every setting
that differs, or that the data differ. A checkpoint is never reused silently.

Floating-point settings match within a relative tolerance of :data:`FLOAT_RTOL`: several settings are
derived from the data (a CS weight scaled by a noise estimate, say), and a reduction run on another
number of threads moves them in the last digits without making them another run's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from convexrecon.errors import CheckpointError
from convexrecon.io import atomic_path


FLOAT_RTOL = 1e-6
"""Relative tolerance within which a stored floating-point setting equals the current one."""


def _same_leaf(stored: Any, current: Any) -> bool:
    if isinstance(stored, bool) or isinstance(current, bool):
        return stored is current  # True == 1.0 in Python, but a switch is not a number
    if isinstance(stored, float) or isinstance(current, float):  # integers stay exact
        numbers = all(isinstance(v, (int, float)) for v in (stored, current))
        return numbers and math.isclose(stored, current, rel_tol=FLOAT_RTOL, abs_tol=0.0)
    return stored == current


def checkpoint_file(directory: str | Path | None, name: str) -> Path | None:
    """``directory / name`` with ``directory`` created, or None when there is no checkpoint directory."""
    if directory is None:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path / name


@contextlib.contextmanager
def restoring(path: Path, what: str) -> Iterator[None]:
    """Turn the errors of restoring state from the checkpoint ``path`` into a :class:`CheckpointError` that says
    to delete it ``what`` (e.g. "to recompute block 3")."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"The checkpoint {path} is corrupt ({type(error).__name__}: {error}); "
                              f"delete it {what}.") from None


def fingerprint(*parts: Any) -> str:
    """Hash of run settings and data (tensors by their bytes, everything else as JSON)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def normalized(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` as they read back from JSON (tuples become lists, ...)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_differences(stored: Any, current: Any, name: str = "") -> list[str]:
    """Human-readable list of the leaves where ``stored`` and ``current`` differ (floats beyond :data:`FLOAT_RTOL`)."""
    if isinstance(stored, dict) and isinstance(current, dict):
        out: list[str] = []
        for key in sorted(set(stored) | set(current), key=str):
            sub = f"{name}.{key}" if name else str(key)
            if key not in stored:
                out.append(f"{sub}: absent from the checkpoint, now {current[key]!r}")
            elif key not in current:
                out.append(f"{sub}: checkpoint {stored[key]!r}, absent now")
            else:
                out.extend(settings_differences(stored[key], current[key], sub))
        return out
    if isinstance(stored, list) and isinstance(current, list) and len(stored) == len(current):
        return [d for i, (a, b) in enumerate(zip(stored, current)) for d in settings_differences(a, b, f"{name}[{i}]")]
    return [] if _same_leaf(stored, current) else [f"{name or 'settings'}: checkpoint {stored!r}, now {current!r}"]


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file in the same directory, then rename."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def run_payload(settings: dict[str, Any], data_key: str, **state: Any) -> dict[str, Any]:
    """A checkpoint payload: the run's identity (settings, data hash) and its ``state``."""
    return {"settings": normalized(settings), "data": data_key, **state}


def load_checkpoint(path: Path, settings: dict[str, Any], data_key: str, required: tuple[str, ...]) -> dict[str, Any]:
    """Read a checkpoint of this run.

    Raises
    ------
    CheckpointError
        If the file cannot be unpickled, lacks one of ``required``, or was
        written with other ``settings`` (each difference is named) or other
        data.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling a damaged file can fail in many ways; all mean "corrupt"
        raise CheckpointError(f"The checkpoint {path} is corrupt or truncated ({type(error).__name__}: {error}); "
                              f"delete it to recompute that step.") from None
    missing = [k for k in ("settings", "data", *required) if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise CheckpointError(f"The checkpoint {path} is not a checkpoint of this trainer (missing "
                              f"{', '.join(missing)}); delete it or use a fresh checkpoint directory.")
    differences = settings_differences(payload["settings"], normalized(settings))
    if differences:
        raise CheckpointError(f"The checkpoint {path} belongs to a different run: settings differ ("
                              f"{'; '.join(differences)}). Use the same settings or a fresh checkpoint directory.")
    if payload["data"] != data_key:
        raise CheckpointError(f"The checkpoint {path} belongs to a different run: the training data differ (hash "
                              f"{payload['data']} in the checkpoint, {data_key} now). Use a fresh checkpoint directory.")
    return payload
