"""Content digests of fastMRI files: what the caches are keyed by, so that a copy of a file in another
directory finds the preprocessing, maps and references computed for the original, and a changed file never
finds them.

:func:`kspace_digest` is the SHA-256 of a file's ``kspace`` dataset (shape, dtype and bytes, slice by slice).
Reading a full-size knee file's k-space once costs about as much as preprocessing one of its slices, so the
digest is remembered in ``<cache_dir>/digests.json`` under the file's resolved path, size and modification time:
an unchanged file is hashed once per cache directory, a copy once more at its own path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from convexrecon.io import atomic_path

DIGESTS = "digests.json"
"""Name of the remembered digests in a cache directory."""


def kspace_digest(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """Hex SHA-256 of the ``kspace`` dataset of the HDF5 file ``path`` (its shape, dtype and bytes).

    ``cache_dir``: where the digest is remembered (:data:`DIGESTS`) and looked up by the file's resolved path, size
    and modification time; None hashes every time.

    Raises
    ------
    ValueError
        When ``path`` has no ``kspace`` dataset or cannot be read as HDF5.
    """
    path = Path(path)
    stat = path.stat()
    key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    memo = _read(cache_dir)
    known = memo.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
        return known["sha256"]
    digest = hashlib.sha256()
    try:
        with h5py.File(path, "r") as handle:
            kspace = handle["kspace"]
            digest.update(json.dumps({"shape": list(kspace.shape), "dtype": str(kspace.dtype)}).encode())
            for s in range(kspace.shape[0]):
                digest.update(np.ascontiguousarray(kspace[s]).tobytes())
    except (OSError, KeyError) as error:
        raise ValueError(f"The file '{path}' must be HDF5 with a 'kspace' dataset to be cached. Got "
                         f"{type(error).__name__}: {error}.") from None
    value = digest.hexdigest()
    if cache_dir is not None:
        _remember(Path(cache_dir), key, {"stamp": stamp, "sha256": value})
    return value


def _read(cache_dir: str | Path | None) -> dict:
    if cache_dir is None:
        return {}
    try:
        memo = json.loads((Path(cache_dir) / DIGESTS).read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _remember(cache_dir: Path, key: str, entry: dict) -> None:
    """Add one digest to the directory's record (re-read first, so that concurrent runs lose at most an entry)."""
    memo = _read(cache_dir)
    memo[key] = entry
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache_dir / DIGESTS) as tmp:
            Path(tmp).write_text(json.dumps(memo))
    except OSError:
        pass  # a read-only cache costs a hash per run, not results
