"""ESPIRiT coil sensitivities (Uecker et al., MRM 2014) from the calibration region of k-space.

:func:`espirit_maps` computes the maps of ``sigpy.mri.app.EspiritCalib`` (one set), in torch on any
device or through sigpy itself; :func:`calibration_width` finds the fully sampled centre square they
are calibrated from. :func:`coil_maps` is what the package's preprocessing calls: ESPIRiT followed by
the coil-map health check (:func:`map_coverage`), with a smaller kernel when the calibration region is
too narrow for the default one, and an error when no estimate passes. :func:`healthy_maps` is that check
around any estimate (the per-readout maps of a 3-D volume use it, :mod:`convexrecon.data.volume`), and
:func:`estimate_coil_maps` returns which kernel was used, so that a cache can warn again when it hands out
fallback maps (:mod:`convexrecon.data.mapcache`).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import numpy as np
import torch

from convexrecon.errors import DataWarning
from convexrecon.mri.fft import center_crop, data_device, ifft2c


def calibration_width(mask: np.ndarray, limit: int) -> int:
    """Side of the largest fully sampled centred square, at most ``limit``.

    The square is placed as ``sigpy.resize`` (and so ``EspiritCalib``) crops:
    from ``n // 2 - w // 2`` in each axis. For Poisson-disc masks this is the
    calibration square; for line masks it is the width of the sampled centre
    band, so ESPIRiT never sees zeros inside its calibration window.

    Raises
    ------
    ValueError
        If not even the centre sample is acquired.
    """
    mask = np.asarray(mask, dtype=bool)
    best = 0
    for width in range(1, min(limit, *mask.shape) + 1):
        if not center_crop(mask, (width, width)).all():
            break
        best = width
    if best == 0:
        raise ValueError("The mask does not sample the k-space centre; ESPIRiT needs a calibration region.")
    return best


ESPIRIT_METHODS = ("torch", "sigpy")
ESPIRIT_CROP = 0.8
"""Maps are zeroed where ESPIRiT's leading eigenvalue is below this (sigpy's default is 0.95; BART users
commonly pass ``ecalib -c 0.8``). At 0.95 the support cut into the object at the edges of the knee on the
synthetic sets (a 16-wide calibration square, 8 coils): the data of the cut-off tissue cannot be explained
by the SENSE model, and iterative reconstructions (CG-SENSE, L1-wavelet) blew up along the support edge
(one validation volume of run_knee's default set: L1-wavelet 26.1 dB after 30 iterations, 19.4 dB after 100;
docs/benchmarks.md)."""


def espirit_maps(
    kspace: np.ndarray,
    calib_width: int,
    kernel_width: int = 6,
    thresh: float = 0.02,
    crop: float = ESPIRIT_CROP,
    max_iter: int = 100,
    *,
    device: str | torch.device | None = None,
    method: str = "torch",
    tol: float = 1e-6,
) -> np.ndarray:
    """ESPIRiT coil sensitivities from the centre of (undersampled) k-space.

    The maps of ``sigpy.mri.app.EspiritCalib`` (one set): kernels from the SVD of the
    calibration matrix, the per-pixel ``C x C`` matrix ``A^H A`` of the image-domain
    kernels, its leading eigenvector by power iterations from a vector of ones, phases
    relative to coil 0, and zero where the leading eigenvalue is below ``crop`` (outside
    the object, so the SENSE images have a zero background).

    ``method="torch"`` (default) computes the same maps in torch on ``device``: ``A^H A``
    from the ``(2 kernel_width - 1)^2`` lags of the kernels' cross-correlation with one
    FFT per coil pair, instead of one FFT per kernel and coil plus an outer product per
    kernel (sigpy), and power iterations that stop, per block of pixels, once an iterate
    changes by less than ``tol`` (checked every 5 iterations; at most ``max_iter``).
    ``method="sigpy"`` calls ``EspiritCalib`` itself (on a CUDA ``device`` through sigpy's
    cupy backend, the ``gpu`` extra: ``pip install convexrecon[gpu]``). The two agree to
    float32 rounding (tests/test_data_sense.py); on one 15-coil 640x368 slice the torch path
    took 10 s on 2 CPU cores against sigpy's 45 s (docs/benchmarks.md).

    Parameters
    ----------
    kspace : numpy.ndarray
        ``(coils, H, W)`` complex k-space (masked; the calibration square must be
        fully sampled, see :func:`calibration_width`).
    calib_width : int
        Side of the calibration square (> ``kernel_width``).
    kernel_width, thresh, max_iter
        ESPIRiT parameters, sigpy's defaults.
    crop
        Eigenvalue threshold of the maps' support (:data:`ESPIRIT_CROP`, not sigpy's 0.95).
    device : str or torch.device, optional
        Where to compute (None: the CPU). The maps are returned on the host.
    method : {"torch", "sigpy"}
        Implementation, see above.
    tol : float
        Power iterations stop once the largest change of a (unit-norm) iterate is below
        ``tol`` (``method="torch"``; 0 runs all ``max_iter``).

    Returns
    -------
    numpy.ndarray
        ``(coils, H, W)`` complex64 maps.
    """
    if calib_width <= kernel_width:
        raise ValueError(
            f"The fully sampled calibration region is {calib_width} wide, but ESPIRiT with kernel width "
            f"{kernel_width} needs more than {kernel_width}: increase 'calib' (Poisson disc) or "
            f"'center_fraction' (lines)."
        )
    if method not in ESPIRIT_METHODS:
        raise ValueError(f"The 'method' parameter must be one of {ESPIRIT_METHODS}. Got {method!r} instead.")
    device = data_device(device)
    kspace = np.asarray(kspace, dtype=np.complex64)
    peak = float(np.abs(kspace).max())
    # ESPIRiT is scale invariant; unit-scale data keeps OpenBLAS's complex64 SVD fast
    # (fastMRI's ~1e-4 values make it up to 40x slower on small problems).
    kspace = kspace / peak if peak > 0 else kspace
    if method == "sigpy":
        return _espirit_sigpy(kspace, calib_width, kernel_width, thresh, crop, max_iter, device)
    return _espirit_torch(kspace, calib_width, kernel_width, thresh, crop, max_iter, device, tol)


def _espirit_sigpy(kspace: np.ndarray, calib_width: int, kernel_width: int, thresh: float, crop: float,
                   max_iter: int, device: torch.device) -> np.ndarray:
    import sigpy
    from sigpy.mri.app import EspiritCalib

    sp_device = -1
    if device.type == "cuda":
        if sigpy.config.cupy_enabled is False:
            raise ValueError("The 'device' parameter is a CUDA device, but sigpy has no cupy backend here: install "
                             "the gpu extra (pip install 'convexrecon[gpu]', i.e. cupy-cuda12x) or use "
                             "method='torch'.")
        sp_device = device.index if device.index is not None else torch.cuda.current_device()
    maps = EspiritCalib(kspace, calib_width=calib_width, kernel_width=kernel_width, thresh=thresh, crop=crop,
                        max_iter=max_iter, device=sp_device, show_pbar=False).run()
    return np.asarray(sigpy.to_device(maps, sigpy.cpu_device), dtype=np.complex64)


def _espirit_torch(kspace: np.ndarray, calib_width: int, kernel_width: int, thresh: float, crop: float,
                   max_iter: int, device: torch.device, tol: float, block_pixels: int = 8192) -> np.ndarray:
    """sigpy's ``EspiritCalib`` (2D, one set of maps) in torch; see :func:`espirit_maps`."""
    x = torch.from_numpy(kspace).to(device)
    coils, height, width = x.shape
    kw, cw = kernel_width, calib_width
    top, left = height // 2 - cw // 2, width // 2 - cw // 2  # sigpy.resize's crop
    calib = x[:, top:top + cw, left:left + cw]
    blocks = calib.unfold(1, kw, 1).unfold(2, kw, 1)  # (C, nb, nb, kw, kw): sigpy.array_to_blocks
    mat = blocks.reshape(coils, -1, kw * kw).transpose(0, 1).reshape(-1, coils * kw * kw)
    # a small matrix ((cw - kw + 1)^2 x C kw^2): LAPACK via NumPy on the host (torch's CPU complex SVD is ~50x slower)
    _, s, vh = np.linalg.svd(mat.cpu().numpy(), full_matrices=False)
    vh = torch.from_numpy(np.ascontiguousarray(vh[s > thresh * s.max()])).to(device)  # kernels (K, C * kw * kw)
    # A^H A = (HW / kw^2) sum_k g_k g_k^H with g_k the centred orthonormal IFFT of kernel k zero-padded to
    # (H, W) (sigpy). Products of IFFTs are IFFTs of correlations: sum_k g_k[c] conj(g_k[c']) is
    # IFFT(R[c, c']) / sqrt(HW), R the kernels' cross-correlation at lags d in [-(kw-1), kw-1]^2.
    gram = (vh.T @ vh.conj()).reshape(coils, kw, kw, coils, kw, kw)
    lags = torch.zeros(coils, coils, height, width, dtype=x.dtype, device=device)
    for dy in range(-(kw - 1), kw):
        y0, y1 = max(dy, 0), min(kw, kw + dy)
        for dx in range(-(kw - 1), kw):
            x0, x1 = max(dx, 0), min(kw, kw + dx)
            sub = gram[:, y0:y1, x0:x1, :, y0 - dy:y1 - dy, x0 - dx:x1 - dx]
            lags[:, :, height // 2 + dy, width // 2 + dx] = torch.einsum("ayxbyx->ab", sub)
    aha = ifft2c(lags).mul_(math.sqrt(height * width) / kw ** 2)  # (C, C, H, W)
    pixels = height * width
    aha = aha.reshape(coils, coils, pixels).permute(2, 0, 1).contiguous()  # (HW, C, C)
    vectors = torch.empty(pixels, coils, dtype=x.dtype, device=device)
    values = torch.empty(pixels, device=device)
    step = pixels if device.type == "cuda" else block_pixels
    for start in range(0, pixels, step):
        if device.type == "cuda":
            a = aha[start:start + step]
            v, lam = _power(lambda u: torch.matmul(a, u), torch.ones(len(a), coils, 1, dtype=x.dtype, device=device),
                            max_iter, tol, lambda u: torch.linalg.vector_norm(u, dim=1, keepdim=True),
                            lambda u, w: float((u - w).abs().max()))
            vectors[start:start + step], values[start:start + step] = v[..., 0], lam[:, 0, 0]
        else:  # numpy's batched matmul of small matrices is several times faster than torch's on the CPU
            a = aha[start:start + step].numpy()
            v, lam = _power(lambda u: a @ u, np.ones((len(a), coils, 1), dtype=np.complex64), max_iter, tol,
                            lambda u: np.sqrt(np.sum(np.abs(u) ** 2, axis=1, keepdims=True)),
                            lambda u, w: float(np.abs(u - w).max()))
            vectors[start:start + step] = torch.from_numpy(v[..., 0])
            values[start:start + step] = torch.from_numpy(lam[:, 0, 0])
    vectors = vectors * torch.conj(vectors[:, :1] / vectors[:, :1].abs())  # phase relative to coil 0
    vectors = vectors * (values > crop)[:, None]
    return vectors.T.reshape(coils, height, width).cpu().numpy().astype(np.complex64, copy=False)


def _power(apply, v, max_iter: int, tol: float, norm, change):
    """sigpy's ``PowerMethod``: ``v <- A v / |A v|`` per pixel; returns ``(v, |A v_previous|)``."""
    lam = norm(v)
    for it in range(max_iter):
        y = apply(v)
        lam = norm(y)
        y = y / lam
        done = tol > 0 and it % 5 == 4 and change(y, v) < tol
        v = y
        if done:
            break
    return v, lam


MIN_COVERAGE = 0.99
"""Coil maps are healthy when their support holds at least this fraction of the object's energy in the
calibration image (:func:`map_coverage`). Measured on synthetic knee slices (docs/data.md, "Coil-map health"):
maps that worked covered 1.000 (to three digits) at every size; maps that were empty or cut into the object covered
0.00-0.97 (all-black or partly black reconstructions). Maps that cover the object but are inaccurate (the 6-pixel
kernel on 12-13 wide regions: 0.998-0.999) pass it, which is why :func:`working_width`, not the coverage, picks
the kernel."""
ESPIRIT_KERNEL = 6
"""ESPIRiT's kernel width (sigpy's default), used whenever the calibration region is wide enough."""
FALLBACK_KERNEL = 3
"""The kernel width used when the calibration region is too narrow for :data:`ESPIRIT_KERNEL`."""
OBJECT_LEVEL = 0.05
"""Pixels whose calibration-image energy exceeds this fraction of its maximum are the object (:func:`map_coverage`)."""


def working_width(kernel_width: int) -> int:
    """Narrowest calibration region with which ESPIRiT of ``kernel_width`` gave healthy maps on every measured case.

    ``2 * kernel_width + 2``: with the 6-pixel kernel, 14 (regions 7-11 wide gave maps that were zero on 15-100 %
    of the object, 12-13 wide maps that covered it but gave SENSE images 3-15 dB worse on most slices); with the
    3-pixel kernel, 8 (6-7 wide gave SENSE images up to 15 dB worse at 640x368). Measured at k-space 64x45,
    96x368, 160x92 (6 coils), 320x184 and 640x368 (15 coils), line and Poisson-disc masks (docs/data.md).
    """
    return 2 * int(kernel_width) + 2


def _calibration_energy(masked_kspace: np.ndarray, calib_width: int) -> np.ndarray:
    """``(..., H, W)`` root-sum-of-squares energy of the image of the calibration square alone (no aliasing).

    ``masked_kspace`` is ``(coils, ..., H, W)``: the coils first, any batch axes (the readout planes of a 3-D
    volume) between, the calibration square in the last two axes.
    """
    kspace = np.asarray(masked_kspace, dtype=np.complex64)
    height, width = kspace.shape[-2:]
    top, left = height // 2 - calib_width // 2, width // 2 - calib_width // 2
    calib = np.zeros_like(kspace)
    window = (..., slice(top, top + calib_width), slice(left, left + calib_width))
    calib[window] = kspace[window]
    return (ifft2c(torch.from_numpy(calib)).abs() ** 2).sum(dim=0).numpy()


def map_coverage(maps: np.ndarray, masked_kspace: np.ndarray, calib_width: int) -> float:
    """Fraction of the object's energy inside the maps' support.

    The SENSE images are zero outside the support (``maps == 0`` in every coil), so whatever signal lies there
    is lost from every reconstruction. The energy is that of the low-resolution image of the calibration square
    (free of undersampling aliasing, which lies outside the object and would make the measure depend on the
    mask and on how much of the field of view the object fills); the object is where that energy exceeds
    :data:`OBJECT_LEVEL` of its maximum. 1.0 for all-zero k-space (nothing to lose).

    ``maps`` and ``masked_kspace`` are ``(coils, H, W)``, or ``(coils, ..., H, W)`` with the calibration square in
    the last two axes (a 3-D volume in hybrid space, one plane per readout position): the object and its energy
    are then those of the whole volume.
    """
    energy = _calibration_energy(masked_kspace, int(calib_width))
    peak = float(energy.max())
    if not peak > 0:
        return 1.0
    inside = energy > OBJECT_LEVEL * peak
    support = (np.abs(np.asarray(maps)) ** 2).sum(axis=0) > 0
    return float(energy[inside & support].sum()) / float(energy[inside].sum())


class HealthyMaps(NamedTuple):
    """Coil maps that passed the health check, the ESPIRiT kernel width they were estimated with and their
    :func:`map_coverage`."""

    maps: np.ndarray
    kernel_width: int
    coverage: float


def fallback_message(calib_width: int) -> str:
    """What the :data:`DataWarning` says when maps of a ``calib_width``-wide region needed the fallback kernel."""
    standard = working_width(ESPIRIT_KERNEL)
    why = ("gave maps that miss part of the object" if calib_width >= standard
           else f"needs one at least {standard} wide")
    return (f"The fully sampled calibration region is {calib_width} wide: ESPIRiT's {ESPIRIT_KERNEL}-pixel kernel "
            f"{why}, so the coil maps were estimated with a {FALLBACK_KERNEL}-pixel kernel instead (they pass the "
            f"coverage check). A calibration region at least {standard} wide gives the standard maps.")


def warn_if_fallback(result: HealthyMaps, calib_width: int, note: str = "", stacklevel: int = 2) -> None:
    """Warn (:class:`~convexrecon.errors.DataWarning`, :func:`fallback_message` + ``note``) when ``result``
    was estimated with the fallback kernel; silent for the standard one."""
    if result.kernel_width != ESPIRIT_KERNEL:
        warnings.warn(fallback_message(int(calib_width)) + note, DataWarning, stacklevel=stacklevel + 1)


def healthy_maps(estimate: Callable[[int], np.ndarray], coverage: Callable[[np.ndarray], float],
                 calib_width: int) -> HealthyMaps:
    """The coil-map health check around any ESPIRiT estimate; no warning (see :func:`coil_maps`).

    ``estimate(kernel_width)`` returns maps, ``coverage(maps)`` their :func:`map_coverage`. With a calibration
    region at least :func:`working_width` ``(ESPIRIT_KERNEL)`` wide the standard kernel's maps are returned when
    they cover at least :data:`MIN_COVERAGE`; otherwise the :data:`FALLBACK_KERNEL`-pixel kernel's, if the region
    is at least :func:`working_width` ``(FALLBACK_KERNEL)`` wide and they pass. Maps below :data:`MIN_COVERAGE`
    are never returned.

    Raises
    ------
    ValueError
        When no kernel gives healthy maps: the message names the calibration width found and the width that works.
    """
    width = int(calib_width)
    covered = None
    standard = working_width(ESPIRIT_KERNEL)
    for kernel in (ESPIRIT_KERNEL, FALLBACK_KERNEL):
        if width >= working_width(kernel):
            maps = estimate(kernel)
            covered = coverage(maps)
            if covered >= MIN_COVERAGE:
                return HealthyMaps(maps, kernel, covered)
    found = "" if covered is None else (f" the coil maps estimated from it cover {covered:.0%} of the object "
                                        f"(at least {MIN_COVERAGE:.0%} needed), so the reconstructions would lose "
                                        f"the rest;")
    needed = next((w for w in (working_width(FALLBACK_KERNEL), standard) if w > width), None)
    advice = ("the width is not the cause: check that the k-space holds signal in its centre" if needed is None else
              f"coil maps need a calibration region at least {needed} wide ({standard} for ESPIRiT's standard "
              f"kernel). Sample a wider centre: 'calib' for Poisson-disc masks (--calib), 'center_fraction' for line "
              f"masks (--center-fraction; the band is round(center_fraction x W) columns)")
    raise ValueError(f"The fully sampled calibration region is {width} wide:{found} {advice}.")


def estimate_coil_maps(masked_kspace: np.ndarray, calib_width: int, *, device: str | torch.device | None = None,
                       method: str = "torch") -> HealthyMaps:
    """:func:`coil_maps` without its warning: the maps, the kernel width used and their coverage (for callers
    that keep the maps, such as the map cache, and must warn again whenever they hand fallback maps out)."""
    width = int(calib_width)
    return healthy_maps(
        lambda kernel: espirit_maps(masked_kspace, width, kernel_width=kernel, device=device, method=method),
        lambda maps: map_coverage(maps, masked_kspace, width), width)


def coil_maps(masked_kspace: np.ndarray, calib_width: int, *, device: str | torch.device | None = None,
              method: str = "torch") -> np.ndarray:
    """ESPIRiT maps that pass the coil-map health check, or an error.

    With a calibration region at least :func:`working_width` ``(ESPIRIT_KERNEL)`` wide, ESPIRiT runs with its
    default kernel (:data:`ESPIRIT_KERNEL`) and those maps are returned, bit for bit :func:`espirit_maps`, when
    they cover at least :data:`MIN_COVERAGE` of the object (:func:`map_coverage`). Otherwise (a narrower region,
    or maps that miss part of the object) ESPIRiT runs with the :data:`FALLBACK_KERNEL`-pixel kernel, if the region
    is at least :func:`working_width` ``(FALLBACK_KERNEL)`` wide, and a :class:`~convexrecon.errors.DataWarning`
    says so (:func:`fallback_message`). Maps below :data:`MIN_COVERAGE` are never returned.

    Raises
    ------
    ValueError
        When no kernel gives healthy maps: the message names the calibration width found and the width that works
        (:func:`working_width`).
    """
    result = estimate_coil_maps(masked_kspace, calib_width, device=device, method=method)
    warn_if_fallback(result, calib_width)
    return result.maps
