r"""Image-quality metrics on magnitude images, and their summaries.

Conventions (``docs/design.md`` §8, Conventions):

* Every metric takes ``(target, prediction)``; complex inputs are replaced by
  their magnitude, ``(2, H, W)`` real/imaginary inputs must be converted by the
  caller (:func:`magnitude` does it).
* ``data_range`` defaults to the maximum of the *target passed*: a slice gives
  the paper's slice-wise numbers, a volume gives fastMRI's volume-wise numbers.
* PSNR :math:`= 10 \log_{10}(\text{range}^2 / \text{MSE})`.
* SSIM: 7×7 uniform window, :math:`k_1 = 0.01`, :math:`k_2 = 0.03`, sample
  covariance, mean over the window-valid interior — scikit-image's
  ``structural_similarity`` defaults. A 3-D input is a volume: SSIM is the mean
  of the per-slice SSIMs, all with the one data range.
* NMSE :math:`= \|x - y\|^2 / \|y\|^2` with :math:`y` the target.
* A paired difference of two methods (:func:`paired_difference`) is the mean over slices of the
  per-slice differences with a two-sided Student-t interval over slices (``n - 1`` degrees of freedom).

All functions are pure: they neither modify their inputs nor use global state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from scipy.ndimage import uniform_filter

ArrayLike = np.ndarray | torch.Tensor
Convention = Literal["slice", "volume"]
WINDOW = 7
K1 = 0.01
K2 = 0.03


def magnitude(x: ArrayLike) -> np.ndarray:
    """Magnitude image as float64 NumPy; complex → ``abs``, real unchanged."""
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return np.abs(x).astype(np.float64) if np.iscomplexobj(x) else x.astype(np.float64)


def _pair(target: ArrayLike, prediction: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = magnitude(target), magnitude(prediction)
    if t.shape != p.shape:
        raise ValueError(
            f"The 'prediction' must have the target's shape {t.shape}. Got {p.shape} instead."
        )
    if t.size == 0:
        raise ValueError("The 'target' is empty.")
    return t, p


def _data_range(t: np.ndarray, data_range: float | None) -> float:
    value = float(t.max()) if data_range is None else float(data_range)
    if not value > 0:
        raise ValueError(f"The 'data_range' must be > 0. Got {value} instead.")
    return value


def psnr(target: ArrayLike, prediction: ArrayLike, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB of magnitude images.

    Parameters
    ----------
    target, prediction : array or tensor
        Images of one shape (a slice or a volume).
    data_range : float, optional
        Peak value; default the maximum of ``target``.
    """
    t, p = _pair(target, prediction)
    mse = float(np.mean((t - p) ** 2))
    if mse == 0:
        return float("inf")
    return 10.0 * np.log10(_data_range(t, data_range) ** 2 / mse)


def nmse(target: ArrayLike, prediction: ArrayLike) -> float:
    """Normalised mean squared error ``||x - y||² / ||y||²`` (``y`` the target)."""
    t, p = _pair(target, prediction)
    denominator = float(np.sum(t**2))
    if denominator == 0:
        raise ValueError("The 'target' is zero everywhere; NMSE is undefined.")
    return float(np.sum((t - p) ** 2)) / denominator


