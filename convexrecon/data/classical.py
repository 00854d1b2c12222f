r"""Classical reconstructions, the references for the learned ones.

* zero-filled SENSE: :math:`A^H M k` (the network input);
* SENSE by conjugate gradient: :math:`\min_x \tfrac12\|A x - M k\|^2 + \tfrac{\lambda}{2}\|x\|^2`
  (``sigpy.mri.app.SenseRecon``);
* L1-wavelet compressed sensing: :math:`\min_x \tfrac12\|A x - M k\|^2 + \lambda \|\Psi x\|_1`
  with Daubechies-4 wavelets (``sigpy.mri.app.L1WaveletRecon``; Lustig et al. 2007),
  :math:`\lambda` chosen on a validation split by mean slice-wise PSNR.

Every problem is solved on the full k-space grid with full-size ESPIRiT maps,
then centre-cropped; k-space is divided by the slice's scale factor (so that one
:math:`\lambda` grid serves any data set) and the results multiplied back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.masks import MaskFunc
from convexrecon.data.sense import calibration_width, center_crop, espirit_maps, sense_images
from convexrecon.metrics import Summary, evaluate, psnr

LAMBDA_GRID: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)


@dataclass(frozen=True)
class SliceProblem:
    """One slice's reconstruction problem (k-space divided by ``scale``).

    Attributes
    ----------
    kspace : numpy.ndarray
        ``(coils, H, W)`` masked k-space / ``scale``, complex64.
    mask : numpy.ndarray
        ``(H, W)`` bool.
    maps : numpy.ndarray
        ``(coils, H, W)`` full-size ESPIRiT maps.
    zero_filled, target : numpy.ndarray
        Cropped ``(crop, crop)`` complex SENSE images / ``scale``.
    scale : float
        The slice's scale factor (physical = stored × scale).
    fname : str
    slice_index : int
    """

    kspace: np.ndarray
    mask: np.ndarray
    maps: np.ndarray
    zero_filled: np.ndarray
    target: np.ndarray
    scale: float
    fname: str
    slice_index: int

    @property
    def crop(self) -> int:
        """Side of the cropped images."""
        return int(self.target.shape[-1])


def slice_problem(volume: FastMRIVolume, slice_index: int, mask_func: MaskFunc, crop: int) -> SliceProblem:
    """Build the problem of one slice exactly as :class:`SliceDataset` preprocesses it."""
    kspace = volume.kspace(slice_index)
    mask = mask_func.for_slice(kspace.shape[-2:], volume.path.name, slice_index)
    masked = kspace * mask
    maps = espirit_maps(masked, calibration_width(mask, mask_func.calibration_limit(mask.shape)))
    images = sense_images(kspace, mask, mask_func.calibration_limit(mask.shape), crop, maps=maps)
    return SliceProblem(
        kspace=(masked / images.scale).astype(np.complex64),
        mask=mask,
        maps=maps,
        zero_filled=images.input.numpy(),
        target=images.target.numpy(),
        scale=images.scale,
        fname=volume.path.name,
        slice_index=slice_index,
    )


def zero_filled(problem: SliceProblem) -> np.ndarray:
    """Zero-filled SENSE image, cropped, stored scale."""
    return problem.zero_filled


def sense_cg(problem: SliceProblem, lamda: float = 0.0, max_iter: int = 10) -> np.ndarray:
    """SENSE by conjugate gradient on the normal equations, cropped, stored scale.

    With ``lamda = 0`` the iteration count is the regulariser: CG run to
    convergence amplifies noise (the g-factor), so the default stops at 10.
    """
    from sigpy.mri.app import SenseRecon

    x = SenseRecon(
        problem.kspace, problem.maps, lamda=lamda, weights=problem.mask.astype(np.float32),
        max_iter=max_iter, show_pbar=False,
    ).run()
    return np.asarray(center_crop(x, (problem.crop, problem.crop)))


def l1_wavelet(problem: SliceProblem, lamda: float, max_iter: int = 100) -> np.ndarray:
    """L1-wavelet compressed sensing, cropped, stored scale."""
    from sigpy.mri.app import L1WaveletRecon

    if not lamda > 0:
        raise ValueError(f"The 'lamda' parameter must be > 0. Got {lamda} instead.")
    x = L1WaveletRecon(
        problem.kspace, problem.maps, lamda=lamda, weights=problem.mask.astype(np.float32),
        max_iter=max_iter, show_pbar=False,
    ).run()
    # Where ESPIRiT's eigenvalue crop zeroed every map the data say nothing, and the
    # wavelet prior alone extrapolates the object there; the SENSE image (and the
    # target) is zero outside the maps' support, so the reconstruction is too.
    support = (np.abs(problem.maps) ** 2).sum(axis=0) > 0
    return np.asarray(center_crop(x * support, (problem.crop, problem.crop)))


def choose_lambda(
    problems: Sequence[SliceProblem], grid: Sequence[float] = LAMBDA_GRID, max_iter: int = 100
) -> tuple[float, dict[float, float]]:
    """The L1-wavelet :math:`\\lambda` of best mean slice-wise PSNR on ``problems``.

    Returns
    -------
    best : float
    scores : dict
        Mean slice-wise PSNR (dB) for every :math:`\\lambda` in ``grid``.
    """
    if not problems:
        raise ValueError("choose_lambda needs at least one validation slice.")
    scores = {
        float(lam): float(np.mean([psnr(p.target, l1_wavelet(p, lam, max_iter)) for p in problems]))
        for lam in grid
    }
    return max(scores, key=scores.__getitem__), scores


def reference_table(
    problems: Sequence[SliceProblem], lamda: float, max_iter: int = 100
) -> dict[str, dict[str, dict[str, Summary]]]:
    """Metrics of the classical references on ``problems``, physical scale.

    Returns
    -------
    dict
        ``table[method][convention][metric]`` with methods ``"zero-filled"``,
        ``"SENSE-CG"``, ``"L1-wavelet"``, conventions ``"slice"`` and
        ``"volume"`` (see :func:`convexrecon.metrics.evaluate`).
    """
    methods: dict[str, Callable[[SliceProblem], np.ndarray]] = {
        "zero-filled": zero_filled,
        "SENSE-CG": sense_cg,
        "L1-wavelet": lambda p: l1_wavelet(p, lamda, max_iter),
    }
    targets = [p.target * p.scale for p in problems]
    volumes = [p.fname for p in problems]
    table: dict[str, dict[str, dict[str, Summary]]] = {}
    for name, method in methods.items():
        predictions = [method(p) * p.scale for p in problems]
        table[name] = {c: evaluate(targets, predictions, volumes, c) for c in ("slice", "volume")}
    return table
