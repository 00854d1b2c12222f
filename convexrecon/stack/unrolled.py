r"""A convex, layer-wise trained **unrolled** network with SENSE data consistency (``docs/design.md`` §9.1).

Stage ``i = 1..K`` of :class:`UnrolledNet` maps the current full-grid estimate :math:`x_i`
(:math:`x_1 = A^H k`, the zero-filled SENSE image) to

.. math:: z_i = x_i + P\,\mathrm{block}_i\big([P^T x_i,\ P^T x_1]\big), \qquad
          x_{i+1} = \arg\min_x \|A x - k\|_2^2 + \lambda_i \|x - z_i\|_2^2,

where :math:`P^T` takes the centre crop (2 channels, real and imaginary), :math:`P` writes a
crop back into the full grid (outside the crop :math:`z_i = x_i`), the input
:math:`P^T x_1` is concatenated when ``concat_input`` and the DC step is
:func:`~convexrecon.mri.consistency.data_consistency` (CG on
:math:`A^H A + \lambda_i I`). Optional further block inputs (``docs/design.md`` §9.1): a constant
channel (``bias``, the first layer's bias) and wavelet-shrunk copies of the estimate
(``shrink``: :math:`P^T W^H \mathrm{soft}_{t\rho}(W x_i)` with :math:`W` the Daubechies-4
transform, CS's sparsifying prior, for each relative threshold :math:`t`). And an optional **CS
start** (``cs_iterations`` > 0): the chain then starts from ``cs_iterations`` FISTA steps of L1-wavelet
CS with weight ``cs_lambda`` :math:`\cdot\rho` (:func:`~convexrecon.mri.sparsity.l1_wavelet_fista`)
instead of :math:`x_1`, and the stages learn corrections of CS; ``cs_inputs`` adds the CS images at
further weights as block inputs (computed once per slice, like :math:`x_1`). All are scaled by
:math:`\rho = \max|P^T x_1|` of the slice, so the network stays positively homogeneous. This is the unrolled proximal-gradient / MoDL structure
(Aggarwal et al., IEEE TMI 2019) trained greedily, stage by stage, as in GLEAM (Ozturkler et
al., 2022), with each stage's block the certified convex two-layer block of
:func:`~convexrecon.block.fit.fit_layer`.

**Training** (:func:`train_unrolled`). Given the frozen stages ``1..i-1``, stage ``i`` solves
the convex program of a block on (features of :math:`x_i`, residual :math:`y - P^T x_i`),

.. math:: \min\ \tfrac12\|\mathrm{block}_i(h_i) - (y - P^T x_i)\|^2
          + \tfrac{\beta_i}{2}(\|W_{1}\|^2 + \|W_{2}\|^2),

certified by its duality gap (``block.report``). The DC step is not part of the convex
program: :math:`\lambda_i` (and :math:`\beta_i` when ``beta_ratios`` are given) are chosen
on held-out training volumes by the squared error *after* the DC step, then the block is
solved again on all training slices. Held-out scores use a *selection chain* of stages
solved without the held-out slices, as :func:`~convexrecon.stack.layerwise.train_layerwise`
does for β.

**Baselines** on the same architecture: :func:`train_unrolled_end_to_end` (all blocks and,
by default, the :math:`\lambda_i` by Adam through the differentiable CG) and
:func:`train_unrolled_layerwise_adam` (each stage's block by Adam on the same objective,
then frozen, with fixed :math:`\lambda_i`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pywt
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexrecon.block.fit import fit_layer, fit_layer_path
from convexrecon.block.precision import tf32_mode
from convexrecon.block.module import ConvexBlock
from convexrecon.checks import bool_flag, check_images, device_of, training_device
from convexrecon.mri.consistency import (MeasuredData, crop_center, data_consistency, embed_crop,
                                          sense_adjoint)
from convexrecon.mri.sense import channels_to_complex, complex_to_channels
from convexrecon.mri.sparsity import DEFAULT_WAVE, l1_wavelet_fista, wavelet_shrink
from convexrecon.errors import CheckpointError
from convexrecon.metrics import score_slices
from convexrecon.stack.baselines import _checkpoint_file, adam_train
from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, run_payload, save_checkpoint
from convexrecon.stack.layerwise import BlockSettings, block_beta, block_record, warn_choice_at_edge

ARCHITECTURE = "unrolled"
DEFAULT_LAMBDAS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


# ---- the network ----------------------------------------------------------------------------------

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
                   cs_inputs: Sequence[Any] = ()) -> int:
    """Input channels of an unrolled stage's block: the estimate (2), the zero-filled image (2), a constant
    channel (1), every shrunk estimate (2 each) and every further CS image (2 each)."""
    return 2 + 2 * bool(concat_input) + int(bool(bias)) + 2 * len(shrink) + 2 * len(cs_inputs)


def architecture_options(bias: Any = False, shrink: Any = (), cs_iterations: Any = 0,
                         cs_lambda: Any = 0.0, cs_inputs: Any = ()) -> dict[str, Any]:
    """The checked keyword arguments of :class:`UnrolledNet` beyond its stages (block inputs and CS start)."""
    if not (isinstance(cs_iterations, int) and not isinstance(cs_iterations, bool) and cs_iterations >= 0):
        raise ValueError(f"The 'cs_iterations' parameter must be an int >= 0 (0: start from the zero-filled "
                         f"image). Got {cs_iterations!r} instead.")
    if not (isinstance(cs_lambda, (int, float)) and not isinstance(cs_lambda, bool) and math.isfinite(cs_lambda)
            and cs_lambda >= 0 and (cs_lambda > 0 or cs_iterations == 0)):
        raise ValueError(f"The 'cs_lambda' parameter must be a finite number > 0 when 'cs_iterations' > 0 "
                         f"(relative L1-wavelet weight). Got {cs_lambda!r} instead.")
    inputs = _cs_inputs(cs_inputs)
    if inputs and not cs_iterations:
        raise ValueError(f"The 'cs_inputs' parameter needs 'cs_iterations' > 0 (the FISTA steps of every CS image). "
                         f"Got cs_inputs={inputs!r} with cs_iterations=0.")
    return {"bias": bool_flag("bias", bias), "shrink": _thresholds(shrink), "cs_iterations": cs_iterations,
            "cs_lambda": float(cs_lambda), "cs_inputs": inputs}


def _cs_inputs(value: Any) -> tuple[tuple[float, str], ...]:
    """``cs_inputs`` as ``((λ, wavelet), …)``: each item a relative weight (Daubechies-4) or a ``(weight, wavelet)``
    pair with a discrete PyWavelets name."""
    error = ValueError(f"The 'cs_inputs' parameter must be a sequence of relative L1 weights > 0, each a number "
                       f"(Daubechies-4) or a (weight, wavelet) pair with a discrete PyWavelets name such as 'haar' or "
                       f"'sym8' (empty: none). Got {value!r} instead.")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise error
    out = []
    for item in value:
        lam, wave = (item, DEFAULT_WAVE) if isinstance(item, (int, float)) else tuple(item) if (
            hasattr(item, "__len__") and not isinstance(item, (str, bytes)) and len(item) == 2) else (None, None)
        if (not isinstance(lam, (int, float)) or isinstance(lam, bool) or not math.isfinite(lam) or lam <= 0
                or wave not in pywt.wavelist(kind="discrete")):
            raise error
        out.append((float(lam), str(wave)))
    return tuple(out)


def _thresholds(shrink: Any) -> tuple[float, ...]:
    """``shrink`` as a tuple of finite relative thresholds > 0."""
    error = ValueError(f"The 'shrink' parameter must be a sequence of finite relative thresholds > 0 (empty: none). "
                       f"Got {shrink!r} instead.")
    if isinstance(shrink, (str, bytes)):
        raise error
    try:
        values = tuple(float(t) for t in shrink)
    except (TypeError, ValueError):
        raise error from None
    if not all(t > 0 and math.isfinite(t) for t in values):
        raise error
    return values


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
        if not (isinstance(lam, (int, float)) and lam > 0 and math.isfinite(lam)):
            raise ValueError(f"The 'lam' parameter must be a finite number > 0. Got {lam!r} instead.")
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
                 cs_inputs: Sequence[Any] = ()) -> None:
        super().__init__()
        options = architecture_options(bias, shrink, cs_iterations, cs_lambda, cs_inputs)
        self.bias, self.shrink = options["bias"], options["shrink"]
        self.cs_iterations, self.cs_lambda = options["cs_iterations"], options["cs_lambda"]
        self.cs_inputs = options["cs_inputs"]
        channels = stage_channels(concat_input, self.bias, self.shrink, self.cs_inputs)
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
        return stage_channels(self.concat_input, self.bias, self.shrink, self.cs_inputs)

    def options(self) -> dict[str, Any]:
        """The block inputs and CS start, as keyword arguments of this class and of the trainers."""
        return {"bias": self.bias, "shrink": self.shrink, "cs_iterations": self.cs_iterations,
                "cs_lambda": self.cs_lambda, "cs_inputs": self.cs_inputs}

    @torch.no_grad()
    def initial(self, x1: Tensor, kspace: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
        """The images computed once per slice before the first stage, ``(B, 1 + len(cs_inputs), H, W)`` complex:
        the first stage's estimate (``x1``, or the CS start from it), then the CS image of every ``cs_inputs``
        weight. No parameters, so no autograd graph; the images of one wavelet run as one batch of FISTA."""
        if not self.cs_iterations:
            return x1.unsqueeze(1)
        real = x1.real.dtype
        rho = crop_center(x1, self.crop).abs().flatten(1).amax(1)
        runs = ((self.cs_lambda, DEFAULT_WAVE),) + self.cs_inputs
        k, s, m = kspace.to(x1.device, x1.dtype), maps.to(x1.device, x1.dtype), mask.to(x1.device, real)
        out: list[Tensor] = [x1] * len(runs)
        for wave in dict.fromkeys(w for _, w in runs):  # one batched FISTA per wavelet
            index = [i for i, (_, w) in enumerate(runs) if w == wave]
            n = len(index)
            images = l1_wavelet_fista(k.repeat(n, 1, 1, 1), s.repeat(n, 1, 1, 1), m.repeat(n, 1, 1), 1.0,
                                      self.cs_iterations, scale=torch.cat([runs[i][0] * rho for i in index]),
                                      start=x1.repeat(n, 1, 1), wave=wave)
            for j, i in enumerate(index):
                out[i] = images[j * len(x1):(j + 1) * len(x1)]
        return torch.stack(out, 1)

    def _initial_of(self, initial: Tensor, x1: Tensor) -> Tensor:
        """A caller's ``initial`` (:meth:`initial`'s layout; ``(B, H, W)`` allowed without ``cs_inputs``), checked."""
        init = initial.to(x1.device, x1.dtype)
        if init.ndim == 3:
            init = init.unsqueeze(1)
        if init.ndim != 4 or init.shape[0] != x1.shape[0] or init.shape[1] != 1 + len(self.cs_inputs) \
                or init.shape[-2:] != x1.shape[-2:]:
            raise ValueError(f"The 'initial' parameter must hold ({x1.shape[0]}, {1 + len(self.cs_inputs)}, "
                             f"{x1.shape[-2]}, {x1.shape[-1]}) images (UnrolledNet.initial). "
                             f"Got {tuple(initial.shape)} instead.")
        return init

    def features(self, x: Tensor, x1: Tensor) -> Tensor:
        """The block input of a stage: the cropped estimate ``x`` (2 channels), then the cropped ``x1`` when
        ``concat_input``, the constant channel when ``bias``, the shrunk estimates of ``shrink`` and the CS images
        of ``cs_inputs``. ``x1`` is the zero-filled image ``(B, H, W)``, or ``(B, 1 + len(cs_inputs), H, W)``:
        the zero-filled image followed by the CS images."""
        fixed = x1 if x1.ndim == 4 else x1.unsqueeze(1)
        if fixed.shape[1] != 1 + len(self.cs_inputs):
            raise ValueError(f"The 'x1' parameter must hold the zero-filled image and {len(self.cs_inputs)} CS "
                             f"images per slice (cs_inputs={self.cs_inputs}). Got {tuple(x1.shape)} instead.")
        h = complex_to_channels(crop_center(x, self.crop))
        start = crop_center(fixed[:, 0], self.crop)
        parts = [h, complex_to_channels(start)] if self.concat_input else [h]
        if self.bias or self.shrink:
            rho = start.abs().flatten(1).amax(1)
            if self.bias:
                parts.append(rho.to(h.dtype).reshape(-1, 1, 1, 1).expand(-1, 1, *h.shape[-2:]))
            parts += [complex_to_channels(crop_center(s, self.crop)).to(h.dtype)
                      for s in wavelet_shrink(x, self.shrink, rho)]
        parts += [complex_to_channels(crop_center(fixed[:, j], self.crop)).to(h.dtype)
                  for j in range(1, fixed.shape[1])]
        return torch.cat(parts, dim=1) if len(parts) > 1 else h

    def step(self, stage: UnrolledStage, x: Tensor, x1: Tensor, kspace: Tensor, maps: Tensor, mask: Tensor,
             lam: Any = None) -> Tensor:
        """One stage on full-grid estimates ``x`` (``x1`` as in :meth:`features`); ``lam`` overrides the stage's λ."""
        h = complex_to_channels(crop_center(x, self.crop))
        z = h + stage.correction(self.features(x, x1), h)
        z_full = embed_crop(x, channels_to_complex(z))
        dtype = x.dtype
        return data_consistency(z_full, kspace.to(x.device, dtype), maps.to(x.device, dtype), mask.to(x.device),
                                stage.lam if lam is None else lam, iterations=self.cg_iterations)

    def forward(self, kspace: Tensor, maps: Tensor, mask: Tensor, stages: int | None = None,
                initial: Tensor | None = None) -> Tensor:
        """Cropped output; ``initial`` (full grid) replaces :meth:`initial`'s result, e.g. one computed once."""
        x1 = self.start(kspace, maps, mask)
        init = self.initial(x1, kspace, maps, mask) if initial is None else self._initial_of(initial, x1)
        x, fixed = init[:, 0], torch.cat([x1.unsqueeze(1), init[:, 1:]], 1)
        for stage in list(self.stages)[: self.num_stages if stages is None else stages]:
            x = self.step(stage, x, fixed, kspace, maps, mask)
        return complex_to_channels(crop_center(x, self.crop))

    @torch.no_grad()
    def predict(self, data: MeasuredData, chunk_size: int = 4, stages: int | None = None,
                initial: Tensor | None = None) -> Tensor:
        """Cropped outputs ``(N, 2, crop, crop)`` of all slices of ``data``, chunk by chunk, without autograd;
        ``initial``: the slices' first-stage estimates (:func:`initial_estimates`), computed once by the caller."""
        return torch.cat([self(data.kspace[i:i + chunk_size], data.maps[i:i + chunk_size],
                               data.mask[i:i + chunk_size], stages,
                               None if initial is None else initial[i:i + chunk_size])
                          for i in range(0, len(data), chunk_size)])

    @torch.no_grad()
    def reconstruct_measured(self, kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray) -> Tensor:
        """One slice from masked k-space ``(C, H, W)`` (divided by its scale), full maps and mask: ``(crop, crop)``
        complex64 at that scale (:func:`convexrecon.recon.reconstruct_slice` calls this)."""
        out = self(torch.as_tensor(np.asarray(kspace, dtype=np.complex64))[None],
                   torch.as_tensor(np.asarray(maps, dtype=np.complex64))[None],
                   torch.as_tensor(np.asarray(mask, dtype=np.float32))[None])
        return channels_to_complex(out[0].float().cpu())

    def spec(self) -> dict[str, Any]:
        return {"kind": ARCHITECTURE, "crop": self.crop, "concat_input": self.concat_input,
                "cg_iterations": self.cg_iterations, "bias": self.bias, "shrink": list(self.shrink),
                "cs_iterations": self.cs_iterations, "cs_lambda": self.cs_lambda,
                "cs_inputs": [list(c) for c in self.cs_inputs],
                "stages": [{"block": block_spec(s.block), "lam": float(s.lam.detach()), "limit": float(s.limit)}
                           for s in self.stages]}

    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt`` and ``config.json`` atomically, the :mod:`convexrecon.stack.persist` layout, with
        ``architecture.kind = "unrolled"``."""
        from convexrecon.stack.persist import save_network

        return save_network(self, directory)  # type: ignore[arg-type]


def unrolled_from_spec(spec: dict[str, Any], config: dict[str, Any] | None = None) -> UnrolledNet:
    """An untrained :class:`UnrolledNet` of the architecture ``spec`` (:meth:`UnrolledNet.spec`)."""
    if spec.get("kind") != ARCHITECTURE:
        raise ValueError(f"The architecture 'kind' must be {ARCHITECTURE!r}. Got {spec.get('kind')!r} instead.")
    stages = [UnrolledStage(block_from_spec(s["block"]), float(s["lam"]), limit=float(s.get("limit", math.inf)))
              for s in spec["stages"]]
    return UnrolledNet(stages, int(spec["crop"]), bool(spec["concat_input"]), int(spec["cg_iterations"]), config,
                       bias=bool(spec.get("bias", False)), shrink=spec.get("shrink", ()),
                       cs_iterations=int(spec.get("cs_iterations", 0)), cs_lambda=float(spec.get("cs_lambda", 0.0)),
                       cs_inputs=spec.get("cs_inputs", ()))


def unrolled_plain(num_stages: int, width: int, kernel_size: int, lambdas: Sequence[float], crop: int, *,
                   concat_input: bool = True, cg_iterations: int = 10, seed: int = 0, learn_lambda: bool = True,
                   config: dict[str, Any] | None = None, bias: bool = False, shrink: Sequence[float] = (),
                   cs_iterations: int = 0, cs_lambda: float = 0.0, cs_inputs: Sequence[Any] = ()) -> UnrolledNet:
    """The unrolled architecture with ReLU blocks of ``width`` channels (:func:`relu_block`: first layer at
    PyTorch's default init, seeded ``seed + i`` per stage, second layer zero) and λ_i = ``lambdas[i]``: the start
    of the Adam baselines. ``bias``, ``shrink``,
    ``cs_iterations``, ``cs_lambda`` and ``cs_inputs`` as in :class:`UnrolledNet`."""
    if len(lambdas) != num_stages:
        raise ValueError(f"The 'lambdas' parameter must hold one λ per stage ({num_stages}). Got {len(lambdas)}.")
    options = architecture_options(bias, shrink, cs_iterations, cs_lambda, cs_inputs)
    c = stage_channels(concat_input, options["bias"], options["shrink"], options["cs_inputs"])
    stages = [UnrolledStage(relu_block(c, width, kernel_size, seed + i), float(lambdas[i]), learn_lambda)
              for i in range(num_stages)]
    return UnrolledNet(stages, crop, concat_input, cg_iterations, config, **options)


def unrolled_metrics(net: UnrolledNet, targets: Tensor, scales: Tensor, volumes: Sequence[str], data: MeasuredData,
                     chunk_size: int = 4, stages: int | None = None, initial: Tensor | None = None) -> dict[str, float]:
    """Slice-wise PSNR/SSIM (mean ± std, physical scale) of ``net`` on validation slices
    (:func:`convexrecon.metrics.score_slices`, the seed trainers' convention); ``initial`` as in
    :meth:`UnrolledNet.predict`."""
    summary = score_slices(targets, net.predict(data, chunk_size, stages, initial), scales, volumes)
    return {"psnr": summary["psnr"].mean, "psnr_std": summary["psnr"].std,
            "ssim": summary["ssim"].mean, "ssim_std": summary["ssim"].std}


# ---- convex layer-wise training ------------------------------------------------------------------

@dataclass
class UnrolledResult:
    """The trained network and one record per stage (β, λ, certificate, selection scores, validation metrics)."""

    network: UnrolledNet
    records: list[dict[str, Any]]


def _check_data(inputs: Tensor, targets: Tensor, data: MeasuredData, name: str) -> None:
    """``data`` must describe the slices of ``inputs``: ``crop(A^H k)`` equals the stored input."""
    if not isinstance(data, MeasuredData):
        raise TypeError(f"The '{name}' parameter must be a MeasuredData. Got {type(data).__name__} instead.")
    if len(data) != len(inputs) or data.crop != inputs.shape[-1] or inputs.shape[-2] != inputs.shape[-1]:
        raise ValueError(f"The '{name}' parameter must hold the {len(inputs)} slices of the inputs at crop "
                         f"{inputs.shape[-1]}. Got {len(data)} slices at crop {data.crop} instead.")
    x1 = complex_to_channels(crop_center(sense_adjoint(data.kspace, data.maps, data.mask), data.crop))
    error = float((x1.to(inputs.device, inputs.dtype) - inputs).abs().max())
    if error > 1e-3 * max(float(inputs.abs().max()), 1e-30):
        raise ValueError(f"The '{name}' parameter does not match the inputs: the crop of A^H k differs from the "
                         f"stored zero-filled images by {error:.3g} (max). Pass the measurements of the same slices "
                         "in the same order.")


class _Chain:
    """Full-grid estimates of all training slices through a sequence of frozen stages."""

    def __init__(self, net: UnrolledNet, data: MeasuredData, chunk_size: int,
                 start: tuple[Tensor, Tensor] | None = None, initial: Tensor | None = None) -> None:
        """``start``: ``(x1, x)`` of another chain of the same net settings, not computed again; ``initial``:
        :meth:`UnrolledNet.initial` of all slices, computed by the caller (:func:`initial_estimates`)."""
        self.net, self.data, self.chunk = net, data, chunk_size
        if start is not None:
            self.x1, self.x = start
            return
        with torch.no_grad():
            x1 = torch.cat([net.start(*self._part(j)) for j in range(0, len(data), chunk_size)])
            init = torch.cat([net.initial(x1[j:j + chunk_size], *self._part(j))
                              for j in range(0, len(data), chunk_size)]) if initial is None \
                else net._initial_of(initial, x1)
        # x1: the zero-filled images and the CS images of cs_inputs, (N, 1 + len(cs_inputs), H, W)
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
        outs = []
        for j in range(0, len(x), self.chunk):
            outs.append(self.net.step(stage, x[j:j + self.chunk], x1[j:j + self.chunk], *self._part(j, index),
                                      lam=lam))
        return torch.cat(outs)

    def advance(self, stage: UnrolledStage) -> None:
        self.x = self.advanced(stage)


def initial_estimates(net: UnrolledNet, data: MeasuredData, chunk_size: int = 4) -> Tensor | None:
    """:meth:`UnrolledNet.initial` of all slices of ``data`` when ``net`` has a CS start (None otherwise: the
    zero-filled start costs nothing), for scoring a network repeatedly without rerunning CS."""
    if not net.cs_iterations:
        return None
    chain = _Chain(net, data, chunk_size)
    return torch.cat([chain.x.unsqueeze(1), chain.x1[:, 1:]], 1)


def _moved(initial: Tensor | None, like: Tensor, name: str = "initial") -> Tensor | None:
    """A caller's precomputed :meth:`UnrolledNet.initial` (parameter ``name``) on the device of ``like``."""
    if initial is None:
        return None
    if not isinstance(initial, Tensor) or not initial.is_complex():
        got = f"{initial.dtype} {tuple(initial.shape)}" if isinstance(initial, Tensor) else type(initial).__name__
        raise ValueError(f"The '{name}' parameter must be complex images from initial_estimates. Got {got} instead.")
    return initial.to(like.device)


def _error(x: Tensor, targets: Tensor, crop: int) -> float:
    return float((complex_to_channels(crop_center(x, crop)).to(targets.dtype) - targets).double().pow(2).sum())


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` name one device when the current device is 0."""
    def index(d: torch.device) -> int | None:
        return torch.cuda.current_device() if d.type == "cuda" and d.index is None else d.index

    return a.type == b.type and (a.type == "cpu" or index(a) == index(b))


Validation = tuple[Tensor, Tensor, Tensor, Sequence[str], MeasuredData]


def _on_device(device: Any, allow_tf32: Any, targets: Tensor, data: MeasuredData, validation: Validation | None,
               inputs: Tensor | None = None) -> tuple[torch.device, bool, Tensor | None, Tensor, MeasuredData,
                                                      Validation | None]:
    """The run's device (``device``, or where ``targets`` and the measurements are) and the checked TF32
    switch; the training tensors, measurements and validation set moved there once (the seed trainers'
    convention, :func:`convexrecon.stack.baselines.train_end_to_end`)."""
    run_device = training_device(device, targets=targets, kspace=data.kspace,
                                 **({} if inputs is None else {"inputs": inputs}))
    allow_tf32 = bool_flag("allow_tf32", allow_tf32)
    if validation is not None:
        v_in, v_tg, scales, volumes, v_data = validation
        validation = (v_in.to(run_device), v_tg.to(run_device), scales, volumes, v_data.to(run_device))
    return (run_device, allow_tf32, None if inputs is None else inputs.to(run_device), targets.to(run_device),
            data.to(run_device), validation)


def train_unrolled(
    inputs: Tensor,
    targets: Tensor,
    data: MeasuredData,
    stages: Sequence[BlockSettings],
    *,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    holdout: Any = None,
    validation: tuple[Tensor, Tensor, Tensor, Sequence[str], MeasuredData] | None = None,
    concat_input: bool = True,
    bias: bool = False,
    shrink: Sequence[float] = (),
    cs_iterations: int = 0,
    cs_lambda: float = 0.0,
    cs_inputs: Sequence[Any] = (),
    initial: Tensor | None = None,
    validation_initial: Tensor | None = None,
    cg_iterations: int = 10,
    seed: int = 0,
    chunk_size: int = 4,
    solve_chunk_size: int | None = None,
    solve_options: dict[str, Any] | None = None,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = False,
    config: dict[str, Any] | None = None,
    device: Any = None,
    allow_tf32: bool = False,
) -> UnrolledResult:
    r"""Train ``len(stages)`` unrolled stages greedily, each block by its convex program.

    Parameters
    ----------
    inputs, targets
        Training zero-filled images and targets ``(N, 2, crop, crop)`` (stored scale).
    data
        Their measurements (:class:`~convexrecon.mri.consistency.MeasuredData`, e.g. from
        :func:`~convexrecon.mri.consistency.measured_data`); checked against ``inputs``.
    stages
        One :class:`~convexrecon.stack.layerwise.BlockSettings` per stage; ``beta_ratios`` makes
        β a choice on ``holdout`` as well.
    lambdas
        Candidate λ of every DC step, chosen per stage on ``holdout`` by the held-out squared
        error after the DC step. One value needs no ``holdout``.
    holdout
        Boolean per training slice: the slices that score the (β, λ) candidates (whole volumes,
        e.g. :func:`~convexrecon.data.splits.holdout_mask`). The chosen block is solved again on
        all slices with the chosen β ratio.
    validation
        ``(inputs, targets, scales, volumes, data)``; PSNR/SSIM recorded after every stage.
    concat_input
        Blocks see ``[x_i, x_1]`` (4 channels) instead of ``x_i``.
    bias, shrink
        Further block inputs (:class:`UnrolledNet`): a constant channel, and the estimate
        wavelet-shrunk at each relative threshold of ``shrink``.
    cs_iterations, cs_lambda, cs_inputs
        The CS start (:class:`UnrolledNet`): the stages refine ``cs_iterations`` FISTA steps of
        L1-wavelet CS (relative weight ``cs_lambda``) instead of the zero-filled image, and see the CS
        images at the further weights ``cs_inputs``.
    initial, validation_initial
        :meth:`UnrolledNet.initial` of the training (validation) slices, as :func:`initial_estimates`
        returns it for a network of these settings, when the caller has computed it (e.g. once for this
        trainer and both Adam baselines: a CS start with CS inputs costs several CS reconstructions per
        slice); None computes it.
    cg_iterations
        CG iterations per DC step.
    seed
        Gates of stage ``i`` are seeded ``seed + i``.
    chunk_size, solve_chunk_size
        Slices per chunk for the chains and DC; images per chunk inside ``fit_layer``.
    solve_options
        Further :class:`~convexrecon.block.options.FitOptions` fields for every solve, e.g.
        ``{"gated_method": "interior_point"}`` (far faster for small blocks) or ``{"device": "cuda"}``.
    checkpoint_dir
        ``stage_XX.pt`` written atomically after every stage; the same call resumes after the last one.
    stop_after
        Stop after this many stages (simulates an interruption).
    progress
        Progress bars.
    config
        Extra metadata stored in the network's config (e.g. ``{"data": dataset.settings()}``).
    device
        None trains where ``inputs``, ``targets`` and ``data`` are (all on one device); an explicit
        device (``"cpu"``, ``"cuda:0"``) moves them and the validation set there once. The chains, the
        DC steps and every block solve run there (``solve_options["device"]``, if given, must agree);
        the returned network lives there.
    allow_tf32
        TF32 for the whole training (solves, chains, DC steps), as in
        :func:`~convexrecon.stack.layerwise.train_layerwise`; off by default.

    Returns
    -------
    UnrolledResult
    """
    inputs, targets = check_images("inputs", inputs), check_images("targets", targets)
    if inputs.ndim != 4 or inputs.shape != targets.shape:
        raise ValueError(f"The 'targets' must have the shape of 'inputs' {tuple(inputs.shape)} (images). "
                         f"Got {tuple(targets.shape)} instead.")
    _check_data(inputs, targets, data, "data")
    if len(stages) == 0 or not all(isinstance(b, BlockSettings) for b in stages):
        raise ValueError("The 'stages' parameter must be a non-empty sequence of BlockSettings.")
    lambdas = tuple(float(v) for v in lambdas)
    if not lambdas or not all(v > 0 and math.isfinite(v) for v in lambdas):
        raise ValueError(f"The 'lambdas' parameter must be a non-empty sequence of finite numbers > 0. "
                         f"Got {lambdas!r} instead.")
    selecting = len(lambdas) > 1 or any(b.beta_ratios is not None for b in stages)
    held = None
    if holdout is not None:
        held = torch.as_tensor(holdout)
        if held.dtype != torch.bool or held.shape != (len(inputs),) or not 0 < int(held.sum()) < len(inputs):
            raise ValueError(f"The 'holdout' parameter must be a boolean per training slice, shape ({len(inputs)},), "
                             f"marking some but not all. Got dtype {held.dtype}, shape {tuple(held.shape)}, "
                             f"{int(held.sum()) if held.dtype == torch.bool else '?'} marked instead.")
    elif selecting:
        raise ValueError(f"Choosing λ among {lambdas} (or β among 'beta_ratios') needs 'holdout', a boolean per "
                         "training slice marking the slices that score the candidates. Got None.")
    if validation is not None:
        check_images("validation inputs", validation[0])
        _check_data(validation[0], validation[1], validation[4], "validation data")
    arch = architecture_options(bias, shrink, cs_iterations, cs_lambda, cs_inputs)
    run_device, allow_tf32, inputs, targets, data, validation = _on_device(device, allow_tf32, targets, data,
                                                                           validation, inputs)
    solve_options = dict(solve_options or {})
    asked = solve_options.pop("device", None)
    if asked is not None and not _same_device(device_of(asked), run_device):
        raise ValueError(f"The 'solve_options' device must be the training device {run_device}. "
                         f"Got {asked!r} instead.")
    solve_options["allow_tf32"] = allow_tf32
    with tf32_mode(allow_tf32):
        return _train_unrolled(inputs, targets, data, stages, lambdas, held, validation, concat_input, arch,
                               cg_iterations, seed, chunk_size, solve_chunk_size, solve_options, checkpoint_dir,
                               stop_after, progress, config, initial, validation_initial)


def _train_unrolled(inputs: Tensor, targets: Tensor, data: MeasuredData, stages: Sequence[BlockSettings],
                    lambdas: tuple[float, ...], held: Tensor | None, validation: Validation | None,
                    concat_input: bool, arch: dict[str, Any], cg_iterations: int, seed: int, chunk_size: int,
                    solve_chunk_size: int | None, solve_options: dict[str, Any],
                    checkpoint_dir: str | Path | None, stop_after: int | None, progress: bool,
                    config: dict[str, Any] | None, initial: Tensor | None = None,
                    validation_initial: Tensor | None = None) -> UnrolledResult:
    """:func:`train_unrolled` on validated tensors on one device, inside its TF32 mode."""
    settings = {"stages": [asdict(b) for b in stages], "lambdas": list(lambdas), "seed": seed,
                "concat_input": concat_input, **arch, "shrink": list(arch["shrink"]),
                "cs_inputs": [list(c) for c in arch["cs_inputs"]],
                "cg_iterations": cg_iterations, "holdout": None if held is None else held.nonzero().flatten().tolist(),
                "solve_options": solve_options}
    key = fingerprint(inputs, targets, data.mask, data.kspace.abs())
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
    crop = inputs.shape[-1]
    main_net = UnrolledNet([], crop, concat_input, cg_iterations, config, **arch)
    sel_net = UnrolledNet([], crop, concat_input, cg_iterations, **arch)
    main_net.to(inputs.device, inputs.dtype)  # dtype/device of the chains before any stage exists
    sel_net.to(inputs.device, inputs.dtype)
    main = _Chain(main_net, data, chunk_size, initial=_moved(initial, inputs))
    sel = _Chain(sel_net, data, chunk_size, start=(main.x1, main.x))
    val_start = _moved(validation_initial, inputs, "validation_initial")
    if val_start is None and validation is not None:
        val_start = initial_estimates(main_net, validation[4], chunk_size)
    records: list[dict[str, Any]] = []
    last = len(stages) if stop_after is None else min(len(stages), int(stop_after))
    bar = tqdm(range(last), desc="unrolled convex stages", unit="stage", disable=not progress)
    for i in bar:
        path = ckpt / f"stage_{i + 1:02d}.pt" if ckpt is not None else None
        if path is not None and path.is_file():
            payload = load_checkpoint(path, settings, key, ("block", "lam", "limit", "record", "selection"))
            try:
                stage = _stage_from(payload["block"], payload["lam"], inputs)
                stage.limit.fill_(float(payload["limit"]))
                sel_stage = None if payload["selection"] is None else _stage_from(*payload["selection"], inputs)
            except (KeyError, TypeError, ValueError, RuntimeError) as error:
                raise CheckpointError(f"The checkpoint {path} is corrupt ({type(error).__name__}: {error}); "
                                      f"delete it to recompute stage {i + 1}.") from None
            record = payload["record"]
        else:
            stage, sel_stage, record = _train_stage(i, stages[i], lambdas, held, main, sel, targets, seed,
                                                    solve_chunk_size, progress, dict(solve_options))
            if validation is not None:
                probe = UnrolledNet(list(main_net.stages) + [stage], crop, concat_input, cg_iterations, **arch)
                record.update(unrolled_metrics(probe, validation[1], validation[2], validation[3], validation[4],
                                               chunk_size, initial=val_start))
                bar.set_postfix(psnr=f"{record['psnr']:.2f}")
            if path is not None:
                save_checkpoint(path, run_payload(
                    settings, key, block=(block_spec(stage.block), stage.block.state_dict()), lam=float(stage.lam),
                    limit=float(stage.limit),
                    record=record, selection=None if sel_stage is None else
                    ((block_spec(sel_stage.block), sel_stage.block.state_dict()), float(sel_stage.lam))))
        main_net.stages.append(stage)
        main.advance(stage)
        if sel_stage is not None:
            sel_net.stages.append(sel_stage)
            sel.advance(sel_stage)
        records.append(record)
    meta = {"method": "unrolled_convex", "training": settings,
            "stages": [{k: v for k, v in r.items() if k != "report"} for r in records],
            "solve_reports": [r.get("report") for r in records], **(config or {})}
    net = UnrolledNet(list(main_net.stages), crop, concat_input, cg_iterations, meta, **arch)
    return UnrolledResult(net, records)


def _stage_from(block: tuple[dict[str, Any], dict[str, Tensor]], lam: float, like: Tensor) -> UnrolledStage:
    spec, state = block
    b = block_from_spec(spec)
    b.load_state_dict(state)
    return UnrolledStage(b.to(device=like.device, dtype=like.dtype), float(lam))


def _train_stage(i: int, b: BlockSettings, lambdas: tuple[float, ...], held: Tensor | None, main: _Chain, sel: _Chain,
                 targets: Tensor, seed: int, solve_chunk_size: int | None,
                 progress: bool, solve: dict[str, Any]) -> tuple[UnrolledStage, UnrolledStage | None, dict[str, Any]]:
    """Stage ``i``: choose (β ratio, λ) on ``held`` with the selection chain, then solve on all slices."""
    start = time.perf_counter()
    crop = targets.shape[-1]
    device = targets.device
    selection, ratio, lam, sel_stage = None, None, lambdas[0], None
    if held is not None:
        hd = held.to(device)
        x, y = sel.features(), targets - complex_to_channels(crop_center(sel.x, crop)).to(targets.dtype)
        fit_x, fit_y = x[~hd], y[~hd]
        if b.beta is not None:
            ratios: list[float | None] = [None]
            betas = [float(b.beta)]
        else:
            ratios = list(b.beta_ratios or (b.beta_ratio,))
            unit = block_beta(b, fit_x, fit_y, seed + i, solve_chunk_size, ratio=1.0)  # β_max of the fit slices
            betas = [r * unit for r in ratios]
        options = b.fit_options(**{"seed": seed + i, "chunk_size": solve_chunk_size, "progress": progress,
                                    "device": device, **solve})
        blocks = fit_layer_path(fit_x, fit_y, betas, options=options)
        index = hd.nonzero().flatten()
        errors = np.empty((len(blocks), len(lambdas)))
        for r, block in enumerate(blocks):
            candidate = UnrolledStage(block, lambdas[0])
            for j, lam_j in enumerate(lambdas):
                errors[r, j] = _error(sel.advanced(candidate, index, lam=lam_j), targets[index], crop)
        r_best, j_best = np.unravel_index(int(np.argmin(errors)), errors.shape)
        ratio, lam = ratios[r_best], lambdas[j_best]
        if ratio is not None:
            warn_choice_at_edge(f"Stage {i + 1}", "β ratio", ratio, ratios, "beta_ratios", stacklevel=5)
        warn_choice_at_edge(f"Stage {i + 1}", "data-consistency λ", lam, lambdas, "lambdas", stacklevel=5)
        sel_stage = UnrolledStage(blocks[r_best], lam)
        selection = {"beta_ratios": ratios, "lambdas": list(lambdas), "holdout_sq_error": errors.tolist(),
                     "holdout_target_energy": float(targets[index].double().pow(2).sum()),
                     "holdout_input_sq_error": _error(sel.x[index], targets[index], crop),
                     "widths": [blk.width for blk in blocks], "chosen_ratio": ratio, "chosen_lambda": lam,
                     "fit_slices": int((~hd).sum()), "holdout_slices": int(hd.sum())}
    x, y = main.features(), targets - complex_to_channels(crop_center(main.x, crop)).to(targets.dtype)
    options = b.fit_options(**{"seed": seed + i, "chunk_size": solve_chunk_size, "progress": progress,
                                    "device": device, **solve})
    if ratio is not None:
        from convexrecon.block.options import FitOptions

        options = FitOptions.of(options, beta_ratio=ratio)
    block = fit_layer(x, y, beta=b.beta, options=options)
    with torch.no_grad():  # the correction bound: twice the largest ratio on the training slices (never active there)
        r = block(x).pow(2).sum(1).sqrt().flatten(1).max(1).values
        h = complex_to_channels(crop_center(main.x, crop)).to(x.dtype).pow(2).sum(1).sqrt().flatten(1).max(1).values
        ratio_max = float((r / h.clamp_min(torch.finfo(h.dtype).tiny)).max())
    stage = UnrolledStage(block, lam, limit=2.0 * ratio_max if ratio_max > 0 else math.inf)
    record: dict[str, Any] = {"stage": i + 1, "lam": lam, "correction_limit": float(stage.limit),
                              **block_record(block, b, seed + i, y, ratio, selection, time.perf_counter() - start)}
    return stage, sel_stage, record


# ---- Adam baselines on the same architecture ------------------------------------------------------

def train_unrolled_end_to_end(
    net: UnrolledNet,
    targets: Tensor,
    data: MeasuredData,
    *,
    epochs: int = 40,
    batch_size: int = 4,
    lr: float = 1e-4,
    halve_every: int = 10,
    weight_decay: float = 0.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    validation: tuple[Tensor, Tensor, Tensor, Sequence[str], MeasuredData] | None = None,
    progress: bool = False,
    device: Any = None,
    allow_tf32: bool = False,
    initial: Tensor | None = None,
    validation_initial: Tensor | None = None,
) -> list[dict[str, float]]:
    r"""Train ``net`` (in place) end to end by Adam through the differentiable DC steps.

    The loss is :func:`~convexrecon.stack.baselines.pixel_loss` of the cropped output,
    :math:`\frac1n\sum \tfrac12\|\hat x - y\|^2`, with Adam's ``weight_decay`` on every
    trainable parameter. The λ_i are trained too when their ``log_lam`` requires a gradient
    (:func:`unrolled_plain`'s default ``learn_lambda=True``); weight decay then also pulls
    ``log λ_i`` towards 0. Returns per-epoch loss (and validation PSNR/SSIM).

    ``device`` and ``allow_tf32`` as in :func:`train_unrolled`: None trains where ``targets`` and
    ``data`` are (``net`` is moved there); an explicit device moves them once. ``net`` stays there.
    ``initial`` and ``validation_initial`` as in :func:`train_unrolled`.
    """
    targets = check_images("targets", targets)
    run_device, allow_tf32, _, targets, data, validation = _on_device(device, allow_tf32, targets, data, validation)
    net.to(run_device)
    index = torch.arange(len(targets), device=run_device)  # adam_train batches the inputs: slice indices into data
    # the CS start (and CS inputs), computed once
    starts = _moved(initial, targets) if initial is not None else initial_estimates(net, data, batch_size)

    def forward(ids: Tensor) -> Tensor:
        return net(data.kspace[ids], data.maps[ids], data.mask[ids], initial=None if starts is None else starts[ids])

    val_start = _moved(validation_initial, targets, "validation_initial")
    if val_start is None and validation is not None:
        val_start = initial_estimates(net, validation[4])
    on_epoch = None if validation is None else (
        lambda e: unrolled_metrics(net, *validation[1:4], validation[4], initial=val_start))
    with tf32_mode(allow_tf32):
        history = adam_train(net, forward, index, targets, epochs=epochs, batch_size=batch_size, lr=lr,
                             weight_decay=weight_decay, halve_every=halve_every, seed=seed,
                             checkpoint=_checkpoint_file(checkpoint_dir, "unrolled_end_to_end.pt"),
                             stop_after=stop_after, desc="unrolled end-to-end (Adam)", progress=progress,
                             on_epoch=on_epoch)
    net.config.update({"method": "unrolled_end_to_end", "training": {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "halve_every": halve_every, "learned_lambda": any(s.log_lam.requires_grad for s in net.stages),
        "allow_tf32": allow_tf32},
        "lambdas": [float(s.lam.detach()) for s in net.stages], "history": history})
    return history


def train_unrolled_layerwise_adam(
    targets: Tensor,
    data: MeasuredData,
    width: int,
    kernel_size: int,
    lambdas: Sequence[float],
    *,
    concat_input: bool = True,
    bias: bool = False,
    shrink: Sequence[float] = (),
    cs_iterations: int = 0,
    cs_lambda: float = 0.0,
    cs_inputs: Sequence[Any] = (),
    initial: Tensor | None = None,
    validation_initial: Tensor | None = None,
    cg_iterations: int = 10,
    epochs: int = 30,
    batch_size: int = 4,
    lr: float = 1e-4,
    halve_every: int = 10,
    weight_decay: float | Sequence[float] = 0.0,
    seed: int = 0,
    chunk_size: int = 4,
    checkpoint_dir: str | Path | None = None,
    validation: tuple[Tensor, Tensor, Tensor, Sequence[str], MeasuredData] | None = None,
    progress: bool = False,
    device: Any = None,
    allow_tf32: bool = False,
) -> tuple[UnrolledNet, list[dict[str, Any]]]:
    """Non-convex layer-wise training of the unrolled network: stage ``i``'s ReLU block by Adam on the
    convex block's objective (features of ``x_i``, residual ``y - x_i``, weight decay ``weight_decay[i]``),
    then frozen; the DC weights are fixed at ``lambdas`` (e.g. the convex model's choices). ``concat_input``,
    ``bias``, ``shrink``, ``cs_iterations``, ``cs_lambda``, ``cs_inputs``, ``initial`` and ``validation_initial``
    as in :func:`train_unrolled`.

    ``checkpoint_dir``: each stage's Adam state is written there after every epoch
    (``unrolled_layerwise_adam_XX.pt``); the same call resumes. A stage's checkpoint is identified by
    the measurements, targets, settings and the frozen stages before it (not by its inputs, which the
    DC chain need not reproduce bit for bit), so a resumed stage may continue on inputs that differ
    from the interrupted run's by rounding.

    ``device`` and ``allow_tf32`` as in :func:`train_unrolled`; the network is returned on the device.
    Returns the network and one record per stage.
    """
    targets = check_images("targets", targets)
    arch = architecture_options(bias, shrink, cs_iterations, cs_lambda, cs_inputs)
    _, allow_tf32, _, targets, data, validation = _on_device(device, allow_tf32, targets, data, validation)
    with tf32_mode(allow_tf32):
        net, records = _train_unrolled_layerwise_adam(
            targets, data, width, kernel_size, lambdas, concat_input, arch, cg_iterations, epochs, batch_size, lr,
            halve_every, weight_decay, seed, chunk_size, checkpoint_dir, validation, progress,
            _moved(initial, targets), _moved(validation_initial, targets, "validation_initial"))
    net.config["training"]["allow_tf32"] = allow_tf32
    return net, records


def _train_unrolled_layerwise_adam(targets: Tensor, data: MeasuredData, width: int, kernel_size: int,
                                   lambdas: Sequence[float], concat_input: bool, arch: dict[str, Any],
                                   cg_iterations: int, epochs: int,
                                   batch_size: int, lr: float, halve_every: int,
                                   weight_decay: float | Sequence[float], seed: int, chunk_size: int,
                                   checkpoint_dir: str | Path | None, validation: Validation | None,
                                   progress: bool, initial: Tensor | None = None,
                                   validation_initial: Tensor | None = None
                                   ) -> tuple[UnrolledNet, list[dict[str, Any]]]:
    """:func:`train_unrolled_layerwise_adam` on tensors on one device, inside its TF32 mode."""
    n_stages = len(lambdas)
    decays = [float(weight_decay)] * n_stages if isinstance(weight_decay, (int, float)) else list(weight_decay)
    crop = targets.shape[-1]
    net = UnrolledNet([], crop, concat_input, cg_iterations, {"method": "unrolled_layerwise_adam"}, **arch)
    net.to(targets.device, targets.dtype)  # dtype/device of the chain before any stage exists
    chain = _Chain(net, data, chunk_size, initial=initial)
    val_start = validation_initial
    if val_start is None and validation is not None:
        val_start = initial_estimates(net, validation[4], chunk_size)
    records: list[dict[str, Any]] = []
    # stage i's checkpoint is keyed on the measurements, the targets and the frozen stages before it, not on its
    # inputs: those come through the DC chain, whose FFTs need not repeat bit for bit in another process
    source = fingerprint(targets, data.kspace, data.maps, data.mask, data.crop, width, kernel_size, concat_input,
                         cg_iterations, [float(v) for v in lambdas],
                         json.dumps({**arch, "shrink": list(arch["shrink"]),
                                     "cs_inputs": [list(c) for c in arch["cs_inputs"]]}))
    for i in range(n_stages):
        start = time.perf_counter()
        h = chain.features()
        residual = targets - complex_to_channels(crop_center(chain.x, crop)).to(targets.dtype)
        block = relu_block(net.in_channels, width, kernel_size, seed + i).to(targets.device, targets.dtype)
        key = fingerprint(source, i, *[t for s in net.stages for t in s.block.state_dict().values()])
        history = adam_train(block, block, h, residual, epochs=epochs, batch_size=batch_size, lr=lr,
                             halve_every=halve_every, weight_decay=decays[i], seed=seed + i,
                             checkpoint=_checkpoint_file(checkpoint_dir, f"unrolled_layerwise_adam_{i + 1:02d}.pt"),
                             desc=f"unrolled layer-wise Adam stage {i + 1}", progress=progress, data_key=key)
        block.requires_grad_(False)
        stage = UnrolledStage(block, float(lambdas[i]))
        net.stages.append(stage)
        chain.advance(stage)
        record: dict[str, Any] = {"stage": i + 1, "seconds": time.perf_counter() - start, "lam": float(lambdas[i]),
                                  "loss": history[-1]["loss"] if history else None}
        if validation is not None:
            record.update(unrolled_metrics(net, *validation[1:4], validation[4], chunk_size, initial=val_start))
        records.append(record)
    net.config.update({"stages": records, "training": {
        "epochs_per_stage": epochs, "batch_size": batch_size, "lr": lr, "halve_every": halve_every,
        "weight_decay": decays, "seed": seed, "lambdas": [float(v) for v in lambdas]}})
    return net, records


def load_unrolled(directory: str | Path, map_location: str | torch.device = "cpu") -> UnrolledNet:
    """Load a model written by :meth:`UnrolledNet.save` (:func:`convexrecon.stack.persist.load_network`
    dispatches here when ``architecture.kind == "unrolled"``)."""
    from convexrecon.stack.persist import load_network

    net = load_network(directory, map_location)
    if not isinstance(net, UnrolledNet):
        raise ValueError(f"The model in {directory} is not an unrolled network (architecture kind "
                         f"{json.dumps(getattr(net, 'spec', lambda: {})().get('kind', 'seed'))}).")
    return net
