"""``SliceDataset``: undersampled SENSE inputs and fully sampled targets.

Each item is one slice of a fastMRI multi-coil file, preprocessed as
``docs/design.md`` §8 states: a seeded mask per ``(file name, slice)``, ESPIRiT maps
from the calibration region of the undersampled k-space, zero-filled SENSE
input, fully sampled SENSE target, centre crop, 2 channels, per-slice scale.

ESPIRiT dominates the cost (seconds per slice), so with ``cache_dir`` every
volume is preprocessed once, with a progress bar, into one HDF5 file per
volume, ``cache_dir/<settings key>/<file stem>-<k-space digest>.h5``. The key is
the content (:func:`~convexrecon.data.digest.kspace_digest`) and the name (the
masks are seeded by file name), not the directory: an identical copy of a file
in another data directory reads the same entry, and a changed file gets a new
one. Cache files are written to a temporary name and renamed, record their
settings and source, and are recomputed when these differ. They also record, per
slice, the ESPIRiT kernel width and calibration width of the maps: slices whose maps
came from the fallback kernel of a narrow calibration region
(:func:`~convexrecon.mri.espirit.coil_maps`) warn whenever the cache hands them out,
as when they were computed, and a cache file without these widths is recomputed
rather than read silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import torch
from tqdm.auto import tqdm

from convexrecon.io import atomic_path
from convexrecon.data.digest import kspace_digest
from convexrecon.data.fastmri import FastMRIVolume, build_index
from convexrecon.errors import DataWarning
from convexrecon.data.masks import CENTER_FRACTION, MaskFunc
from convexrecon.mri.espirit import (
    ESPIRIT_KERNEL, calibration_width, estimate_coil_maps, fallback_message, warn_if_fallback,
)
from convexrecon.mri.fft import center_crop, complex_to_channels, data_device
from convexrecon.mri.sense import sense_images

CACHE_VERSION = 5  # bump when preprocessing changes (ESPIRiT parameters, scale, layout)
WIDTHS = ("kernel_width", "calib_width")  # per-slice cache datasets: ESPIRiT kernel and calibration widths
FROM_CACHE = " (maps read from the cache of preprocessed slices)"
"""Appended to :func:`~convexrecon.mri.espirit.fallback_message` when cached fallback maps are reused."""


class Sample(NamedTuple):
    """One preprocessed slice.

    Attributes
    ----------
    input, target : torch.Tensor
        ``(2, crop, crop)`` float32 (real, imaginary), divided by ``scale``.
    mask : torch.Tensor
        ``(H, W)`` bool sampling mask over the slice's k-space.
    maps : torch.Tensor
        ``(coils, crop, crop)`` complex64 ESPIRiT maps (cropped).
    scale : float
        Physical image = stored image × ``scale`` (max magnitude of the
        cropped zero-filled image).
    fname : str
        File name of the volume.
    slice_index : int
        Slice within the volume.
    """

    input: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    maps: torch.Tensor
    scale: float
    fname: str
    slice_index: int


class Batch(NamedTuple):
    """Samples stacked for training (see :func:`collate`).

    ``input``, ``target`` ``(B, 2, crop, crop)``, ``maps`` ``(B, coils, crop, crop)``,
    ``scale`` ``(B,)`` float64, ``slice_index`` ``(B,)``; ``mask`` and ``fname`` stay
    lists because real fastMRI volumes differ in k-space width (368, 372, ...).
    """

    input: torch.Tensor
    target: torch.Tensor
    mask: list[torch.Tensor]
    maps: torch.Tensor
    scale: torch.Tensor
    fname: list[str]
    slice_index: torch.Tensor


def collate(samples: list[Sample]) -> Batch:
    """``collate_fn`` for ``DataLoader``: stacks samples whose masks may differ in shape.

    All samples must share the number of coils (true within a fastMRI split).
    """
    return Batch(
        input=torch.stack([s.input for s in samples]),
        target=torch.stack([s.target for s in samples]),
        mask=[s.mask for s in samples],
        maps=torch.stack([s.maps for s in samples]),
        scale=torch.tensor([s.scale for s in samples], dtype=torch.float64),
        fname=[s.fname for s in samples],
        slice_index=torch.tensor([s.slice_index for s in samples]),
    )


def preprocess_slice(
    kspace: np.ndarray, mask_func: MaskFunc, fname: str, slice_index: int, crop: int, device: object = None,
    *, return_kernel: bool = False, cache_dir: str | Path | None = None,
) -> Sample | tuple[Sample, int, int]:
    """Preprocess one fully sampled slice ``(coils, H, W)`` into a :class:`Sample` (ESPIRiT and SENSE on
    ``device``, None: the CPU; the sample is on the host).

    The maps are :func:`~convexrecon.mri.espirit.coil_maps`' (the same numbers and the same warning when the
    calibration region needs the fallback kernel). With ``return_kernel``, returns ``(sample, kernel_width,
    calib_width)``: the ESPIRiT kernel width the maps were estimated with and the calibration square's side, which
    the cache stores so that it can warn again when it hands fallback maps out. ``cache_dir``: the package's cache
    directory, where Poisson-disc masks are kept (:mod:`convexrecon.data.masks`).
    """
    mask = mask_func.for_slice(kspace.shape[-2:], fname, slice_index, cache_dir)
    center_crop(mask, (crop, crop))  # validates the crop before ESPIRiT
    limit = mask_func.calibration_limit(mask.shape)
    width = calibration_width(mask, limit)
    estimate = estimate_coil_maps(kspace * mask, width, device=data_device(device))
    warn_if_fallback(estimate, width)
    images = sense_images(kspace, mask, limit, crop, maps=estimate.maps, device=device)
    sample = Sample(
        input=complex_to_channels(images.input).float(),
        target=complex_to_channels(images.target).float(),
        mask=torch.from_numpy(mask),
        maps=images.maps,
        scale=images.scale,
        fname=fname,
        slice_index=slice_index,
    )
    return (sample, estimate.kernel_width, images.calib_width) if return_kernel else sample


class SliceDataset(torch.utils.data.Dataset):
    """Slices of the fastMRI multi-coil files of a directory.

    Parameters
    ----------
    root : str or Path
        Directory of ``.h5`` files (real fastMRI or :func:`make_synthetic`).
    mask : {"poisson", "lines", "equispaced"}
        Sampling pattern (:mod:`convexrecon.data.masks`).
    acceleration : float
        Target acceleration (> 1).
    center_fraction : float
        Centre band fraction of line masks, in (0, 1).
    calib : int
        Calibration square of Poisson-disc masks.
    crop : int
        Side of the output images (<= both k-space dimensions).
    seed : int
        Base mask seed.
    cache_dir : str or Path, optional
        Where to cache preprocessed volumes (under ``cache_dir/<settings key>/``, attribute ``cache_dir``;
        the given directory is ``cache_root``, where :func:`convexrecon.data.problems.measured_data` keeps
        its maps too); None preprocesses on every access.
    progress : bool
        Show a progress bar while preprocessing.
    device : str or torch.device, optional
        Where ESPIRiT and the SENSE images are computed (None: the CPU). Not part of the
        settings: CPU and GPU preprocessing agree to float32 rounding and share a cache.

    Raises
    ------
    ValueError
        For a missing or empty directory, an invalid file, or invalid settings.

    Warns
    -----
    DataWarning
        Per slice whose calibration region needed ESPIRiT's fallback kernel
        (:func:`~convexrecon.mri.espirit.fallback_message`), whether its maps are computed or, with
        ``cache_dir``, read from the cache (then ending in :data:`FROM_CACHE`).
    """

    def __init__(
        self,
        root: str | Path,
        mask: str = "poisson",
        acceleration: float = 4.0,
        center_fraction: float = CENTER_FRACTION,
        calib: int = 16,
        crop: int = 320,
        seed: int = 0,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        device: object = None,
    ) -> None:
        self.device = data_device(device)
        self.mask_func = MaskFunc(mask, acceleration, center_fraction, calib, seed)
        if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or crop < 1:
            raise ValueError(f"The 'crop' parameter must be a positive int. Got {crop!r} instead.")
        self.crop = int(crop)
        self.root = Path(root)
        self.index = build_index(self.root)
        self.volumes = {path: FastMRIVolume(path) for path in dict.fromkeys(p for p, _ in self.index)}
        for path, volume in self.volumes.items():
            height, width = volume.shape[-2:]
            if self.crop > min(height, width):
                raise ValueError(
                    f"The 'crop' parameter must be at most the image size {(height, width)} of "
                    f"'{path.name}'. Got {self.crop} instead."
                )
        self.cache_root = None if cache_dir is None else Path(cache_dir)
        self.cache_dir = None if cache_dir is None else self.cache_root / self.settings_key()
        self._digests = {} if cache_dir is None else {p: kspace_digest(p, self.cache_root) for p in self.volumes}
        self._handles: dict[Path, h5py.File] = {}
        self._pid = os.getpid()
        if self.cache_dir is not None:
            self._fill_cache(progress)

    def settings(self) -> dict[str, object]:
        """The settings that determine the preprocessed data."""
        m = self.mask_func
        return {
            "version": CACHE_VERSION, "mask": m.kind, "acceleration": float(m.acceleration),
            "center_fraction": float(m.center_fraction), "calib": int(m.calib),
            "crop": self.crop, "seed": int(m.seed),
        }

    def settings_key(self) -> str:
        """Short hash of :meth:`settings`, the cache sub-directory name."""
        text = json.dumps(self.settings(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Sample:
        path, slice_index = self.index[i]
        if self.cache_dir is None:
            kspace = self.volumes[path].kspace(slice_index)
            return preprocess_slice(kspace, self.mask_func, path.name, slice_index, self.crop, self.device)
        handle = self._handle(path)
        return Sample(
            input=torch.from_numpy(handle["input"][slice_index]),
            target=torch.from_numpy(handle["target"][slice_index]),
            mask=torch.from_numpy(handle["mask"][slice_index]),
            maps=torch.from_numpy(handle["maps"][slice_index]),
            scale=float(handle["scale"][slice_index]),
            fname=path.name,
            slice_index=slice_index,
        )

    # --- cache -------------------------------------------------------------

    def cache_file(self, path: str | Path) -> Path:
        """The cache file of the data file ``path`` (one of this dataset's): keyed by its name and the digest of
        its k-space, so that copies with the same name share it wherever they are."""
        if self.cache_dir is None:
            raise ValueError("The dataset has no cache: pass 'cache_dir' to SliceDataset.")
        path = Path(path)
        return self.cache_dir / f"{path.stem}-{self._digests[path][:16]}.h5"

    def _cache_path(self, path: Path) -> Path:
        return self.cache_file(path)

    def _source_id(self, path: Path) -> str:
        return json.dumps({"name": path.name, "kspace_sha256": self._digests[path]})

    def _cache_valid(self, path: Path) -> bool:
        """Whether ``path``'s cache file can be used; a stale or damaged one is reported, then recomputed."""
        cached = self._cache_path(path)
        if not cached.is_file():
            return False
        try:
            with h5py.File(cached, "r") as handle:
                stored_settings, stored_source = handle.attrs.get("settings"), handle.attrs.get("source")
                widths = {name: handle[name].shape if name in handle else None for name in WIDTHS}
        except (OSError, KeyError, RuntimeError) as error:
            problem = f"cannot be read ({type(error).__name__}: {error})"
        else:
            problem = self._cache_problem(stored_settings, stored_source, path)
            if problem is None and any(shape != (self.volumes[path].num_slices,) for shape in widths.values()):
                # without them, fallback maps could not warn: recomputed, never handed out silently
                problem = "records no per-slice ESPIRiT kernel and calibration widths"
            if problem is None:
                return True
        warnings.warn(f"The cache file '{cached}' {problem}; it is not used and will be recomputed.",
                      DataWarning, stacklevel=3)
        return False

    def _cache_problem(self, stored_settings: object, stored_source: object, path: Path) -> str | None:
        current = self.settings()
        try:
            stored = json.loads(stored_settings) if isinstance(stored_settings, (str, bytes)) else None
        except ValueError:
            stored = None
        if not isinstance(stored, dict):
            return "records no readable settings"
        differ = [f"{k}: cache {stored.get(k)!r}, now {current.get(k)!r}"
                  for k in sorted(set(stored) | set(current)) if stored.get(k) != current.get(k)]
        if differ:
            return f"was written with other settings ({'; '.join(differ)})"
        if stored_source != self._source_id(path):
            return f"was made from another version of '{path.name}' (the k-space digest differs)"
        return None

    def _fill_cache(self, progress: bool) -> None:
        assert self.cache_dir is not None
        todo = []
        for path in self.volumes:
            if self._cache_valid(path):
                self._warn_if_fallback(path)
            else:
                todo.append(path)
        if not todo:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        total = sum(self.volumes[p].num_slices for p in todo)
        with tqdm(total=total, desc="preprocessing slices (ESPIRiT)", unit="slice", disable=not progress) as bar:
            for path in todo:
                self._write_volume(path, bar)

    def _write_volume(self, path: Path, bar: tqdm) -> None:
        volume = self.volumes[path]
        slices, coils, height, width = volume.shape
        crop = self.crop
        with atomic_path(self._cache_path(path)) as tmp, h5py.File(tmp, "w") as handle:
            handle.attrs["settings"] = json.dumps(self.settings(), sort_keys=True)
            handle.attrs["source"] = self._source_id(path)
            d_in = handle.create_dataset("input", (slices, 2, crop, crop), np.float32, chunks=(1, 2, crop, crop))
            d_tg = handle.create_dataset("target", (slices, 2, crop, crop), np.float32, chunks=(1, 2, crop, crop))
            d_mp = handle.create_dataset(
                "maps", (slices, coils, crop, crop), np.complex64, chunks=(1, coils, crop, crop)
            )
            d_mk = handle.create_dataset("mask", (slices, height, width), bool, chunks=(1, height, width))
            d_sc = handle.create_dataset("scale", (slices,), np.float64)
            d_kw, d_cw = (handle.create_dataset(name, (slices,), np.int16) for name in WIDTHS)
            for s in range(slices):
                sample, d_kw[s], d_cw[s] = preprocess_slice(
                    volume.kspace(s), self.mask_func, path.name, s, crop, self.device, return_kernel=True,
                    cache_dir=self.cache_root,
                )
                d_in[s], d_tg[s] = sample.input.numpy(), sample.target.numpy()
                d_mp[s], d_mk[s], d_sc[s] = sample.maps.numpy(), sample.mask.numpy(), sample.scale
                bar.update(1)

    def _warn_if_fallback(self, path: Path) -> None:
        """Warn, as :func:`preprocess_slice` did when it computed them, for each cached slice of ``path`` whose maps
        came from the fallback kernel."""
        with h5py.File(self._cache_path(path), "r") as handle:
            kernels, widths = (handle[name][()] for name in WIDTHS)
        for kernel, width in zip(kernels, widths):
            if int(kernel) != ESPIRIT_KERNEL:
                warnings.warn(fallback_message(int(width)) + FROM_CACHE, DataWarning, stacklevel=4)

    def _handle(self, path: Path) -> h5py.File:
        if os.getpid() != self._pid:  # a DataLoader worker: never share HDF5 handles across fork
            self._handles, self._pid = {}, os.getpid()
        if path not in self._handles:
            self._handles[path] = h5py.File(self._cache_path(path), "r")
        return self._handles[path]

    def close(self) -> None:
        """Close the open cache files."""
        for handle in self._handles.values():
            handle.close()
        self._handles = {}

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state
