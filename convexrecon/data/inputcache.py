"""A disk cache of an unrolled network's per-slice precomputation: its full-grid maps and its start images.

Before its cheap stages, an unrolled network (:class:`~convexrecon.stack.unrolled.UnrolledNet`) computes once
per slice the full-grid ESPIRiT maps of its data consistency and the images of
:meth:`~convexrecon.stack.unrolled.UnrolledNet.initial` (the CS start and CS input images, SENSE-CG): on a
full-size knee slice about 90 % of its inference time. Both are kept here so that a second reconstruction of
the same data reads them back.

* **Maps** are :class:`~convexrecon.data.mapcache.MapCache`'s full-grid entries (``crop=None``), keyed by the
  file's k-space digest, the slice, the calibration width and the mask.
* **Start images** ``(StageInputs.images, H, W)`` are keyed by the SHA-256 (:func:`initial_key`) of everything
  they are computed from: the bytes of the masked k-space the network is given (already divided by the slice
  scale, so the scale is in them; it is also hashed on its own), the mask, the maps' bytes and memory layout
  (sums over the coils round differently in another layout), the crop (the CS weights are relative to the
  maximum of the cropped zero-filled image), the precision and device kind the network runs in, the
  stage-input settings that define the images (:data:`INITIAL_FIELDS`) and :data:`INITIAL_VERSION`. Keys are
  content keys: an identical copy of a file in another directory finds the entries of the original, and a
  network with other blocks but the same settings shares them (they are the same images), while networks
  with other settings never do. The block inputs computed at every stage (``bias``, ``shrink``,
  ``residual``) are not part of the key: they are not among these images.

The trainer's and the ``train`` command's start images of many slices (:func:`cached_initial_estimates`) are
kept per chunk of slices as they are computed (the chunk's bytes and size are in the key), so that reading them
back gives the numbers of a fresh computation in the same chunks; they are never shared with the single slices
of a reconstruction, whose rounding may differ.

Each start-image entry is one ``.npy`` file under ``<cache_dir>/unrolled-inputs/``, written atomically
(:func:`~convexrecon.io.atomic_path`) and checked for its shape and dtype when read back; an entry that
cannot be read or holds anything else is computed again (with a warning) and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from convexrecon.data.mapcache import MapCache
from convexrecon.errors import DataWarning
from convexrecon.io import atomic_path
from convexrecon.mri.consistency import MeasuredGroups, measured_groups

INITIAL_VERSION = 1  # bump when UnrolledNet.initial (or what it is computed from) changes
INITIAL_FIELDS = ("cs_iterations", "cs_lambda", "cs_inputs", "cs_relative", "cs_shifts", "sense_input",
                  "sense_start")
"""The :meth:`~convexrecon.stack.stage_inputs.StageInputs.options` that define the start images (and ``cs_noise``
when it is set)."""


def initial_settings(options: dict[str, Any]) -> dict[str, Any]:
    """The start-image settings of a network's ``StageInputs.options()``, as JSON values."""
    missing = [name for name in INITIAL_FIELDS if name not in options]
    if missing:
        raise ValueError(f"The 'options' parameter must hold the stage-input settings {INITIAL_FIELDS}. "
                         f"Got none for {missing}.")
    out = {name: options[name] for name in INITIAL_FIELDS}
    out["cs_inputs"] = [[float(lam), str(wave)] for lam, wave in out["cs_inputs"]]
    if options.get("cs_noise", 0.0) > 0:  # keyed only when set, so entries of networks without it keep their keys
        out["cs_noise"] = float(options["cs_noise"])
    return out


