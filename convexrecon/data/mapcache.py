"""A disk cache of ESPIRiT maps, so that applying a model twice estimates them once.

ESPIRiT reads only the fully sampled calibration square of a slice's k-space, so its
maps depend on the source file (name, size, modification time), the slice, the
calibration width and, since only the cropped maps are kept, the crop. Each entry is
one ``.npy`` file of ``(coils, crop, crop)`` complex64 under
``<cache_dir>/espirit/<file stem>-<source hash>/``, written atomically.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from convexrecon.errors import DataWarning
from convexrecon.io import atomic_path
from convexrecon.mri.sense import calibration_width, center_crop, espirit_maps

MAPS_VERSION = 2  # 2: eigenvalue crop 0.8. Bump when espirit_maps' parameters change


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

    def _entry(self, source: Path, slice_index: int, width: int, crop: int) -> Path:
        stat = source.stat()
        ident = json.dumps({"name": source.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                            "version": MAPS_VERSION})
        folder = f"{source.stem}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"
        return self.directory / folder / f"s{slice_index:04d}-w{width}-c{crop}.npy"

    def maps(self, source: str | Path, slice_index: int, masked_kspace: np.ndarray, mask: np.ndarray,
             calib_limit: int, crop: int, calib_width: int | None = None) -> np.ndarray:
        """The ``(coils, crop, crop)`` maps of one slice, read from the cache or estimated and stored.

        Parameters
        ----------
        source
            The fastMRI file the k-space comes from (its identity keys the entry).
        slice_index
            Slice within the file.
        masked_kspace, mask
            ``(coils, H, W)`` k-space (undersampled) and its ``(H, W)`` mask.
        calib_limit
            Largest calibration square (:meth:`~convexrecon.data.masks.MaskFunc.calibration_limit`).
        crop
            Side of the kept maps.
        calib_width
            The calibration square's side, when known (then ``mask`` and ``calib_limit`` are not used).
        """
        width = calibration_width(mask, calib_limit) if calib_width is None else int(calib_width)
        entry = self._entry(Path(source), int(slice_index), width, int(crop))
        expected = (masked_kspace.shape[0], int(crop), int(crop))
        if entry.is_file():
            try:
                maps = np.load(entry, allow_pickle=False)
                if maps.shape == expected and maps.dtype == np.complex64:
                    self.reused += 1
                    return maps
                problem = f"holds shape {maps.shape} {maps.dtype}, expected {expected} complex64"
            except (OSError, ValueError) as error:
                problem = f"cannot be read ({type(error).__name__}: {error})"
            warnings.warn(f"The cached ESPIRiT maps '{entry}' {problem}; they are recomputed.", DataWarning,
                          stacklevel=2)
        maps = np.ascontiguousarray(center_crop(espirit_maps(masked_kspace, width), (int(crop), int(crop))))
        self.computed += 1
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(entry) as tmp, open(tmp, "wb") as handle:
                np.save(handle, maps, allow_pickle=False)
        except OSError as error:  # a full or read-only cache costs time, not results
            warnings.warn(f"Cannot write ESPIRiT maps to the cache '{self.directory}': {error}.", DataWarning,
                          stacklevel=2)
        return maps
