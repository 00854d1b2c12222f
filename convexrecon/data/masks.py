"""Retrospective k-space undersampling masks.

Three patterns, each a pure function of ``(shape, acceleration, ..., seed)``
returning a boolean array of the k-space ``shape`` (readout × phase encode):

* :func:`poisson_disc` — 2D variable-density Poisson-disc sampling with a
  fully sampled ``calib × calib`` centre (``sigpy.mri.poisson``);
* :func:`random_lines` — 1D Cartesian phase-encode lines (columns): a fully
  sampled centre band of ``round(center_fraction * W)`` lines, the rest
  drawn uniformly at random *without replacement* so that exactly
  ``round(W / acceleration)`` lines are sampled (fastMRI's random mask draws
  each line independently and hits the rate only in expectation);
* :func:`equispaced_lines` — the same centre band plus equally spaced lines
  (random offset) among the other columns, again exactly
  ``round(W / acceleration)`` lines in all.

No function touches the global NumPy or torch RNG: line masks draw from a
private ``numpy.random.Generator``, and the NumPy global state is saved and
restored around sigpy's Poisson sampler (which reseeds it).

:class:`MaskFunc` bundles the settings into a callable whose seed is derived
from ``(seed, file name, slice index)`` by :func:`slice_seed`, so every run
sees the same mask for a given validation slice.

sigpy's Poisson-disc sampler bisects its density slope over whole draws: at fastMRI's 640 × 368 a mask takes
1-5 s, as long as the network's stages. So :class:`MaskFunc` keeps its recent Poisson-disc masks in memory (a
file's first slice is drawn once, though :func:`~convexrecon.recon.volume_sampling` and the slice itself both
ask for it) and, given a cache directory, on disk under ``<cache_dir>/masks/``, keyed by the settings, shape,
seed and sigpy's version (a mask is a pure function of them).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from convexrecon.io import atomic_path

MaskKind = Literal["poisson", "lines", "equispaced"]
MASK_KINDS: tuple[str, ...] = ("poisson", "lines", "equispaced")
CENTER_FRACTION = 0.04
"""Fully sampled centre band of the line masks, as a fraction of the columns (the paper's 1D masks)."""


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or any(int(n) != n or n < 2 for n in shape):
        raise ValueError(
            f"The 'shape' parameter must be two integers >= 2 (readout, phase encode). "
            f"Got {tuple(shape)} instead."
        )
    return int(shape[0]), int(shape[1])


def _check_acceleration(acceleration: float) -> float:
    if isinstance(acceleration, bool) or not isinstance(acceleration, (int, float, np.number)):
        raise TypeError(
            f"The 'acceleration' parameter must be a real number > 1. "
            f"Got {type(acceleration).__name__} instead."
        )
    if not np.isfinite(acceleration) or acceleration <= 1:
        raise ValueError(
            f"The 'acceleration' parameter must be a real number > 1. Got {acceleration} instead."
        )
    return float(acceleration)


def _check_center_fraction(center_fraction: float) -> float:
    if not 0 < center_fraction < 1:
        raise ValueError(
            f"The 'center_fraction' parameter must lie in the open interval (0, 1). "
            f"Got {center_fraction} instead."
        )
    return float(center_fraction)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"The 'seed' parameter must be a non-negative int. Got {seed!r} instead.")
    return int(seed)