def _ssim_2d(t: np.ndarray, p: np.ndarray, data_range: float) -> float:
    if min(t.shape) < WINDOW:
        raise ValueError(f"SSIM needs images of at least {WINDOW}×{WINDOW}. Got {t.shape} instead.")
    cov_norm = WINDOW**2 / (WINDOW**2 - 1)
    mu_t, mu_p = uniform_filter(t, WINDOW), uniform_filter(p, WINDOW)
    var_t = cov_norm * (uniform_filter(t * t, WINDOW) - mu_t**2)
    var_p = cov_norm * (uniform_filter(p * p, WINDOW) - mu_p**2)
    cov = cov_norm * (uniform_filter(t * p, WINDOW) - mu_t * mu_p)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * mu_t * mu_p + c1) * (2 * cov + c2)) / ((mu_t**2 + mu_p**2 + c1) * (var_t + var_p + c2))
    pad = (WINDOW - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def ssim(target: ArrayLike, prediction: ArrayLike, data_range: float | None = None) -> float:
    """Structural similarity of magnitude images (7×7 uniform window).

    Parameters
    ----------
    target, prediction : array or tensor
        ``(H, W)`` slices or ``(slices, H, W)`` volumes.
    data_range : float, optional
        Default the maximum of ``target`` (the whole volume for 3-D input).
    """
    t, p = _pair(target, prediction)
    if t.ndim not in (2, 3):
        raise ValueError(f"SSIM expects (H, W) or (slices, H, W) images. Got shape {t.shape} instead.")
    value = _data_range(t, data_range)
    if t.ndim == 2:
        return _ssim_2d(t, p, value)
    return float(np.mean([_ssim_2d(a, b, value) for a, b in zip(t, p)]))


@dataclass(frozen=True)
class Summary:
    """Mean and population standard deviation (ddof=0) of ``n`` values."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f}"


def summarize(values: Sequence[float]) -> Summary:
    """Mean ± std (ddof=0) of a sequence of metric values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("Cannot summarise an empty sequence of metric values.")
    return Summary(float(array.mean()), float(array.std()), int(array.size))


def evaluate(
    targets: Sequence[ArrayLike],
    predictions: Sequence[ArrayLike],
    volumes: Sequence[str],
    convention: Convention = "slice",
) -> dict[str, Summary]:
    """PSNR, SSIM and NMSE summaries over a set of slices.

    Parameters
    ----------
    targets, predictions : sequences of (H, W) images
        Physical-scale slices (scale factors undone).
    volumes : sequence of str
        Volume name of each slice (used by the volume-wise convention).
    convention : {"slice", "volume"}
        ``"slice"``: one value per slice, data range = that slice's target
        maximum (the paper's numbers), mean ± std over slices. ``"volume"``:
        one value per volume, data range = the volume's target maximum, PSNR
        and NMSE over the stacked volume, SSIM the mean over its slices
        (fastMRI's numbers), mean ± std over volumes.

    Returns
    -------
    dict
        ``{"psnr": Summary, "ssim": Summary, "nmse": Summary}``.
    """
    if not len(targets) == len(predictions) == len(volumes):
        raise ValueError(
            f"targets, predictions and volumes must have one length. "
            f"Got {len(targets)}, {len(predictions)}, {len(volumes)}."
        )
    if convention == "slice":
        groups = [([t], [p]) for t, p in zip(targets, predictions)]
    elif convention == "volume":
        order: dict[str, tuple[list[ArrayLike], list[ArrayLike]]] = {}
        for t, p, v in zip(targets, predictions, volumes):
            order.setdefault(v, ([], []))
            order[v][0].append(t)
            order[v][1].append(p)
        groups = list(order.values())
    else:
        raise ValueError(f"The 'convention' must be 'slice' or 'volume'. Got {convention!r} instead.")
    scores: dict[str, list[float]] = {"psnr": [], "ssim": [], "nmse": []}
    for ts, ps in groups:
        t = np.stack([magnitude(x) for x in ts])
        p = np.stack([magnitude(x) for x in ps])
        scores["psnr"].append(psnr(t, p))
        scores["ssim"].append(ssim(t, p))
        scores["nmse"].append(nmse(t, p))
    return {name: summarize(values) for name, values in scores.items()}


def to_physical(images: torch.Tensor | np.ndarray, scales: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """Complex images at physical scale from stored-scale ``(n, 2, ...)`` channels or complex ``(n, ...)``.

    ``scales`` holds one factor per image (physical = stored × scale).
    """
    x = images.detach().cpu().double().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if not np.iscomplexobj(x):
        if x.ndim < 2 or x.shape[1] != 2:
            raise ValueError(f"The 'images' must be complex or have 2 channels (real, imaginary) at axis 1. "
                             f"Got shape {x.shape} instead.")
        x = x[:, 0] + 1j * x[:, 1]
    s = np.asarray(scales.detach().cpu().double() if isinstance(scales, torch.Tensor) else scales, dtype=np.float64)
    if s.shape != (len(x),):
        raise ValueError(f"The 'scales' must hold one factor per image, shape ({len(x)},). Got {s.shape} instead.")
    return x * s.reshape((-1,) + (1,) * (x.ndim - 1))


def score_slices(targets: torch.Tensor | np.ndarray, predictions: torch.Tensor | np.ndarray,
                 scales: torch.Tensor | np.ndarray | Sequence[float], volumes: Sequence[str],
                 convention: Convention = "slice") -> dict[str, Summary]:
    """:func:`evaluate` on stored-scale images (2 channels or complex), one scale and volume name per image.

    Volumes ``(n, 2, D, H, W)`` are scored as their ``D`` slices ``(H, W)``.
    """
    t, p = to_physical(targets, scales), to_physical(predictions, scales)
    names = list(volumes)
    if t.ndim == 4:  # volumes: every (H, W) slice along D, with its volume's name
        names = [v for v in names for _ in range(t.shape[1])]
        t, p = t.reshape(-1, *t.shape[2:]), p.reshape(-1, *p.shape[2:])
    return evaluate(list(t), list(p), names, convention)


@torch.no_grad()
def validation_metrics(net: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, scales: torch.Tensor,
                       volumes: Sequence[str], chunk_size: int = 8) -> dict[str, float]:
    """Slice-wise PSNR/SSIM (mean ± std) of a network on 2-channel validation slices at physical scale.

    ``net`` maps ``(n, 2, H, W)`` stored-scale inputs to outputs of the same shape (any module;
    it runs ``chunk_size`` slices at a time, without autograd, in its parameters' dtype);
    ``scales`` undo the per-slice scaling. Volumes ``(N, 2, D, H, W)`` are scored as their
    ``D`` slices ``(H, W)``. Each chunk runs on the device of ``net``'s parameters (the inputs may
    be elsewhere, e.g. on the host); the scores are computed on the host.
    """
    weight = next(net.parameters())
    pred = torch.cat([net(inputs[i:i + chunk_size].to(device=weight.device, dtype=weight.dtype)).cpu()
                      for i in range(0, len(inputs), chunk_size)])
    summary = score_slices(targets, pred, scales, volumes)
    return {"psnr": summary["psnr"].mean, "psnr_std": summary["psnr"].std,
            "ssim": summary["ssim"].mean, "ssim_std": summary["ssim"].std}


def slice_psnr(targets: torch.Tensor | np.ndarray, predictions: torch.Tensor | np.ndarray,
               scales: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    """PSNR (dB) of every slice at physical scale (data range = that slice's target maximum), in order:
    the values whose mean :func:`score_slices` reports, kept for paired comparisons."""
    t, p = to_physical(targets, scales), to_physical(predictions, scales)
    if t.ndim == 4:
        t, p = t.reshape(-1, *t.shape[2:]), p.reshape(-1, *p.shape[2:])
    return np.array([psnr(a, b) for a, b in zip(t, p)])


@dataclass(frozen=True)
class PairedDifference:
    """Mean of paired per-slice differences ``a - b`` with a two-sided ``level`` Student-t interval.

    ``std`` is the sample standard deviation of the differences (ddof=1); the interval is
    ``mean ± t_{n-1, (1 + level) / 2} std / sqrt(n)``. :attr:`significant` is False when it contains 0.
    """

    mean: float
    std: float
    n: int
    low: float
    high: float
    level: float

    @property
    def significant(self) -> bool:
        return not self.low <= 0.0 <= self.high

    def text(self, unit: str = "dB") -> str:
        """``+0.52 dB (95 % CI +0.31 to +0.73, 8 slices)``, or "no significant difference (...)" when the
        interval contains 0."""
        interval = (f"{self.level:.0%} CI {self.low:+.2f} to {self.high:+.2f} {unit}, {self.n} slices, "
                    f"paired t").replace("%", " %")
        if not self.significant:
            return f"no significant difference ({self.mean:+.2f} {unit}, {interval})"
        return f"{self.mean:+.2f} {unit} ({interval})"

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"mean": self.mean, "std": self.std, "n": self.n, "low": self.low, "high": self.high,
                "level": self.level, "significant": self.significant}


def paired_difference(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray,
                      level: float = 0.95) -> PairedDifference:
    """``a - b`` per slice (e.g. two methods' PSNRs on the same slices), mean and Student-t interval over slices.

    The slices are treated as independent draws; slices of one volume are correlated, so the interval is
    optimistic when few volumes are scored.
    """
    from scipy.stats import t as student_t

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"The 'a' and 'b' parameters must be 1-D of one length. Got shapes {x.shape} and "
                         f"{y.shape} instead.")
    if x.size < 2 or not np.all(np.isfinite(x - y)):
        raise ValueError(f"A paired interval needs at least 2 finite differences. Got {x.size} values "
                         f"({int(np.sum(~np.isfinite(x - y)))} not finite).")
    if not 0 < level < 1:
        raise ValueError(f"The 'level' parameter must be in (0, 1). Got {level!r} instead.")
    d = x - y
    mean, std = float(d.mean()), float(d.std(ddof=1))
    half = float(student_t.ppf((1 + level) / 2, d.size - 1)) * std / np.sqrt(d.size)
    return PairedDifference(mean, std, int(d.size), mean - half, mean + half, float(level))
