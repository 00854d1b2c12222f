"""A disk cache of ESPIRiT maps, so that each slice's maps are estimated once.

ESPIRiT reads only the fully sampled calibration square of a slice's k-space, so its
maps depend on the source file's k-space (its digest, :func:`~convexrecon.data.digest.kspace_digest`:
an identical copy in another directory reads the same maps, a changed file gets new ones), the
slice, the calibration width and the crop of the kept maps. Full-grid maps (the measured data of
:mod:`convexrecon.data.problems`, which must equal a fresh computation bit for bit) are also
keyed by the mask: ESPIRiT divides the k-space by its peak, and the mask can change that.
Each entry is one ``.npy`` file of ``(coils, crop, crop)`` (full grid: stored ``(H, W, coils)``)
complex64 under ``<cache_dir>/espirit/<file stem>-<k-space digest>/``, written atomically, checked
for its shape and dtype when read back, beside a ``.json`` file with the ESPIRiT kernel width the maps
were estimated with and their coverage (:func:`~convexrecon.mri.espirit.estimate_coil_maps`). That file is
written first, so a complete entry always has it: maps estimated with the fallback kernel of a narrow
calibration region warn on every read, as when they were estimated, not only the first time. An entry
without it is estimated again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from convexrecon.data.digest import kspace_digest
from convexrecon.errors import DataWarning
from convexrecon.io import atomic_path
from convexrecon.mri.espirit import HealthyMaps, calibration_width, estimate_coil_maps, warn_if_fallback
from convexrecon.mri.fft import center_crop

MAPS_VERSION = 3  # bump when coil_maps' estimate changes


class MapCache:
    """Cropped ESPIRiT maps on disk.

    Parameters
    ----------
    cache_dir : str or Path
        The package's cache directory; maps go to its ``espirit/`` sub-directory.

    Attributes
    ----------
    computed, reused : int
        How many maps this object estimated and how many it read back.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.directory = Path(cache_dir) / "espirit"
        self.computed = 0
        self.reused = 0

    def _entry(self, source: Path, slice_index: int, width: int, crop: int | None, mask: np.ndarray) -> Path:
        ident = f"{kspace_digest(source, self.directory.parent)}-v{MAPS_VERSION}"
        folder = f"{source.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
        if crop is None:
            mask = np.asarray(mask, dtype=bool)
            digest = hashlib.sha256(repr(mask.shape).encode() + np.packbits(mask).tobytes()).hexdigest()[:12]
            size = f"m{digest}-full"
        else:
            size = f"c{crop}"
        return self.directory / folder / f"s{slice_index:04d}-w{width}-{size}.npy"

    def maps(self, source: str | Path, slice_index: int, masked_kspace: np.ndarray, mask: np.ndarray,
             calib_limit: int, crop: int | None, calib_width: int | None = None) -> np.ndarray:
        """The ``(coils, crop, crop)`` maps of one slice, read from the cache or estimated and stored.

        Parameters
        ----------
        source
            The fastMRI file the k-space comes from (the digest of its k-space keys the entry).
        slice_index
            Slice within the file.
        masked_kspace, mask
            ``(coils, H, W)`` k-space (undersampled) and its ``(H, W)`` mask.
        calib_limit
            Largest calibration square (:meth:`~convexrecon.data.masks.MaskFunc.calibration_limit`).
        crop
            Side of the kept maps; None keeps the full grid ``(coils, H, W)``.
        calib_width
            The calibration square's side, when known (then ``calib_limit`` is not used, nor ``mask`` for
            cropped maps).
        """
        width = calibration_width(mask, calib_limit) if calib_width is None else int(calib_width)
        crop = None if crop is None else int(crop)
        entry = self._entry(Path(source), int(slice_index), width, crop, mask)
        # Full-grid maps are stored coil-last and returned as the (coils, H, W) view of that, the memory layout
        # espirit_maps returns: sums over the coils (the SENSE images) round differently in another layout.
        coils, height, width_k = masked_kspace.shape
        expected = (height, width_k, coils) if crop is None else (coils, crop, crop)
        cached = self._read(entry, expected)
        if cached is not None:
            self.reused += 1
            warn_if_fallback(cached, width, " (maps read from the cache)")
            return cached.maps.transpose(2, 0, 1) if crop is None else cached.maps
        result = estimate_coil_maps(masked_kspace, width)
        warn_if_fallback(result, width)
        maps = result.maps if crop is None else np.ascontiguousarray(center_crop(result.maps, (crop, crop)))
        self.computed += 1
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            # the note first: complete maps always have theirs (an interrupted write leaves maps without a note,
            # which are estimated again)
            note = {"kernel_width": result.kernel_width, "coverage": result.coverage}
            with atomic_path(_note(entry)) as tmp:
                tmp.write_text(json.dumps(note))
            with atomic_path(entry) as tmp, open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(maps.transpose(1, 2, 0)) if crop is None else maps,
                        allow_pickle=False)
        except OSError as error:  # a full or read-only cache costs time, not results
            warnings.warn(f"Cannot write ESPIRiT maps to the cache '{self.directory}': {error}.", DataWarning,
                          stacklevel=2)
        return maps

    def _read(self, entry: Path, expected: tuple[int, int, int]) -> HealthyMaps | None:
        """The stored maps (as stored) with their kernel width, or None (missing, or unusable: with a warning)."""
        if not entry.is_file():
            return None
        try:
            note = json.loads(_note(entry).read_text())
            kernel = int(note["kernel_width"])
            coverage = float(note["coverage"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # no note (an interrupted write, or a cache from a version without notes): estimated again
        try:
            maps = np.load(entry, allow_pickle=False)
            if maps.shape == expected and maps.dtype == np.complex64:
                return HealthyMaps(maps, kernel, coverage)
            problem = f"holds shape {maps.shape} {maps.dtype}, expected {expected} complex64"
        except (OSError, ValueError) as error:
            problem = f"cannot be read ({type(error).__name__}: {error})"
        warnings.warn(f"The cached ESPIRiT maps '{entry}' {problem}; they are recomputed.", DataWarning,
                      stacklevel=3)
        return None


def _note(entry: Path) -> Path:
    """The ``.json`` note beside a cache entry: the kernel width and coverage of its maps."""
    return entry.with_suffix(".json")
