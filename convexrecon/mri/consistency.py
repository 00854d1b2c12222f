r"""Data consistency with the measured k-space: the DC step, crops of full-grid images, measured data.

The multi-coil SENSE model of one slice with maps :math:`S_c`, sampling mask :math:`M`
and centred orthonormal FFT :math:`F` (``docs/design.md`` §8; :class:`~convexrecon.mri.sense.SenseOperator`) is

.. math:: A x = (M F S_c x)_{c=1}^{C}, \qquad A^H y = \sum_c \overline{S_c} F^{-1}(M y_c).

The **data-consistency (DC) step** of an unrolled network (MoDL, Aggarwal et al., IEEE TMI
2019; GLEAM, Ozturkler et al., 2022) maps a network estimate :math:`z` to

.. math:: \operatorname{DC}_\lambda(z) = \arg\min_x \|A x - k\|_2^2 + \lambda \|x - z\|_2^2
          = (A^H A + \lambda I)^{-1} (A^H k + \lambda z),

with :math:`k` the measured (masked) k-space. :func:`data_consistency` solves the normal
equation by a fixed number of conjugate-gradient iterations warm-started at :math:`z`
(batched, every slice with its own maps, mask and λ; differentiable through autograd, on
any device, in the dtype of the data). The **closed form** (``method="exact"``) is used only
where it is exact: one coil whose map has constant magnitude :math:`s` over the grid
(:math:`S = s\Phi` with :math:`\Phi` a unitary phase), where
:math:`A^H A + \lambda I = \Phi^H F^H (s^2 M^2 + \lambda) F \Phi` is diagonal in k-space and

.. math:: \operatorname{DC}_\lambda(z) = \Phi^H F^H \frac{s M k + \lambda F \Phi z}{s^2 M^2 + \lambda}.

With several coils (ESPIRiT maps, normalised to unit sum of squares or not) the
k-space projection coil by coil is *not* the minimiser of the objective above, so it is not
offered: ``"auto"`` picks the closed form only in the exact case and CG otherwise.

**Cropped images, full-grid data.** The networks see centre crops of the SENSE image, but
the k-space belongs to the full grid. The DC step therefore acts on the full grid: the
cropped estimate replaces the crop window of the current full-grid estimate
(:func:`embed_crop`), outside the window the previous estimate is kept, and the DC solve
runs with the full maps and mask. This is exact (the same objective as above on the full
grid) whatever the object's extent; where the object extends beyond the crop, the outside
part is only refined by the DC steps themselves (a proximal-point iteration towards the
data), never by the network (``docs/design.md`` §9.1).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from convexrecon.mri.fft import fft2c, ifft2c
from convexrecon.mri.sense import SenseOperator, sense_adjoint

DC_METHODS = ("auto", "cg", "exact")


def _inner(a: Tensor, b: Tensor) -> Tensor:
    """Real part of :math:`\\langle a, b\\rangle` per batch element, ``(B,)``."""
    return (a.conj() * b).real.flatten(1).sum(1)


def conjugate_gradient(normal: Any, rhs: Tensor, x0: Tensor, iterations: int) -> Tensor:
    """``iterations`` CG steps on ``normal(x) = rhs`` (Hermitian positive semi-definite), batched.

    Every batch element has its own step sizes; an element whose residual is exactly zero
    stays where it is. The loop has a fixed length, so it is differentiable by autograd.
    """
    x = x0
    r = rhs - normal(x)
    p = r
    rs = _inner(r, r)
    shape = (-1,) + (1,) * (x.ndim - 1)
    for _ in range(iterations):
        ap = normal(p)
        pap = _inner(p, ap)
        alpha = torch.where(pap > 0, rs / pap.clamp_min(torch.finfo(pap.dtype).tiny), torch.zeros_like(pap))
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * ap
        rs_new = _inner(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        p = r + beta.reshape(shape) * p
        rs = rs_new
    return x


def exact_dc_applies(maps: Tensor, rtol: float = 1e-5) -> bool:
    """Whether the closed-form DC step is exact: one coil whose map has one magnitude over the grid."""
    if maps.shape[-3] != 1:
        return False
    magnitude = maps.abs().flatten(1)
    top, low = magnitude.max(dim=1).values, magnitude.min(dim=1).values
    return bool((low > 0).all() and ((top - low) <= rtol * top).all())


def _lam(lam: Any, batch: int, like: Tensor) -> Tensor:
    """λ as a ``(B,)`` real tensor (a float, a 0-d tensor or one value per slice), checked ≥ 0."""
    value = torch.as_tensor(lam, dtype=like.real.dtype, device=like.device) if not torch.is_tensor(lam) else \
        lam.to(dtype=like.real.dtype, device=like.device)
    if value.ndim == 0:
        value = value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(f"The 'lam' parameter must be a number or one value per slice, shape ({batch},). "
                         f"Got shape {tuple(value.shape)} instead.")
    if not bool(torch.isfinite(value.detach()).all()) or bool((value.detach() < 0).any()):
        raise ValueError(f"The 'lam' parameter must be finite and >= 0. Got {value.detach().cpu().tolist()} instead.")
    return value


def data_consistency(z: Tensor, kspace: Tensor, maps: Tensor, mask: Tensor, lam: Any, *,
                     iterations: int = 10, method: str = "auto") -> Tensor:
    r"""The DC step :math:`\arg\min_x \|A x - k\|^2 + \lambda\|x - z\|^2`, batched.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, H, W)`` complex estimates on the full k-space grid.
    kspace : torch.Tensor
        ``(B, C, H, W)`` complex measured k-space (entries outside ``mask`` are ignored).
    maps : torch.Tensor
        ``(B, C, H, W)`` complex coil maps.
    mask : torch.Tensor
        ``(B, H, W)`` sampling mask (bool or real).
    lam : float or torch.Tensor
        λ ≥ 0: one number, a 0-d tensor (e.g. a learned parameter) or ``(B,)``.
        ``λ = 0`` gives the data fit reached by CG from ``z``.
    iterations : int
        CG iterations (warm start at ``z``; ignored by the closed form).
    method : {"auto", "cg", "exact"}
        ``"exact"``: the closed form, only for one coil with a constant-magnitude map
        (raises otherwise); ``"auto"``: the closed form when it is exact, CG otherwise.

    Returns
    -------
    torch.Tensor
        ``(B, H, W)`` complex, in the dtype of ``z``.
    """
    if method not in DC_METHODS:
        raise ValueError(f"The 'method' parameter must be one of {DC_METHODS}. Got {method!r} instead.")
    if not torch.is_tensor(z) or not z.is_complex() or z.ndim != 3:
        raise ValueError(f"The 'z' parameter must be a complex tensor (B, H, W). "
                         f"Got {getattr(z, 'dtype', type(z).__name__)} {tuple(getattr(z, 'shape', ()))} instead.")
    batch, height, width = z.shape
    if not torch.is_tensor(maps) or not maps.is_complex() or maps.ndim != 4 or maps.shape[0] != batch \
            or tuple(maps.shape[-2:]) != (height, width):
        raise ValueError(f"The 'maps' parameter must be complex (B, C, H, W) = ({batch}, C, {height}, {width}). "
                         f"Got {getattr(maps, 'dtype', None)} {tuple(getattr(maps, 'shape', ()))} instead.")
    if not torch.is_tensor(kspace) or tuple(kspace.shape) != tuple(maps.shape) or not kspace.is_complex():
        raise ValueError(f"The 'kspace' parameter must be complex with the shape of 'maps' {tuple(maps.shape)}. "
                         f"Got {getattr(kspace, 'dtype', None)} {tuple(getattr(kspace, 'shape', ()))} instead.")
    if not torch.is_tensor(mask) or tuple(mask.shape) != (batch, height, width):
        raise ValueError(f"The 'mask' parameter must have shape ({batch}, {height}, {width}). "
                         f"Got {tuple(getattr(mask, 'shape', ()))} instead.")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"The 'iterations' parameter must be an int >= 0. Got {iterations!r} instead.")
    mask = mask.to(dtype=z.real.dtype)
    maps, kspace = maps.to(z.dtype), kspace.to(z.dtype)
    lam_b = _lam(lam, batch, z)
    exact = exact_dc_applies(maps)
    if method == "exact" and not exact:
        raise ValueError("The 'method' parameter 'exact' needs one coil whose map has a constant magnitude over the "
                         f"grid (the only case where the closed form is exact). Got {maps.shape[1]} coils"
                         + ("" if maps.shape[1] != 1 else " with a varying map magnitude") + " instead; use 'cg'.")
    if exact and method != "cg":
        s = maps.abs()  # (B, 1, H, W): one magnitude per slice
        phase = maps / s
        v = fft2c(phase[:, 0] * z)
        ls = lam_b.reshape(-1, 1, 1)
        s0, m = s[:, 0], mask
        data = s0 * m * kspace[:, 0]
        denominator = s0 ** 2 * m ** 2 + ls
        safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
        w = torch.where(denominator > 0, (data + ls * v) / safe, v)
        return phase[:, 0].conj() * ifft2c(w)
    ls = lam_b.reshape(-1, 1, 1)
    op = SenseOperator(maps, mask, spatial_dims=2)
    rhs = op.adjoint(kspace) + ls * z
    # CG in ifftshifted coordinates, where the iterations need no shifts (SenseOperator.shifted_normal)
    dims = (-2, -1)
    gram = op.shifted_normal()

    def normal(x: Tensor) -> Tensor:
        return gram(x) + ls * x

    x = conjugate_gradient(normal, torch.fft.ifftshift(rhs, dim=dims), torch.fft.ifftshift(z, dim=dims), iterations)
    return torch.fft.fftshift(x, dim=dims)


# ---- crops of full-grid images ------------------------------------------------------------------

def sense_cg_batch(kspace: Tensor, maps: Tensor, mask: Tensor, iterations: int = 10) -> Tensor:
    r"""Unregularised SENSE-CG of a batch of slices: ``iterations`` CG steps on :math:`A^H A x = A^H k` from zero
    (:func:`data_consistency` with :math:`\lambda = 0`); full-grid complex images ``(B, H, W)``, in torch on the
    data's device (the batched counterpart of :func:`convexrecon.mri.classical.sense_cg`, sigpy's SENSE-CG of one
    slice)."""
    zero = torch.zeros(kspace.shape[0], *kspace.shape[-2:], dtype=kspace.dtype, device=kspace.device)
    return data_consistency(zero, kspace, maps, mask, 0.0, iterations=iterations)


def crop_window(shape: Sequence[int], crop: int) -> tuple[slice, slice]:
    """The centre ``crop × crop`` window of an ``(H, W)`` grid, placed as :func:`~convexrecon.mri.fft.center_crop`."""
    height, width = int(shape[-2]), int(shape[-1])
    if not 1 <= crop <= min(height, width):
        raise ValueError(f"The 'crop' parameter must be between 1 and {min(height, width)}. Got {crop!r} instead.")
    top, left = height // 2 - crop // 2, width // 2 - crop // 2
    return slice(top, top + crop), slice(left, left + crop)


def crop_center(x: Tensor, crop: int) -> Tensor:
    """The centre ``crop × crop`` window of ``(..., H, W)``."""
    rows, cols = crop_window(x.shape, crop)
    return x[..., rows, cols]


def embed_crop(full: Tensor, cropped: Tensor) -> Tensor:
    """``full`` with its centre window replaced by ``cropped`` (a new tensor; differentiable in both)."""
    rows, cols = crop_window(full.shape, cropped.shape[-1])
    out = full.clone()
    out[..., rows, cols] = cropped
    return out


# ---- measured data of a split -------------------------------------------------------------------

class MeasuredData(NamedTuple):
    """The measurements of ``N`` slices on the full grid, divided by each slice's scale.

    Attributes
    ----------
    kspace : torch.Tensor
        ``(N, C, H, W)`` complex64 masked k-space / ``scale`` (so that the centre crop of
        :math:`A^H k` is the stored zero-filled input).
    maps : torch.Tensor
        ``(N, C, H, W)`` complex64 full-grid ESPIRiT maps (those of the input and target).
    mask : torch.Tensor
        ``(N, H, W)`` float32 sampling masks.
    crop : int
        Side of the network's images.
    """

    kspace: Tensor
    maps: Tensor
    mask: Tensor
    crop: int

    def __len__(self) -> int:
        return int(self.kspace.shape[0])

    def subset(self, index: Any) -> "MeasuredData":
        """The slices ``index`` (a slice, an index tensor or a boolean mask)."""
        return MeasuredData(self.kspace[index], self.maps[index], self.mask[index], self.crop)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "MeasuredData":
        """On ``device``; ``dtype`` (complex64 or complex128) for k-space and maps."""
        complex_dtype = dtype or self.kspace.dtype
        return MeasuredData(self.kspace.to(device=device, dtype=complex_dtype),
                            self.maps.to(device=device, dtype=complex_dtype),
                            self.mask.to(device=device, dtype=torch.float64 if complex_dtype == torch.complex128
                                         else torch.float32), self.crop)

    def zero_filled(self) -> Tensor:
        """:math:`A^H k` on the full grid, ``(N, H, W)`` complex."""
        return sense_adjoint(self.kspace, self.maps, self.mask)


class MeasuredGroups(NamedTuple):
    """The measurements of ``N`` slices of several k-space grids: one :class:`MeasuredData` per grid.

    fastMRI files of one anatomy come in several phase-encoding widths (knee: 368, 372, ... columns), and a DC
    step or a CS image needs each slice on its own grid, while the blocks see centre crops of one size. So the
    slices are kept per grid, and ``positions[g]`` says where the slices of ``groups[g]`` sit in the set (the order
    of the set's cropped images and targets).

    Attributes
    ----------
    groups : tuple of MeasuredData
        One per k-space grid, each of one crop (``crop``).
    positions : tuple of torch.Tensor
        ``int64`` positions of each group's slices in the set; together a permutation of ``0..N-1``.
    crop : int
        Side of the network's images.
    """

    groups: tuple[MeasuredData, ...]
    positions: tuple[Tensor, ...]
    crop: int

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def checked(self, name: str = "data") -> "MeasuredGroups":
        """This set after checking that it is one (parameter ``name`` in the messages): MeasuredData groups of its
        crop, each with as many positions as slices, the positions together a permutation of ``0..N-1``."""
        if not self.groups or len(self.groups) != len(self.positions) \
                or not all(isinstance(g, MeasuredData) for g in self.groups):
            raise ValueError(f"The '{name}' parameter must hold one MeasuredData per group and one positions tensor "
                             f"each. Got {len(self.groups)} groups and {len(self.positions)} positions instead.")
        sizes = [len(g) for g in self.groups]
        counts = [int(torch.as_tensor(p).numel()) for p in self.positions]
        crops = sorted({g.crop for g in self.groups})
        where = torch.cat([torch.as_tensor(p, dtype=torch.int64).flatten().cpu() for p in self.positions])
        if sizes != counts or crops != [self.crop] or not torch.equal(where.sort().values, torch.arange(len(where))):
            raise ValueError(f"The '{name}' parameter must place every slice once: groups of {sizes} slices at crop "
                             f"{self.crop} and positions forming a permutation of 0..{sum(sizes) - 1}. Got "
                             f"{counts} positions, crops {crops} and positions {sorted(where.tolist())[:12]} "
                             "instead.")
        return self

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> "MeasuredGroups":
        """Every group :meth:`MeasuredData.to` ``device`` and ``dtype`` (positions stay on the CPU)."""
        return MeasuredGroups(tuple(g.to(device, dtype) for g in self.groups), self.positions, self.crop)

    def scatter(self, parts: Sequence[Tensor]) -> Tensor:
        """One tensor per group (its slices first) as one tensor in the set's slice order."""
        first = parts[0]
        out = first.new_empty((len(self), *first.shape[1:]))
        for part, where in zip(parts, self.positions):
            out[where.to(out.device)] = part
        return out

    def split(self, index: Tensor) -> list[tuple[Tensor, Tensor]]:
        """For set positions ``index`` (int64, any order): per group, ``(k, local)`` with ``index[k]`` the group's
        slices ``local``."""
        index = torch.as_tensor(index, dtype=torch.int64).cpu()
        group = torch.empty(len(self), dtype=torch.int64)
        local = torch.empty(len(self), dtype=torch.int64)
        for g, where in enumerate(self.positions):
            group[where] = g
            local[where] = torch.arange(len(where))
        out = []
        for g in range(len(self.groups)):
            k = (group[index] == g).nonzero().flatten()
            out.append((k, local[index[k]]))
        return out


def measured_groups(data: "MeasuredData | MeasuredGroups") -> MeasuredGroups:
    """``data`` as :class:`MeasuredGroups` (a :class:`MeasuredData` is one group in its own order)."""
    if isinstance(data, MeasuredGroups):
        return data.checked()
    if isinstance(data, MeasuredData):
        return MeasuredGroups((data,), (torch.arange(len(data)),), data.crop)
    raise TypeError(f"Expected MeasuredData or MeasuredGroups. Got {type(data).__name__} instead.")


def measured_from_problems(problems: Sequence[Any]) -> MeasuredData:
    """Stack :class:`~convexrecon.mri.classical.SliceProblem` s (one k-space grid and crop) into :class:`MeasuredData`
    (:func:`convexrecon.data.problems.measured_data` builds them from a data set's files).

    Slices with fewer coils than the most are padded with coils of zero k-space and zero maps. The SENSE operator
    ignores such a coil (:math:`A x` is zero there and :math:`A^H` adds nothing from it, so the normal operator, its
    step bound and every image are those of the slice's own coils, to float rounding), so a set of files with different
    coil counts (fastMRI brain has 4 to 20) trains as one; :func:`~convexrecon.mri.noise.estimate_noise` skips the
    padded coils.
    """
    if len(problems) == 0:
        raise ValueError("The 'problems' parameter must hold at least one slice. Got none.")
    grids = {tuple(p.kspace.shape[-2:]) for p in problems}
    if len(grids) != 1:
        raise ValueError(f"The 'problems' must share one k-space grid (H, W) to be stacked. Got {sorted(grids)} "
                         "instead; group the slices by grid.")
    crops = {p.crop for p in problems}
    if len(crops) != 1:
        raise ValueError(f"The 'problems' must share one crop. Got {sorted(crops)} instead.")
    coils = max(p.kspace.shape[0] for p in problems)

    def padded(array: np.ndarray) -> np.ndarray:
        extra = coils - array.shape[0]
        return np.concatenate([array, np.zeros((extra, *array.shape[1:]), array.dtype)]) if extra else array

    return MeasuredData(torch.from_numpy(np.stack([padded(p.kspace) for p in problems]).astype(np.complex64)),
                        torch.from_numpy(np.stack([padded(p.maps) for p in problems]).astype(np.complex64)),
                        torch.from_numpy(np.stack([p.mask for p in problems]).astype(np.float32)),
                        int(crops.pop()))


def grouped_from_problems(problems: Sequence[Any]) -> "MeasuredData | MeasuredGroups":
    """:func:`measured_from_problems` of slices of any k-space grids: :class:`MeasuredData` when they share one,
    :class:`MeasuredGroups` (one group per grid, in order of first appearance) otherwise."""
    if len(problems) == 0:
        raise ValueError("The 'problems' parameter must hold at least one slice. Got none.")
    crops = {p.crop for p in problems}
    if len(crops) != 1:
        raise ValueError(f"The 'problems' must share one crop. Got {sorted(crops)} instead.")
    grids: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(problems):
        grids.setdefault(tuple(p.kspace.shape[-2:]), []).append(i)
    if len(grids) == 1:
        return measured_from_problems(problems)
    groups = tuple(measured_from_problems([problems[i] for i in where]) for where in grids.values())
    return MeasuredGroups(groups, tuple(torch.tensor(where, dtype=torch.int64) for where in grids.values()),
                          groups[0].crop)