def initial_key(options: dict[str, Any], kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray, scale: float,
                crop: int, precision: str) -> str:
    """Hex SHA-256 of everything the start images of one slice depend on (the module doc).

    ``options``: the network's ``StageInputs.options()``; ``kspace``: the ``(coils, H, W)`` masked k-space as the
    network gets it (divided by ``scale``); ``maps``: its full-grid maps; ``precision``: e.g. ``"complex64/cpu"``.
    """
    digest = hashlib.sha256()
    header = {"version": INITIAL_VERSION, "settings": initial_settings(options), "scale": float(scale),
              "crop": int(crop), "precision": str(precision)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, array in (("kspace", kspace), ("maps", maps)):
        array = np.asarray(array)
        layout = [int(i) for i in np.argsort([-abs(s) for s in array.strides], kind="stable")]
        digest.update(json.dumps([name, list(array.shape), str(array.dtype), layout]).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    mask = np.asarray(mask, dtype=bool)
    digest.update(repr(mask.shape).encode() + np.packbits(mask).tobytes())
    return digest.hexdigest()


class InputCache:
    """Full-grid maps and start images of unrolled networks on disk.

    Parameters
    ----------
    cache_dir : str or Path
        The package's cache directory: maps go to its ``espirit/`` sub-directory (:class:`MapCache`), start
        images to ``unrolled-inputs/``.

    Attributes
    ----------
    map_cache : MapCache
        The maps' cache (its ``computed`` and ``reused`` count the maps).
    computed, reused : int
        How many slices' start images this object computed and how many it read back.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.map_cache = MapCache(cache_dir)
        self.directory = Path(cache_dir) / "unrolled-inputs"
        self.computed = 0
        self.reused = 0

    def maps(self, source: str | Path, slice_index: int, masked_kspace: np.ndarray, mask: np.ndarray,
             calib_limit: int) -> np.ndarray:
        """The full-grid ``(coils, H, W)`` maps of one slice of the file ``source`` (:meth:`MapCache.maps`)."""
        return self.map_cache.maps(source, slice_index, masked_kspace, mask, calib_limit, None)

    def entry(self, key: str) -> Path:
        """The file of the start images with :func:`initial_key` ``key``."""
        return self.directory / key[:2] / f"{key}.npy"

    def initial(self, key: str, shape: tuple[int, ...], dtype: np.dtype | str,
                compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The start images of key ``key``: read back when an entry of ``shape`` and ``dtype`` is stored, else
        ``compute()`` (which must return that) stored and returned."""
        entry, dtype = self.entry(key), np.dtype(dtype)
        cached = self._read(entry, tuple(shape), dtype)
        if cached is not None:
            self.reused += 1
            return cached
        images = np.asarray(compute())
        if images.shape != tuple(shape) or images.dtype != dtype:
            raise ValueError(f"The start images must have shape {tuple(shape)} {dtype}. Got {images.shape} "
                             f"{images.dtype} instead.")
        self.computed += 1
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(entry) as tmp, open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(images), allow_pickle=False)
        except OSError as error:  # a full or read-only cache costs time, not results
            warnings.warn(f"Cannot write start images to the cache '{self.directory}': {error}.", DataWarning,
                          stacklevel=2)
        return images

    def _read(self, entry: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        """The stored images, or None (missing, or unusable: with a warning)."""
        if not entry.is_file():
            return None
        try:
            images = np.load(entry, allow_pickle=False)
            if images.shape == shape and images.dtype == dtype:
                return images
            problem = f"holds shape {images.shape} {images.dtype}, expected {shape} {dtype}"
        except (OSError, ValueError, EOFError) as error:
            problem = f"cannot be read ({type(error).__name__}: {error})"
        warnings.warn(f"The cached start images '{entry}' {problem}; they are recomputed.", DataWarning,
                      stacklevel=3)
        return None


def numpy_complex(x: Tensor) -> np.dtype:
    """The NumPy dtype the start images of ``x`` (complex64 or complex128) are stored in."""
    return np.dtype(np.complex128 if x.dtype == torch.complex128 else np.complex64)


def precision_of(x: Tensor) -> str:
    """The precision a tensor's computations run in: dtype, device kind and, on CUDA, the TF32 modes."""
    text = f"{x.dtype}/{x.device.type}"
    if x.device.type == "cuda":
        text += f"/tf32={torch.backends.cuda.matmul.allow_tf32},{torch.backends.cudnn.allow_tf32}"
    return text


@torch.no_grad()
def cached_initial_estimates(net: Any, data: Any, chunk_size: int, cache: InputCache,
                             progress: str | None = None) -> Any:
    """:func:`~convexrecon.stack.unrolled.initial_estimates` of ``net`` (an ``UnrolledNet``) on the measured data
    ``data``, chunk by chunk through ``cache``: each chunk's images are read back or computed as
    :class:`~convexrecon.stack.unrolled.EstimateChain` computes them (the chunk's ``net.start`` then
    ``net.initial``), so the result is the same bit for bit. None when ``net`` has no such images. ``progress``:
    the description of a progress bar over the slices (None: no bar); on full-size slices each takes a minute.
    For slices of several k-space grids (``MeasuredGroups``), a tuple: one tensor per grid."""
    if not net.stage_inputs.precomputed:
        return None
    bar = tqdm(total=len(data), desc=progress, unit="slice", disable=progress is None)
    out = tuple(_cached_group(net, g, chunk_size, cache, bar) for g in measured_groups(data).groups)
    bar.close()
    return out if isinstance(data, MeasuredGroups) else out[0]


def _cached_group(net: Any, data: Any, chunk_size: int, cache: InputCache, bar: Any) -> Tensor:
    """:func:`cached_initial_estimates` of the slices of one k-space grid (a ``MeasuredData``)."""
    count, options = net.stage_inputs.images, net.stage_inputs.options()
    out = []
    for j in range(0, len(data), chunk_size):
        k, s, m = data.kspace[j:j + chunk_size], data.maps[j:j + chunk_size], data.mask[j:j + chunk_size]
        x1 = net.start(k, s, m)
        key = initial_key(options, k.cpu().numpy(), s.cpu().numpy(), m.cpu().numpy() != 0, 1.0, net.crop,
                          f"{precision_of(x1)}/chunk")
        images = cache.initial(key, (len(x1), count, *x1.shape[-2:]), numpy_complex(x1),
                               lambda: net.initial(x1, k, s, m).cpu().numpy())
        out.append(torch.from_numpy(images).to(x1.device))
        bar.update(len(x1))
    return torch.cat(out)
