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

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from convexrecon.errors import DataWarning, SelectionWarning, grid_edge
from convexrecon.metrics import Summary, evaluate, psnr
from convexrecon.mri.espirit import calibration_width, coil_maps
from convexrecon.mri.fft import center_crop
from convexrecon.mri.sense import sense_images

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


def problem_from_kspace(kspace: np.ndarray, mask: np.ndarray, calib: int, crop: int, *,
                        maps: np.ndarray | None = None, fname: str = "", slice_index: int = 0) -> SliceProblem:
    """The problem of one fully sampled slice ``(coils, H, W)`` under the ``(H, W)`` mask ``mask``.

    Preprocessed as :class:`~convexrecon.data.SliceDataset` does (ESPIRiT on the masked k-space from a
    calibration square of at most ``calib``, SENSE images, scale), keeping the full-grid maps; ``maps``
    skips ESPIRiT. :func:`convexrecon.data.problems.slice_problem` reads the slice and its mask from a file.
    """
    masked = kspace * mask
    if maps is None:
        maps = coil_maps(masked, calibration_width(mask, calib))
    images = sense_images(kspace, mask, calib, crop, maps=maps)
    return SliceProblem(
        kspace=(masked / images.scale).astype(np.complex64),
        mask=mask,
        maps=maps,
        zero_filled=images.input.numpy(),
        target=images.target.numpy(),
        scale=images.scale,
        fname=fname,
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

    x = np.asarray(SenseRecon(
        problem.kspace, problem.maps, lamda=lamda, weights=problem.mask.astype(np.float32),
        max_iter=max_iter, show_pbar=False,
    ).run())
    x = _unless_broken_down(x, problem, lamda, max_iter)
    return np.asarray(center_crop(x, (problem.crop, problem.crop)))


BREAKDOWN = 1e3
"""sigpy's CG divides by :math:`p^H A^H A p` without a guard, so on a singular normal operator (one coil, or maps that
vanish where the mask samples) it can return values ~1e8 times the image. A SENSE-CG image whose largest magnitude
exceeds this multiple of the (stored, cropped) zero-filled image's is taken to have broken down."""


def _unless_broken_down(x: np.ndarray, problem: SliceProblem, lamda: float, max_iter: int) -> np.ndarray:
    """``x`` (sigpy's SENSE-CG of ``problem``, full grid), or, when it broke down (:data:`BREAKDOWN`), the same
    iteration by the package's CG, which stops a slice whose step would divide by zero, with a warning."""
    scale = float(np.abs(problem.zero_filled).max())
    if np.isfinite(x).all() and float(np.abs(x).max()) <= BREAKDOWN * max(scale, np.finfo(np.float32).tiny):
        return x
    import torch

    from convexrecon.mri.consistency import data_consistency

    warnings.warn(f"sigpy's SENSE-CG broke down on {problem.fname or 'a slice'} (largest magnitude "
                  f"{float(np.abs(x).max()):.3g} against {scale:.3g} for the zero-filled image; the normal operator "
                  "is singular there, e.g. one coil): recomputed by the package's CG.", DataWarning, stacklevel=3)
    k = torch.as_tensor(np.asarray(problem.kspace, dtype=np.complex64))[None]
    s = torch.as_tensor(np.asarray(problem.maps, dtype=np.complex64))[None]
    m = torch.as_tensor(np.asarray(problem.mask, dtype=np.float32))[None]
    zero = torch.zeros(1, *k.shape[-2:], dtype=k.dtype)
    return data_consistency(zero, k, s, m, float(lamda), iterations=max_iter)[0].numpy()


@contextmanager
def fixed_numpy_seed(seed: int = 0):
    """Seed NumPy's global generator inside the block; the caller's state is restored after.

    sigpy's iterative apps size their gradient step by a power iteration started from ``np.random``'s
    global state, so without a fixed start the same CS reconstruction differs in the last digits
    between runs.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def l1_wavelet(problem: SliceProblem, lamda: float, max_iter: int = 100) -> np.ndarray:
    """L1-wavelet compressed sensing, cropped, stored scale."""
    from sigpy.mri.app import L1WaveletRecon

    if not lamda > 0:
        raise ValueError(f"The 'lamda' parameter must be > 0. Got {lamda} instead.")
    with fixed_numpy_seed():
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
    problems: Sequence[SliceProblem], grid: Sequence[float] = LAMBDA_GRID, max_iter: int = 100,
    where: str = "on the validation slices",
) -> tuple[float, dict[float, float]]:
    """The L1-wavelet :math:`\\lambda` of best mean slice-wise PSNR on ``problems`` (``where`` names them in the
    warning when the choice is at an edge of ``grid``).

    Returns
    -------
    best : float
    scores : dict
        Mean slice-wise PSNR (dB) for every :math:`\\lambda` in ``grid``.
    """
    if not problems:
        raise ValueError("choose_lambda needs at least one slice with a fully sampled target.")
    scores = {
        float(lam): float(np.mean([psnr(p.target, l1_wavelet(p, lam, max_iter)) for p in problems]))
        for lam in grid
    }
    best = max(scores, key=scores.__getitem__)
    warn_lambda_at_edge(best, grid, where)
    return best, scores


def warn_lambda_at_edge(lamda: float, grid: Sequence[float], where: str = "") -> bool:
    """Warn (``SelectionWarning``, a ``DataWarning``) when ``lamda`` is the smallest or largest of ``grid``; returns
    whether it is.

    The best value may then lie outside the grid, so the L1-wavelet numbers may understate CS.
    """
    edge = grid_edge(lamda, grid)
    if edge is None:
        return False
    side, other = edge
    values = sorted(float(g) for g in grid)
    warnings.warn(f"The L1-wavelet λ chosen {where} is {lamda:g}, the {side} value of the grid {values}: the best "
                  f"λ may lie outside it; extend the grid (--lambdas) with {other} values.".replace("  ", " "),
                  SelectionWarning, stacklevel=2)
    return True


def cross_validated_table(
    problems: Sequence[SliceProblem], grid: Sequence[float] = LAMBDA_GRID, max_iter: int = 100,
    references: Sequence[np.ndarray] | None = None, progress: bool = False,
) -> tuple[dict[str, dict[str, dict[str, Summary]]], dict[str, float], str]:
    """Zero-filled, SENSE-CG and L1-wavelet metrics on every problem, λ chosen without the scored volume.

    Every λ of ``grid`` is solved on every slice once. With two or more volumes the λ of a
    volume's slices is the one of best mean slice-wise PSNR on the *other* volumes
    (leave-one-volume-out); with one volume, on the other slices (leave-one-slice-out);
    with a single slice, on that slice itself (said in the returned description). A λ at
    either end of the grid warns (:func:`warn_lambda_at_edge`).

    Parameters
    ----------
    problems
        The slices to score (physical scale = stored × ``problem.scale``).
    grid, max_iter
        Candidate λ and L1-wavelet iterations.
    references
        One physical-scale ``(crop, crop)`` magnitude reference per problem (e.g. the file's
        ``reconstruction_rss``, cropped); default the fully sampled SENSE targets.
    progress
        A progress bar over the solves.

    Returns
    -------
    table : dict
        As :func:`reference_table`.
    lambdas : dict
        The λ used for each volume name.
    how : str
        ``"leave-one-volume-out"``, ``"leave-one-slice-out"`` or ``"on the scored slice itself"``.
    """
    targets = [p.target * p.scale for p in problems] if references is None else list(references)
    predictions, lambdas, how = cross_validated_images(problems, grid, max_iter, targets, progress)
    names = [p.fname for p in problems]
    table = {method: {c: evaluate(targets, preds, names, c) for c in ("slice", "volume")}
             for method, preds in predictions.items()}
    return table, lambdas, how


def cross_validated_images(
    problems: Sequence[SliceProblem], grid: Sequence[float] = LAMBDA_GRID, max_iter: int = 100,
    references: Sequence[np.ndarray] | None = None, progress: bool = False,
) -> tuple[dict[str, list[np.ndarray]], dict[str, float], str]:
    """The images behind :func:`cross_validated_table`: ``{"zero-filled", "SENSE-CG", "L1-wavelet"}`` → one
    physical-scale image per problem (L1-wavelet at the λ chosen without the scored volume), the λ per volume
    name, and how it was chosen."""
    from tqdm.auto import tqdm

    if not problems:
        raise ValueError("cross_validated_table needs at least one slice.")
    targets = [p.target * p.scale for p in problems] if references is None else list(references)
    if len(targets) != len(problems):
        raise ValueError(f"The 'references' must hold one image per problem ({len(problems)}). Got {len(targets)}.")
    grid = [float(g) for g in grid]
    names = [p.fname for p in problems]
    with tqdm(total=len(problems) * (len(grid) + 1), desc="classical references", unit="solve",
              disable=not progress) as bar:
        solutions = {}
        for lam in grid:
            solutions[lam] = []
            for p in problems:
                solutions[lam].append(l1_wavelet(p, lam, max_iter) * p.scale)
                bar.update(1)
        cg = []
        for p in problems:
            cg.append(sense_cg(p) * p.scale)
            bar.update(1)
    quality = {lam: [psnr(t, x) for t, x in zip(targets, solutions[lam])] for lam in grid}
    volumes = list(dict.fromkeys(names))
    how = "leave-one-volume-out" if len(volumes) > 1 else (
        "leave-one-slice-out" if len(problems) > 1 else "on the scored slice itself")
    chosen: list[float] = []
    for i, name in enumerate(names):
        if how == "leave-one-volume-out":
            others = [j for j, n in enumerate(names) if n != name]
        elif how == "leave-one-slice-out":
            others = [j for j in range(len(problems)) if j != i]
        else:
            others = [i]
        chosen.append(max(grid, key=lambda lam: float(np.mean([quality[lam][j] for j in others]))))
    lambdas = {}
    for name, lam in zip(names, chosen):
        lambdas.setdefault(name, lam)
    for lam in sorted(set(chosen)):
        warn_lambda_at_edge(lam, grid, f"({how}) for {', '.join(n for n in lambdas if lambdas[n] == lam)}")
    predictions = {
        "zero-filled": [p.zero_filled * p.scale for p in problems],
        "SENSE-CG": cg,
        "L1-wavelet": [solutions[lam][i] for i, lam in enumerate(chosen)],
    }
    return predictions, lambdas, how


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
