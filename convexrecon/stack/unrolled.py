r"""The unrolled network with SENSE data consistency (``docs/design.md`` §9.1): the model, its file spec and scores.

Stage ``i = 1..K`` of :class:`UnrolledNet` maps the current full-grid estimate :math:`x_i`
(:math:`x_1 = A^H k`, the zero-filled SENSE image) to

.. math:: z_i = x_i + P\,\mathrm{block}_i\big([P^T x_i,\ P^T x_1]\big), \qquad
          x_{i+1} = \arg\min_x \|A x - k\|_2^2 + \lambda_i \|x - z_i\|_2^2,

where :math:`P^T` takes the centre crop (2 channels, real and imaginary), :math:`P` writes a
crop back into the full grid (outside the crop :math:`z_i = x_i`), the input
:math:`P^T x_1` is concatenated when ``concat_input`` and the DC step is
:func:`~convexrecon.mri.consistency.data_consistency` (CG on
:math:`A^H A + \lambda_i I`). Further block inputs and an optional CS start are a
:class:`~convexrecon.stack.stage_inputs.StageInputs`: a constant channel (``bias``), wavelet-shrunk
copies of the estimate (``shrink``: :math:`P^T W^H \mathrm{soft}_{t\rho}(W x_i)` with :math:`W` the
Daubechies-4 transform, CS's sparsifying prior), and a **CS start** (``cs_iterations`` > 0: the chain
starts from FISTA steps of L1-wavelet CS, :func:`~convexrecon.mri.sparsity.l1_wavelet_fista`, and
``cs_inputs`` adds CS images at further weights, computed once per slice like :math:`x_1`). All are
scaled by :math:`\rho = \max|P^T x_1|` of the slice, so the network stays positively homogeneous.
This is the unrolled proximal-gradient / MoDL structure (Aggarwal et al., IEEE TMI 2019).

The fallback: ``sense_input`` / ``sense_start`` give the blocks (or the chain's start) the unregularised
SENSE-CG image, and ``cs_relative="noise"`` weighs the CS images by the slice's estimated noise level
(:class:`~convexrecon.stack.stage_inputs.StageInputs`). A stage with λ = ∞ has no DC step
(:math:`x_{i+1} = z_i`, the limit of the DC step as λ → ∞); with a zero block it is the **identity stage**
(:func:`identity_stage`), so a network of identity stages returns its start exactly.

The trainers live beside it: :mod:`~convexrecon.stack.unrolled_train` (each stage's block by its
convex program, GLEAM-style greedy training) and :mod:`~convexrecon.stack.unrolled_baselines` (Adam).
:class:`EstimateChain` carries the estimates of many slices through frozen stages for both.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from convexrecon.block.module import ConvexBlock
from convexrecon.metrics import score_slices
from convexrecon.mri import (DEFAULT_WAVE, MeasuredData, MeasuredGroups, channels_to_complex, complex_to_channels,
                             crop_center, data_consistency, embed_crop, estimate_noise, l1_wavelet_fista,
                             measured_groups, sense_adjoint, sense_cg_batch, wavelet_shrink)
from convexrecon.mri.sparsity import CYCLE_SHIFTS
from convexrecon.stack.modelfiles import UNROLLED, write_model
from convexrecon.stack.stage_inputs import SENSE_ITERATIONS, StageInputs

ARCHITECTURE = UNROLLED


def block_spec(block: ConvexBlock) -> dict[str, Any]:
    """Shape description of a block, enough to rebuild it before loading its state."""
    return {"in_channels": block.first.in_channels, "width": block.width, "kernel_size": block.kernel_size,
            "activation": block.activation, "num_gates": int(block.gates.shape[0]), "beta": block.beta,
            "out_channels": block.second.out_channels}


def block_from_spec(spec: dict[str, Any]) -> ConvexBlock:
    """An untrained :class:`ConvexBlock` of the shape ``spec`` (:func:`block_spec`)."""
    c, m, k = int(spec["in_channels"]), int(spec["width"]), int(spec["kernel_size"])
    first = nn.Conv2d(c, m, k, padding=k // 2, bias=False)
    second = nn.Conv2d(m, int(spec.get("out_channels", 2)), 1, bias=False)
    gates = torch.zeros(int(spec["num_gates"]), c, k, k)
    return ConvexBlock(first, second, gates, torch.zeros(m, dtype=torch.long), spec["activation"],
                       float(spec.get("beta", 0.0)))


def identity_stage(spec: dict[str, Any]) -> "UnrolledStage":
    """The identity stage: a block of the shape ``spec`` (:func:`block_spec`) with every weight zero and no DC
    step (λ = ∞), so the stage returns its input estimate exactly."""
    block = block_from_spec(spec)
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
    return UnrolledStage(block, math.inf)


def relu_block(in_channels: int, width: int, kernel_size: int, seed: int) -> ConvexBlock:
    """A ReLU block ``k×k conv → ReLU → 1×1 conv`` for the Adam baselines: the first layer at PyTorch's default
    init (seeded), the second at zero, so an untrained stage adds nothing and Adam starts from the stage's input
    (the residual-branch zero init of ReZero / Fixup; with PyTorch's default init an untrained stage adds a
    random correction, and the baselines ended below their own start, e.g. below the CS start they refine)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        first = nn.Conv2d(in_channels, width, kernel_size, padding=kernel_size // 2, bias=False)
        second = nn.Conv2d(width, 2, 1, bias=False)
    finally:
        torch.random.set_rng_state(state)
    nn.init.zeros_(second.weight)
    return ConvexBlock(first, second, torch.zeros(1, in_channels, kernel_size, kernel_size),
                       torch.zeros(width, dtype=torch.long), "relu", 0.0)



def stage_channels(concat_input: bool = True, bias: bool = False, shrink: Sequence[float] = (),
                   cs_inputs: Sequence[Any] = (), sense_input: bool = False, residual: bool = False) -> int:
    """Input channels of an unrolled stage's block (:meth:`StageInputs.channels`)."""
    return (2 * (not residual) + 2 * bool(concat_input) + int(bool(bias)) + 2 * len(shrink) + 2 * len(cs_inputs)
            + 2 * int(bool(sense_input)))


class UnrolledStage(nn.Module):
    """One stage: a block on the cropped estimate (and input) and the DC weight ``lam`` (stored as ``log λ``).

    ``limit`` bounds the block's correction pixel by pixel: its complex magnitude is clipped at
    ``limit * max|P^T x_i|`` of the slice (positively homogeneous, so independent of the data's
    scale). :func:`train_unrolled` sets it to twice the largest ratio met on the training slices,
    so it never acts on them (the convex fit and its certificate are untouched); on inputs unlike
    the training data it keeps a stage from adding more than that (``inf``: no bound).
    """

    def __init__(self, block: ConvexBlock, lam: float, learn_lambda: bool = False, limit: float = math.inf) -> None:
        super().__init__()
        if not (isinstance(lam, (int, float)) and lam > 0 and not math.isnan(lam)):
            raise ValueError(f"The 'lam' parameter must be a number > 0 (inf: no DC step). Got {lam!r} instead.")
        if not (isinstance(limit, (int, float)) and limit > 0):
            raise ValueError(f"The 'limit' parameter must be a number > 0 (inf: no bound). Got {limit!r} instead.")
        self.block = block
        self.log_lam = nn.Parameter(torch.tensor(math.log(lam), dtype=torch.float32), requires_grad=learn_lambda)
        self.register_buffer("limit", torch.tensor(float(limit)))

    def correction(self, features: Tensor, h: Tensor) -> Tensor:
        """The block's output on ``features``, clipped at ``limit * max|h|`` per slice (``h`` the cropped estimate)."""
        r = self.block(features)
        if not bool(torch.isfinite(self.limit)):
            return r
        bound = self.limit.to(h.dtype) * h.pow(2).sum(1).sqrt().flatten(1).max(1).values.reshape(-1, 1, 1, 1)
        magnitude = r.pow(2).sum(1, keepdim=True).clamp_min(torch.finfo(r.dtype).tiny).sqrt()  # finite gradient at 0
        return r * torch.clamp(bound / magnitude, max=1.0)

    @property
    def lam(self) -> Tensor:
        return self.log_lam.exp()


class UnrolledNet(nn.Module):
    r"""``K`` stages of ``z_i = x_i + P block_i(...)`` and ``x_{i+1} = DC_{λ_i}(z_i)`` (see the module doc).

    Parameters
    ----------
    stages
        The :class:`UnrolledStage` s in order.
    crop
        Side of the centre crop the blocks see (the training crop).
    concat_input
        Whether a block sees ``[P^T x_i, P^T x_1]`` (4 channels) or ``P^T x_i`` (2).
    cg_iterations
        CG iterations of every DC step.
    config
        JSON-serialisable metadata saved with the model.
    bias
        A further input channel equal to :math:`\rho = \max|P^T x_1|` of the slice (a bias of the first
        layer that scales with the data).
    shrink
        Relative thresholds :math:`t`: for each, the input :math:`P^T W^H \mathrm{soft}_{t\rho}(W x_i)`
        (2 channels, :func:`~convexrecon.mri.sparsity.wavelet_shrink`, Daubechies-4 on the full grid).
    cs_iterations, cs_lambda
        The CS start: the first stage sees ``cs_iterations`` FISTA steps of L1-wavelet CS with weight
        ``cs_lambda`` :math:`\cdot\rho`, started at :math:`x_1` (0: :math:`x_1` itself). ``x1`` as a block
        input stays the zero-filled image.
    cs_inputs
        Further CS images as block inputs of every stage (needs ``cs_iterations``): each item a relative
        weight (Daubechies-4) or a ``(weight, wavelet)`` pair; for each, ``cs_iterations`` FISTA steps of
        L1-wavelet CS with that weight and wavelet (2 channels), computed once per slice with the CS start.
    sense_input, sense_start, cs_relative, residual, cs_shifts, dc_noise, cs_noise
        The SENSE-CG image as a block input / as the start, what the CS weights are relative to, whether
        the block sees the further images minus the estimate instead of the estimate, the wavelet-grid
        shifts of cycle-spun CS images, the noise level at which the DC weights hold (0: fixed weights) and the
        one below which the CS weights shrink with the noise (0: never)
        (:class:`~convexrecon.stack.stage_inputs.StageInputs`).
    stage_inputs
        The eleven settings above as one :class:`~convexrecon.stack.stage_inputs.StageInputs` (replacing them).
        CS at one weight and wavelet over-smooths some regions and leaves aliasing in others; the blocks
        learn where to trust which (docs/design.md §9.1).

    ``forward(kspace, maps, mask)`` takes the measured ``(B, C, H, W)`` k-space (divided by the
    slice scale), full-grid maps and ``(B, H, W)`` masks and returns the cropped estimate
    ``(B, 2, crop, crop)`` at the same (stored) scale.
    """

    needs_measurements = True  # read by convexrecon.recon.reconstruct_slice

    def __init__(self, stages: Sequence[UnrolledStage], crop: int, concat_input: bool = True,
                 cg_iterations: int = 10, config: dict[str, Any] | None = None, *, bias: bool = False,
                 shrink: Sequence[float] = (), cs_iterations: int = 0, cs_lambda: float = 0.0,
                 cs_inputs: Sequence[Any] = (), sense_input: bool = False, sense_start: bool = False,
                 cs_relative: str = "max", residual: bool = False, cs_shifts: int = 1, dc_noise: float = 0.0,
                 cs_noise: float = 0.0, stage_inputs: StageInputs | None = None) -> None:
        super().__init__()
        if stage_inputs is None:
            stage_inputs = StageInputs(bias, shrink, cs_iterations, cs_lambda, cs_inputs, sense_input, sense_start,
                                       cs_relative, residual, cs_shifts, dc_noise, cs_noise)
        self.stage_inputs = stage_inputs
        self.bias, self.shrink = stage_inputs.bias, stage_inputs.shrink
        self.cs_iterations, self.cs_lambda = stage_inputs.cs_iterations, stage_inputs.cs_lambda
        self.cs_inputs = stage_inputs.cs_inputs
        channels = stage_inputs.channels(concat_input)
        if channels == 0:
            raise ValueError("A residual stage needs a further image to compare with the estimate (concat_input, "
                             "bias, shrink, cs_inputs or sense_input). Got none.")
        for i, stage in enumerate(stages):
            if stage.block.first.in_channels != channels:
                raise ValueError(f"Stage {i + 1}'s block must take {channels} input channels (concat_input="
                                 f"{concat_input}, bias={self.bias}, shrink={self.shrink}, "
                                 f"cs_inputs={self.cs_inputs}). Got "
                                 f"{stage.block.first.in_channels} instead.")
        self.stages = nn.ModuleList(stages)
        self.crop = int(crop)
        self.concat_input = bool(concat_input)
        self.cg_iterations = int(cg_iterations)
        self.config: dict[str, Any] = dict(config or {})
        # dtype and device of a network without stages (moved by .to(); not saved): its CS start still runs there
        self.register_buffer("_reference", torch.zeros(()), persistent=False)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def _dtype(self) -> tuple[torch.dtype, torch.device]:
        p = next(self.parameters(), self._reference)
        return p.dtype, p.device

    def start(self, kspace: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
        """``x_1 = A^H k`` on the full grid, complex, in the network's precision and device."""
        dtype, device = self._dtype()
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return sense_adjoint(kspace.to(device, cdtype), maps.to(device, cdtype), mask.to(device, dtype))

    @property
    def in_channels(self) -> int:
        """Input channels of every stage's block."""
        return self.stage_inputs.channels(self.concat_input)

    def options(self) -> dict[str, Any]:
        """The block inputs and CS start, as keyword arguments of this class and of the trainers."""
        return self.stage_inputs.options()

    @torch.no_grad()
    def initial(self, x1: Tensor, kspace: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
        """The images computed once per slice before the first stage, ``(B, StageInputs.images, H, W)`` complex:
        the first stage's estimate (``x1``, the CS start from it, or SENSE-CG with ``sense_start``), then the CS
        image of every ``cs_inputs`` weight, then the SENSE-CG image when ``sense_input``. No parameters, so no
        autograd graph; the images of one wavelet run as one batch of FISTA."""
        inputs = self.stage_inputs
        if not inputs.precomputed:
            return x1.unsqueeze(1)
        real = x1.real.dtype
        k, s, m = kspace.to(x1.device, x1.dtype), maps.to(x1.device, x1.dtype), mask.to(x1.device, real)
        sense = None
        if inputs.sense_input or inputs.sense_start:  # unregularised SENSE-CG: CG on A^H A from zero
            sense = sense_cg_batch(k, s, m, SENSE_ITERATIONS)
        runs = ((self.cs_lambda, DEFAULT_WAVE),) + self.cs_inputs if self.cs_iterations else ()
        out: list[Tensor] = [x1] * max(len(runs), 1)
        if runs:
            rho = crop_center(x1, self.crop).abs().flatten(1).amax(1)
            sigma = estimate_noise(k, m).to(real) if inputs.cs_relative == "noise" or inputs.cs_noise > 0 else None
            scale = sigma if inputs.cs_relative == "noise" else rho
            if inputs.cs_noise > 0:  # a cleaner slice than the training data: every weight times r / r0
                ratio = sigma / rho.clamp_min(torch.finfo(real).tiny)
                scale = scale * (ratio / inputs.cs_noise).clamp(max=1.0)
        first = 1 if inputs.sense_start else 0  # the CS start is not needed when SENSE-CG starts the chain
        for wave in dict.fromkeys(w for _, w in runs[first:]):  # one batched FISTA per wavelet
            index = [i for i, (_, w) in enumerate(runs) if w == wave and i >= first]
            n = len(index)
            images = l1_wavelet_fista(k.repeat(n, 1, 1, 1), s.repeat(n, 1, 1, 1), m.repeat(n, 1, 1), 1.0,
                                      self.cs_iterations, scale=torch.cat([runs[i][0] * scale for i in index]),
                                      start=x1.repeat(n, 1, 1), wave=wave,
                                      shifts=list(CYCLE_SHIFTS[:inputs.cs_shifts]) if inputs.cs_shifts > 1 else None)
            for j, i in enumerate(index):
                out[i] = images[j * len(x1):(j + 1) * len(x1)]
        if inputs.sense_start:
            out[0] = sense
        if inputs.sense_input:
            out.append(sense)
        return torch.stack(out, 1)

    def _initial_of(self, initial: Tensor, x1: Tensor) -> Tensor:
        """A caller's ``initial`` (:meth:`initial`'s layout; ``(B, H, W)`` allowed for one image per slice), checked."""
        init = initial.to(x1.device, x1.dtype)
        if init.ndim == 3:
            init = init.unsqueeze(1)
        n = self.stage_inputs.images
        if init.ndim != 4 or init.shape[0] != x1.shape[0] or init.shape[1] != n \
                or init.shape[-2:] != x1.shape[-2:]:
            raise ValueError(f"The 'initial' parameter must hold ({x1.shape[0]}, {n}, "
                             f"{x1.shape[-2]}, {x1.shape[-1]}) images (UnrolledNet.initial). "
                             f"Got {tuple(initial.shape)} instead.")
        return init

    def features(self, x: Tensor, x1: Tensor) -> Tensor:
        """The block input of a stage: the cropped estimate ``x`` (2 channels), then the cropped ``x1`` when
        ``concat_input``, the constant channel when ``bias``, the shrunk estimates of ``shrink`` and the CS images
        of ``cs_inputs`` and the SENSE-CG image with ``sense_input``. ``x1`` is the zero-filled image ``(B, H, W)``,
        or ``(B, StageInputs.images, H, W)``: the zero-filled image followed by the CS images and SENSE-CG."""
        fixed = x1 if x1.ndim == 4 else x1.unsqueeze(1)
        if fixed.shape[1] != self.stage_inputs.images:
            raise ValueError(f"The 'x1' parameter must hold the zero-filled image, {len(self.cs_inputs)} CS images "
                             f"and {int(self.stage_inputs.sense_input)} SENSE-CG images per slice "
                             f"(cs_inputs={self.cs_inputs}). Got {tuple(x1.shape)} instead.")
        estimate = crop_center(x, self.crop)
        h = complex_to_channels(estimate)
        start = crop_center(fixed[:, 0], self.crop)
        residual = self.stage_inputs.residual
        # with residual, every further image enters as its difference from the estimate (the module doc)
        image = (lambda im: complex_to_channels(im - estimate).to(h.dtype)) if residual else (
            lambda im: complex_to_channels(im).to(h.dtype))
        parts = [] if residual else [h]
        if self.concat_input:
            parts.append(image(start))
        if self.bias or self.shrink:
            rho = start.abs().flatten(1).amax(1)
            if self.bias:
                parts.append(rho.to(h.dtype).reshape(-1, 1, 1, 1).expand(-1, 1, *h.shape[-2:]))
            parts += [image(crop_center(s, self.crop)) for s in wavelet_shrink(x, self.shrink, rho)]
        parts += [image(crop_center(fixed[:, j], self.crop)) for j in range(1, fixed.shape[1])]
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def step(self, stage: UnrolledStage, x: Tensor, x1: Tensor, kspace: Tensor, maps: Tensor, mask: Tensor,
             lam: Any = None, dc: Tensor | None = None) -> Tensor:
        """One stage on full-grid estimates ``x`` (``x1`` as in :meth:`features`); ``lam`` overrides the stage's λ
        (λ = ∞: no DC step, the stage returns ``z``); ``dc``: the slices' :meth:`dc_factors` when the caller has
        them (computed here otherwise)."""
        h = complex_to_channels(crop_center(x, self.crop))
        z = h + stage.correction(self.features(x, x1), h)
        z_full = embed_crop(x, channels_to_complex(z))
        weight = stage.lam if lam is None else lam
        if bool(torch.isinf(torch.as_tensor(weight)).all()):
            return z_full
        dtype = x.dtype
        k, s, m = kspace.to(x.device, dtype), maps.to(x.device, dtype), mask.to(x.device)
        if self.stage_inputs.dc_noise > 0:
            weight = torch.as_tensor(weight, device=x.device) * (self.dc_factors(k, s, m) if dc is None else dc)
        return data_consistency(z_full, k, s, m, weight, iterations=self.cg_iterations)

    @torch.no_grad()
    def dc_factors(self, kspace: Tensor, maps: Tensor, mask: Tensor, zero_filled: Tensor | None = None) -> Tensor:
        r"""Per slice :math:`(r / r_0)^2`, the factor of every stage's DC weight with ``dc_noise`` :math:`= r_0`:
        :math:`r = \hat\sigma / \max|P^T x_1|` (:class:`~convexrecon.stack.stage_inputs.StageInputs`);
        ``zero_filled``: :math:`P^T x_1` on the full grid when the caller has it."""
        ratio = relative_noise(kspace, maps, mask, self.crop, zero_filled)
        return (ratio / self.stage_inputs.dc_noise).pow(2)

    def forward(self, kspace: Tensor, maps: Tensor, mask: Tensor, stages: int | None = None,
                initial: Tensor | None = None) -> Tensor:
        """Cropped output; ``initial`` (full grid) replaces :meth:`initial`'s result, e.g. one computed once."""
        x1 = self.start(kspace, maps, mask)
        init = self.initial(x1, kspace, maps, mask) if initial is None else self._initial_of(initial, x1)
        x, fixed = init[:, 0], torch.cat([x1.unsqueeze(1), init[:, 1:]], 1)
        dc = None
        if self.stage_inputs.dc_noise > 0:  # once per call, not per stage
            dtype = x.dtype
            dc = self.dc_factors(kspace.to(x.device, dtype), maps.to(x.device, dtype), mask.to(x.device), x1)
        for stage in list(self.stages)[: self.num_stages if stages is None else stages]:
            x = self.step(stage, x, fixed, kspace, maps, mask, dc=dc)
        return complex_to_channels(crop_center(x, self.crop))

    @torch.no_grad()
    def predict(self, data: MeasuredData | MeasuredGroups, chunk_size: int = 4, stages: int | None = None,
                initial: Any = None) -> Tensor:
        """Cropped outputs ``(N, 2, crop, crop)`` of all slices of ``data``, chunk by chunk, without autograd;
        ``initial``: the slices' first-stage estimates (:func:`initial_estimates`), computed once by the caller.
        Slices of several k-space grids (:class:`~convexrecon.mri.consistency.MeasuredGroups`) run grid by grid
        and come back in the set's order."""
        if isinstance(data, MeasuredGroups):
            starts = per_group(initial, data)
            return data.scatter([self.predict(g, chunk_size, stages, i) for g, i in zip(data.groups, starts)])
        return torch.cat([self(data.kspace[i:i + chunk_size], data.maps[i:i + chunk_size],
                               data.mask[i:i + chunk_size], stages,
                               None if initial is None else initial[i:i + chunk_size])
                          for i in range(0, len(data), chunk_size)])

    @torch.no_grad()
    def reconstruct_measured(self, kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray,
                             crop: int | None = None, initial: Tensor | None = None) -> Tensor:
        """One slice from masked k-space ``(C, H, W)`` (divided by its scale), full maps and mask: ``(crop, crop)``
        complex64 at that scale (:func:`convexrecon.recon.reconstruct_slice` calls this).

        ``crop`` (default the training crop :attr:`crop`) is the side of the output and of the region the blocks
        see: they are convolutional, so, like the layer-wise CNN, the network runs at any crop up to the k-space
        grid (``ValueError`` beyond it). ``initial``: :meth:`initial` of the slice at that crop, computed once."""
        side = self.crop if crop is None else int(crop)
        height, width = np.shape(mask)[-2:]
        if not 1 <= side <= min(height, width):
            raise ValueError(f"The 'crop' parameter must be an int in [1, {min(height, width)}] (the k-space grid "
                             f"{height}x{width}). Got {crop!r} instead.")
        with self.at_crop(side):
            out = self(torch.as_tensor(np.asarray(kspace, dtype=np.complex64))[None],
                       torch.as_tensor(np.asarray(maps, dtype=np.complex64))[None],
                       torch.as_tensor(np.asarray(mask, dtype=np.float32))[None], initial=initial)
        return channels_to_complex(out[0].float().cpu())

    @contextlib.contextmanager
    def at_crop(self, crop: int) -> Iterator["UnrolledNet"]:
        """The network at another output crop for the duration of a ``with`` block (the trained one after it):
        its CS weights and DC factors are relative to the maximum of the zero-filled image in that crop."""
        trained, self.crop = self.crop, int(crop)
        try:
            yield self
        finally:
            self.crop = trained

    def spec(self) -> dict[str, Any]:
        return {"kind": ARCHITECTURE, "crop": self.crop, "concat_input": self.concat_input,
                "cg_iterations": self.cg_iterations, "bias": self.bias, "shrink": list(self.shrink),
                "cs_iterations": self.cs_iterations, "cs_lambda": self.cs_lambda,
                "cs_inputs": [list(c) for c in self.cs_inputs],
                **{k: v for k, v in self.stage_inputs.settings().items()
                   if k in ("sense_input", "sense_start", "cs_relative", "residual", "cs_shifts", "dc_noise",
                            "cs_noise")},
                "stages": [{"block": block_spec(s.block), "lam": float(s.lam.detach()), "limit": float(s.limit)}
                           for s in self.stages]}

    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt`` and ``config.json`` atomically (:func:`convexrecon.stack.modelfiles.write_model`),
        with ``architecture.kind = "unrolled"``."""
        return write_model(self, directory)


@torch.no_grad()
def relative_noise(kspace: Tensor, maps: Tensor, mask: Tensor, crop: int, zero_filled: Tensor | None = None) -> Tensor:
    r"""Per slice :math:`\hat\sigma / \max|P^T x_1|`: the noise level estimated from the slice's outer k-space
    (:func:`~convexrecon.mri.noise.estimate_noise`) over the largest magnitude of its zero-filled image in the
    central ``crop`` window. ``(B, C, H, W)`` k-space and maps, ``(B, H, W)`` masks (``zero_filled``: the
    ``(B, H, W)`` full-grid :math:`P^T x_1` when already computed); ``(B,)`` real."""
    real = kspace.real.dtype
    x1 = sense_adjoint(kspace, maps, mask.to(real)) if zero_filled is None else zero_filled
    rho = crop_center(x1, crop).abs().flatten(1).amax(1).to(real)
    return estimate_noise(kspace, mask).to(real) / rho.clamp_min(torch.finfo(real).tiny)


def dc_reference(data: MeasuredData | MeasuredGroups) -> float:
    """The median of :func:`relative_noise` over the slices of ``data``: ``StageInputs.dc_noise`` for a network
    trained on them, so that its DC weights hold at the training data's noise level."""
    ratios = [relative_noise(g.kspace, g.maps, g.mask, g.crop) for g in measured_groups(data).groups]
    return float(torch.median(torch.cat(ratios)))


def per_group(initial: Any, data: MeasuredData | MeasuredGroups) -> list[Tensor | None]:
    """A caller's precomputed start images (:func:`initial_estimates`) of ``data``, one entry per group of
    :func:`~convexrecon.mri.consistency.measured_groups` (None: none given)."""
    groups = measured_groups(data).groups
    if initial is None:
        return [None] * len(groups)
    parts = [initial] if isinstance(initial, Tensor) else list(initial)
    if len(parts) != len(groups):
        raise ValueError(f"The 'initial' parameter must hold the start images of each of the {len(groups)} k-space "
                         f"grids of the data (a tensor for one grid, a sequence for several). Got "
                         f"{len(parts)} instead.")
    return parts


def unrolled_from_spec(spec: dict[str, Any], config: dict[str, Any] | None = None) -> UnrolledNet:
    """An untrained :class:`UnrolledNet` of the architecture ``spec`` (:meth:`UnrolledNet.spec`)."""
    if spec.get("kind") != ARCHITECTURE:
        raise ValueError(f"The architecture 'kind' must be {ARCHITECTURE!r}. Got {spec.get('kind')!r} instead.")
    stages = [UnrolledStage(block_from_spec(s["block"]), float(s["lam"]), limit=float(s.get("limit", math.inf)))
              for s in spec["stages"]]
    return UnrolledNet(stages, int(spec["crop"]), bool(spec["concat_input"]), int(spec["cg_iterations"]), config,
                       bias=bool(spec.get("bias", False)), shrink=spec.get("shrink", ()),
                       cs_iterations=int(spec.get("cs_iterations", 0)), cs_lambda=float(spec.get("cs_lambda", 0.0)),
                       cs_inputs=spec.get("cs_inputs", ()), sense_input=bool(spec.get("sense_input", False)),
                       sense_start=bool(spec.get("sense_start", False)),
                       cs_relative=str(spec.get("cs_relative", "max")), residual=bool(spec.get("residual", False)),
                       cs_shifts=int(spec.get("cs_shifts", 1)), dc_noise=float(spec.get("dc_noise", 0.0)),
                       cs_noise=float(spec.get("cs_noise", 0.0)))


def unrolled_plain(num_stages: int, width: int, kernel_size: int, lambdas: Sequence[float], crop: int, *,
                   concat_input: bool = True, cg_iterations: int = 10, seed: int = 0, learn_lambda: bool = True,
                   config: dict[str, Any] | None = None, bias: bool = False, shrink: Sequence[float] = (),
                   cs_iterations: int = 0, cs_lambda: float = 0.0, cs_inputs: Sequence[Any] = (),
                   sense_input: bool = False, sense_start: bool = False, cs_relative: str = "max",
                   residual: bool = False, cs_shifts: int = 1, dc_noise: float = 0.0,
                   cs_noise: float = 0.0) -> UnrolledNet:
    """The unrolled architecture with ReLU blocks of ``width`` channels (:func:`relu_block`: first layer at
    PyTorch's default init, seeded ``seed + i`` per stage, second layer zero) and λ_i = ``lambdas[i]``: the start
    of the Adam baselines. ``bias``, ``shrink``,
    ``cs_iterations``, ``cs_lambda``, ``cs_inputs``, ``sense_input``, ``sense_start``, ``cs_relative``,
    ``residual``, ``cs_shifts``, ``dc_noise`` and ``cs_noise`` as in :class:`UnrolledNet`."""
    if len(lambdas) != num_stages:
        raise ValueError(f"The 'lambdas' parameter must hold one λ per stage ({num_stages}). Got {len(lambdas)}.")
    inputs = StageInputs(bias, shrink, cs_iterations, cs_lambda, cs_inputs, sense_input, sense_start, cs_relative,
                         residual, cs_shifts, dc_noise, cs_noise)
    c = inputs.channels(concat_input)
    stages = [UnrolledStage(relu_block(c, width, kernel_size, seed + i), float(lambdas[i]), learn_lambda)
              for i in range(num_stages)]
    return UnrolledNet(stages, crop, concat_input, cg_iterations, config, stage_inputs=inputs)


def unrolled_metrics(net: UnrolledNet, targets: Tensor, scales: Tensor, volumes: Sequence[str], data: MeasuredData,
                     chunk_size: int = 4, stages: int | None = None, initial: Tensor | None = None) -> dict[str, float]:
    """Slice-wise PSNR/SSIM (mean ± std, physical scale) of ``net`` on validation slices
    (:func:`convexrecon.metrics.score_slices`, the layer-wise CNN trainers' convention); ``initial`` as in
    :meth:`UnrolledNet.predict`."""
    summary = score_slices(targets, net.predict(data, chunk_size, stages, initial), scales, volumes)
    return {"psnr": summary["psnr"].mean, "psnr_std": summary["psnr"].std,
            "ssim": summary["ssim"].mean, "ssim_std": summary["ssim"].std}


class EstimateChain:
    """Full-grid estimates of all training slices through a sequence of frozen stages."""

    def __init__(self, net: UnrolledNet, data: MeasuredData, chunk_size: int,
                 start: tuple[Tensor, Tensor] | None = None, initial: Tensor | None = None) -> None:
        """``start``: ``(x1, x)`` of another chain of the same net settings, not computed again; ``initial``:
        :meth:`UnrolledNet.initial` of all slices, computed by the caller (:func:`initial_estimates`)."""
        self.net, self.data, self.chunk = net, data, chunk_size
        self._dc: Tensor | None = None  # the slices' DC factors (dc_noise > 0), computed on first use
        if start is not None:
            self.x1, self.x = start
            return
        with torch.no_grad():
            x1 = torch.cat([net.start(*self._part(j)) for j in range(0, len(data), chunk_size)])
            init = torch.cat([net.initial(x1[j:j + chunk_size], *self._part(j))
                              for j in range(0, len(data), chunk_size)]) if initial is None \
                else net._initial_of(initial, x1)
        # x1: the zero-filled images, the CS images of cs_inputs and SENSE-CG, (N, StageInputs.images, H, W)
        self.x, self.x1 = init[:, 0], torch.cat([x1.unsqueeze(1), init[:, 1:]], 1)

    def _part(self, j: int, index: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        d = self.data if index is None else self.data.subset(index)
        return d.kspace[j:j + self.chunk], d.maps[j:j + self.chunk], d.mask[j:j + self.chunk]

    @torch.no_grad()
    def features(self) -> Tensor:
        return self.net.features(self.x, self.x1)

    @torch.no_grad()
    def advanced(self, stage: UnrolledStage, index: Tensor | None = None, lam: float | None = None) -> Tensor:
        """The next estimates of the slices ``index`` (all when None) through ``stage`` (λ overridable)."""
        x = self.x if index is None else self.x[index]
        x1 = self.x1 if index is None else self.x1[index]
        dc = self.dc_factors()
        dc = dc if dc is None or index is None else dc[index]
        outs = []
        for j in range(0, len(x), self.chunk):
            outs.append(self.net.step(stage, x[j:j + self.chunk], x1[j:j + self.chunk], *self._part(j, index),
                                      lam=lam, dc=None if dc is None else dc[j:j + self.chunk]))
        return torch.cat(outs)

    @torch.no_grad()
    def dc_factors(self) -> Tensor | None:
        """:meth:`UnrolledNet.dc_factors` of every slice, once per chain (None without ``dc_noise``): every
        candidate stage and λ of the selection reuses them."""
        if self.net.stage_inputs.dc_noise <= 0:
            return None
        if self._dc is None:
            device, dtype, parts = self.x.device, self.x.dtype, []
            for j in range(0, len(self.x), self.chunk):
                k, s, m = self._part(j)
                parts.append(self.net.dc_factors(k.to(device, dtype), s.to(device, dtype), m.to(device),
                                                 self.x1[j:j + self.chunk, 0]))
            self._dc = torch.cat(parts)
        return self._dc

    def advance(self, stage: UnrolledStage) -> None:
        self.x = self.advanced(stage)


def initial_estimates(net: UnrolledNet, data: MeasuredData | MeasuredGroups, chunk_size: int = 4) -> Any:
    """:meth:`UnrolledNet.initial` of all slices of ``data`` when ``net`` has a CS start or SENSE-CG images (None
    otherwise: the zero-filled start costs nothing), for scoring a network repeatedly without rerunning CS. For
    slices of several k-space grids, a tuple: one tensor per group of ``data``."""
    if not net.stage_inputs.precomputed:
        return None
    if isinstance(data, MeasuredGroups):
        return tuple(initial_estimates(net, g, chunk_size) for g in data.groups)
    chain = EstimateChain(net, data, chunk_size)
    return torch.cat([chain.x.unsqueeze(1), chain.x1[:, 1:]], 1)


def moved_initial(initial: Any, like: Tensor, name: str = "initial") -> Any:
    """A caller's precomputed :meth:`UnrolledNet.initial` (parameter ``name``) on the device of ``like``; a tuple
    of them (one per k-space grid) element by element."""
    if initial is None:
        return None
    if isinstance(initial, (tuple, list)):
        return tuple(moved_initial(i, like, name) for i in initial)
    if not isinstance(initial, Tensor) or not initial.is_complex():
        got = f"{initial.dtype} {tuple(initial.shape)}" if isinstance(initial, Tensor) else type(initial).__name__
        raise ValueError(f"The '{name}' parameter must be complex images from initial_estimates. Got {got} instead.")
    return initial.to(like.device)


class ChainSet:
    """:class:`EstimateChain` s of the slices of one set, one per k-space grid, seen through centre crops.

    The stage trainer works with the crops only (the blocks' features, the cropped estimates, the held-out errors), so
    slices of several grids (:class:`~convexrecon.mri.consistency.MeasuredGroups`) train as one set: each grid keeps
    its own full-grid estimates and DC steps, and the crops come back in the set's slice order."""

    def __init__(self, net: UnrolledNet, data: MeasuredData | MeasuredGroups, chunk_size: int,
                 initial: Any = None, twin: "ChainSet | None" = None) -> None:
        """``initial`` as in :func:`moved_initial`; ``twin``: a chain set of the same data and net settings whose
        start images this one shares (not computed again)."""
        self.net, self.data = net, measured_groups(data)
        if twin is not None:
            self.chains = [EstimateChain(net, g, chunk_size, start=(c.x1, c.x))
                           for g, c in zip(self.data.groups, twin.chains)]
        else:
            self.chains = [EstimateChain(net, g, chunk_size, initial=i)
                           for g, i in zip(self.data.groups, per_group(initial, data))]

    def features(self) -> Tensor:
        """The block features of every slice, ``(N, C, crop, crop)``."""
        return self.data.scatter([c.features() for c in self.chains])

    def cropped(self, index: Tensor | None = None) -> Tensor:
        """The centre crops of the current estimates, ``(N, crop, crop)`` complex (the slices ``index`` when given,
        in that order)."""
        if index is None:
            return self.data.scatter([crop_center(c.x, self.data.crop) for c in self.chains])
        return self._gather(index, lambda c, local: crop_center(c.x[local], self.data.crop))

    def cropped_advanced(self, stage: UnrolledStage, index: Tensor, lam: float | None = None) -> Tensor:
        """The crops of the next estimates of the slices ``index`` (in that order) through ``stage``
        (:meth:`EstimateChain.advanced`)."""
        return self._gather(index, lambda c, local: crop_center(c.advanced(stage, local, lam=lam), self.data.crop))

    def advance(self, stage: UnrolledStage) -> None:
        for c in self.chains:
            c.advance(stage)

    def _gather(self, index: Tensor, part: Any) -> Tensor:
        if len(index) == 0:
            raise ValueError("The 'index' parameter must name at least one slice. Got none.")
        pieces = [(k, part(c, local)) for c, (k, local) in zip(self.chains, self.data.split(index)) if len(k)]
        out = pieces[0][1].new_empty((len(index), *pieces[0][1].shape[1:]))
        for k, piece in pieces:
            out[k.to(out.device)] = piece
        return out