def slice_seed(seed: int, fname: str, slice_index: int) -> int:
    """Derive a stable 32-bit seed from a base seed, a file name and a slice.

    Uses SHA-256 (not Python's salted ``hash``), so the value is the same in
    every process and on every machine.

    Parameters
    ----------
    seed : int
        Base seed of the experiment.
    fname : str
        File name of the volume (only the name, not the directory, should be
        passed so that moving a data set keeps its masks).
    slice_index : int
        Slice index within the volume.

    Returns
    -------
    int
        A seed in ``[0, 2**32)``.
    """
    digest = hashlib.sha256(f"{int(seed)}|{fname}|{int(slice_index)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def center_band(width: int, center_fraction: float) -> slice:
    """Return the columns of the fully sampled centre band.

    The band holds ``max(1, round(center_fraction * width))`` lines and starts at
    ``(width - n + 1) // 2``, the placement fastMRI uses.
    """
    n_low = max(1, int(round(center_fraction * width)))
    start = (width - n_low + 1) // 2
    return slice(start, start + n_low)


def _line_budget(width: int, acceleration: float, band: slice, center_fraction: float) -> int:
    """Total lines ``round(W / R)``; an error if the centre band alone exceeds it."""
    total = int(round(width / acceleration))
    if band.stop - band.start > total:
        raise ValueError(
            f"The 'center_fraction' parameter {center_fraction} gives a centre band of "
            f"{band.stop - band.start} lines, more than the {total} lines that acceleration "
            f"{acceleration} allows on {width} columns; lower 'center_fraction' or 'acceleration'."
        )
    return total


def _line_mask(
    shape: tuple[int, int],
    acceleration: float,
    center_fraction: float,
    seed: int,
    pick: Callable[[np.ndarray, int, np.random.Generator], np.ndarray],
) -> np.ndarray:
    """Centre band plus ``pick(rest, n, rng)`` of the other columns, ``round(W / R)`` in all."""
    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    center_fraction = _check_center_fraction(center_fraction)
    seed = _check_seed(seed)
    band = center_band(width, center_fraction)
    n_total = _line_budget(width, acceleration, band, center_fraction)
    lines = np.zeros(width, dtype=bool)
    lines[band] = True
    rest = np.flatnonzero(~lines)
    n_more = n_total - int(lines.sum())
    if n_more > 0:
        lines[pick(rest, n_more, np.random.default_rng(seed))] = True
    return np.broadcast_to(lines, (height, width)).copy()


POISSON_RETRIES = 16


def poisson_disc(
    shape: tuple[int, int], acceleration: float = 4.0, calib: int = 16, seed: int = 0
) -> np.ndarray:
    """Variable-density Poisson-disc mask with a fully sampled square centre.

    Parameters
    ----------
    shape : tuple of int
        k-space shape ``(H, W)``.
    acceleration : float
        Target ``H * W / n_sampled`` (> 1); sigpy reaches it within ±0.1.
    calib : int
        Side of the fully sampled centre square (``0 < calib <= min(shape)``).
    seed : int
        Seed of sigpy's sampler; the global NumPy RNG state is restored. When sigpy
        cannot reach the acceleration with this seed (about 1 seed in 12 on small grids such
        as 64 x 45), ``seed + 1, seed + 2, ...`` are tried in turn (at most 16), so the mask
        is still a function of ``seed``.

    Returns
    -------
    numpy.ndarray
        Boolean mask of shape ``shape``.

    Raises
    ------
    ValueError
        For bad parameters, or when no seed tried reaches the acceleration.
    """
    import sigpy.mri

    height, width = _check_shape(shape)
    acceleration = _check_acceleration(acceleration)
    seed = _check_seed(seed)
    if isinstance(calib, bool) or not isinstance(calib, (int, np.integer)) or not 0 < calib <= min(height, width):
        raise ValueError(
            f"The 'calib' parameter must be an int in [1, {min(height, width)}] for shape {shape}. "
            f"Got {calib!r} instead."
        )
    state = np.random.get_state()
    try:
        # sigpy bisects the density slope on one random draw and gives up when that draw
        # cannot hit the acceleration; a few derived seeds (deterministic) rescue it
        for attempt in range(POISSON_RETRIES):
            try:
                mask = sigpy.mri.poisson(
                    (height, width), acceleration, calib=(int(calib), int(calib)),
                    dtype=np.float32, seed=(seed + attempt) % 2**32,
                )
                return mask.astype(bool)
            except ValueError as error:
                if "Cannot generate mask" not in str(error):
                    raise
    finally:
        np.random.set_state(state)
    raise ValueError(
        f"sigpy could not draw a Poisson-disc mask of shape {(height, width)} at acceleration {acceleration} with a "
        f"{calib}x{calib} calibration centre ({POISSON_RETRIES} seeds from {seed} tried); a larger k-space, a "
        f"smaller 'calib' or another acceleration may work."
    )


def random_lines(
    shape: tuple[int, int], acceleration: float = 4.0, center_fraction: float = CENTER_FRACTION, seed: int = 0
) -> np.ndarray:
    """Random 1D Cartesian phase-encode lines with a fully sampled centre band.

    Exactly ``round(W / acceleration)`` of the ``W`` columns are sampled: the
    centre band (:func:`center_band`) and the rest uniformly without replacement.

    Parameters
    ----------
    shape : tuple of int
        k-space shape ``(H, W)``; lines are columns (phase encodes, last axis).
    acceleration : float
        Target ``W / n_lines`` (> 1).
    center_fraction : float
        Fraction of columns in the fully sampled centre band, in (0, 1).
    seed : int
        Seed of a private ``numpy.random.Generator``.

    Returns
    -------
    numpy.ndarray
        Boolean mask of shape ``shape`` (every row identical).
    """
    def pick(rest: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(rest, size=n, replace=False)

    return _line_mask(shape, acceleration, center_fraction, seed, pick)


def equispaced_lines(
    shape: tuple[int, int], acceleration: float = 4.0, center_fraction: float = CENTER_FRACTION, seed: int = 0
) -> np.ndarray:
    """Equispaced 1D phase-encode lines with a fully sampled centre band.

    Exactly ``round(W / acceleration)`` columns are sampled, like
    :func:`random_lines`: the centre band, plus ``n`` lines placed every
    ``s = m / n`` columns of the ``m`` columns outside the band, from a random
    offset in ``[0, s)``. (fastMRI's equispaced mask reaches the rate only
    approximately; on small grids it can miss it by 15%.)

    Parameters
    ----------
    shape, acceleration, center_fraction, seed
        As in :func:`random_lines`.

    Returns
    -------
    numpy.ndarray
        Boolean mask of shape ``shape`` (every row identical).
    """
    def pick(rest: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        spacing = rest.size / n
        picks = np.floor(rng.uniform(0.0, spacing) + spacing * np.arange(n)).astype(int)
        return rest[np.minimum(picks, rest.size - 1)]

    return _line_mask(shape, acceleration, center_fraction, seed, pick)


@dataclass(frozen=True)
class MaskFunc:
    """Mask settings as a callable, deterministic per ``(file name, slice)``.

    Parameters
    ----------
    kind : {"poisson", "lines", "equispaced"}
        Sampling pattern.
    acceleration : float
        Target acceleration (> 1).
    center_fraction : float
        Centre band fraction for line masks, in (0, 1).
    calib : int
        Calibration square side for Poisson-disc masks.
    seed : int
        Base seed, combined with file name and slice by :func:`slice_seed`.
    """

    kind: str = "poisson"
    acceleration: float = 4.0
    center_fraction: float = CENTER_FRACTION
    calib: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(
                f"The 'mask' parameter must be one of {MASK_KINDS}. Got {self.kind!r} instead."
            )
        _check_acceleration(self.acceleration)
        _check_center_fraction(self.center_fraction)
        _check_seed(self.seed)

    def __call__(self, shape: tuple[int, int], seed: int, cache_dir: str | Path | None = None) -> np.ndarray:
        """Return the mask of ``shape`` drawn with ``seed`` (Poisson-disc masks through the memory and, with
        ``cache_dir``, the disk cache of the module doc)."""
        if self.kind == "poisson":
            shape = _check_shape(shape)
            return _cached_poisson(shape, float(self.acceleration), int(self.calib), int(seed), cache_dir)
        if self.kind == "lines":
            return random_lines(shape, self.acceleration, self.center_fraction, seed)
        return equispaced_lines(shape, self.acceleration, self.center_fraction, seed)

    def calibration_limit(self, shape: tuple[int, int]) -> int:
        """Largest calibration square ESPIRiT may use for masks of ``shape``.

        ``calib`` for Poisson disc; for line masks the whole sampled centre band
        (the fully sampled width is measured on the mask itself).
        """
        return int(self.calib) if self.kind == "poisson" else int(min(shape))

    def for_slice(self, shape: tuple[int, int], fname: str, slice_index: int,
                  cache_dir: str | Path | None = None) -> np.ndarray:
        """Return the mask of slice ``slice_index`` of file ``fname`` (``cache_dir`` as in :meth:`__call__`)."""
        return self(shape, slice_seed(self.seed, fname, slice_index), cache_dir)


MASKS_VERSION = 1  # bump when poisson_disc's draw changes


@functools.lru_cache(maxsize=64)
def _memo_poisson(shape: tuple[int, int], acceleration: float, calib: int, seed: int) -> np.ndarray:
    mask = poisson_disc(shape, acceleration, calib, seed)
    mask.flags.writeable = False
    return mask


def _cached_poisson(shape: tuple[int, int], acceleration: float, calib: int, seed: int,
                    cache_dir: str | Path | None) -> np.ndarray:
    """:func:`poisson_disc` through the memory cache and, with ``cache_dir``, ``<cache_dir>/masks/`` (a fresh copy
    every time)."""
    if cache_dir is None:
        return _memo_poisson(shape, acceleration, calib, seed).copy()
    import sigpy

    key = json.dumps([MASKS_VERSION, sigpy.__version__, list(shape), acceleration, calib, seed])
    name = f"poisson-{shape[0]}x{shape[1]}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    path = Path(cache_dir) / "masks" / name
    try:
        stored = np.load(path, allow_pickle=False)
        if stored.shape == tuple(shape) and stored.dtype == np.bool_:
            return stored
    except (OSError, ValueError):
        pass  # absent or unreadable: drawn again and rewritten
    mask = _memo_poisson(shape, acceleration, calib, seed).copy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, mask, allow_pickle=False)
    return mask
