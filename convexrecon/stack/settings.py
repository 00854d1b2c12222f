"""What the trainers are given: block settings, the validation set, the hold-out, and the rules that choose.

* :class:`BlockSettings` — one convex block (kernel, gates, activation, β or candidate β ratios, tolerance);
* :class:`ValidationSet` — the validation slices (and their measurements, for the unrolled network),
  given to every trainer in one form;
* :func:`holdout_of` — the boolean hold-out mask that scores the candidates of a choice;
* :func:`block_beta`, :func:`warn_choice_at_edge`, :func:`block_record` — β of a block, the warning
  when a choice lies at the edge of its candidates, and what a trainer records of a solved block.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from convexrecon.block.fit import problem_beta_max
from convexrecon.block.module import ConvexBlock
from convexrecon.block.options import DEFAULT_BETA_RATIO, FitOptions
from convexrecon.checks import check_images
from convexrecon.errors import SelectionWarning, grid_edge


@dataclass(frozen=True)
class BlockSettings:
    """Settings of one convex block.

    Attributes
    ----------
    kernel_size
        Odd ``k`` of ``first_i``.
    num_arrangements
        ``P`` gates; hidden width at most ``P * 2`` (gated) or ``4 P`` (relu) for 2 output channels.
    activation
        ``"gated"`` (fast relaxation) or ``"relu"`` (exact, cone-constrained; slow).
    beta
        Group-norm weight; None: ``beta_ratio * beta_max`` of the block's data.
    beta_ratio
        Used when ``beta`` is None; ``beta_max = max_{i,c} ||X^T D_i y_c||`` is the
        smallest weight with a zero gated solution (1e-3 is ``fit_layer``'s default;
        larger values converge faster and regularise more).
    beta_ratios
        Candidate ratios (replacing ``beta_ratio``): the block is solved for each on the
        training slices outside the trainer's ``holdout``, the ratio whose network
        has the smallest squared error on the held-out slices is kept, and the block is
        solved again with it on all training slices. The candidates are scored on features
        of a *selection chain* (earlier blocks solved on the fit slices only), so no layer
        that produces them has seen the held-out slices. The validation split is never used.
    gate_sampling
        ``"antithetic"`` (default here): gates in complementary pairs ``g, -g``, so each
        block holds every linear convolution of its input, including the previous
        block's read-out — an added block can always reproduce its predecessor's
        prediction. ``"gaussian"``: i.i.d. gates (``fit_layer``'s default). See
        :func:`~convexrecon.block.arrangements.draw_gates`.
    tol, max_iter
        Passed to :func:`~convexrecon.block.fit.fit_layer`.
    """

    kernel_size: int = 5
    num_arrangements: int = 8
    activation: str = "gated"
    beta: float | None = None
    beta_ratio: float = DEFAULT_BETA_RATIO
    beta_ratios: tuple[float, ...] | None = None
    gate_sampling: str = "antithetic"
    tol: float = 1e-4
    max_iter: int | None = None

    def __post_init__(self) -> None:
        self.fit_options()  # validates the settings shared with fit_layer, with fit_layer's messages
        if self.beta_ratios is not None:
            ratios = self.beta_ratios
            valid = lambda r: isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 and math.isfinite(r)  # noqa: E731
            if (isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__len__") or len(ratios) == 0
                    or not all(valid(r) for r in ratios)):
                raise ValueError(f"The 'beta_ratios' setting must be a non-empty sequence of finite numbers > 0 or "
                                 f"None. Got {ratios!r} instead.")
            if self.beta is not None:
                raise ValueError("The 'beta' and 'beta_ratios' settings exclude each other: an explicit 'beta' "
                                 f"leaves nothing to select. Got beta={self.beta!r}, beta_ratios={ratios!r}.")
            object.__setattr__(self, "beta_ratios", tuple(float(r) for r in ratios))
        if self.beta is not None and not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"The 'beta' setting must be a finite number > 0 or None. Got {self.beta!r} instead.")

    @property
    def width(self) -> int:
        """The hidden width of a block with all groups nonzero: ``2 P`` gated, ``4 P`` exact ReLU."""
        return (2 if self.activation == "gated" else 4) * self.num_arrangements

    def fit_options(self, **solve: Any) -> FitOptions:
        """The :class:`~convexrecon.block.options.FitOptions` of this block (float32), with ``solve`` settings
        (seed, device, chunk_size, progress, ...) added."""
        return FitOptions(kernel_size=self.kernel_size, num_arrangements=self.num_arrangements,
                          activation=self.activation, gate_sampling=self.gate_sampling, beta_ratio=self.beta_ratio,
                          tol=self.tol, max_iter=self.max_iter, dtype=torch.float32, **solve)


def check_blocks(name: str, blocks: Any) -> None:
    """``blocks`` (the parameter ``name``) must be a non-empty sequence of :class:`BlockSettings`."""
    if len(blocks) == 0 or not all(isinstance(b, BlockSettings) for b in blocks):
        raise ValueError(f"The '{name}' parameter must be a non-empty sequence of BlockSettings.")


@dataclass(frozen=True)
class ValidationSet:
    """Validation slices: scored after every block, stage or epoch; never used to fit or to choose.

    Attributes
    ----------
    inputs, targets
        Zero-filled images and targets ``(n, 2, H, W)`` (or volumes ``(n, 2, D, H, W)``) at the stored scale.
    scales
        Per-slice factors back to the physical scale.
    volumes
        Volume name of every slice (None: one volume ``"val"``).
    data
        Their measurements (:class:`~convexrecon.mri.consistency.MeasuredData`), needed by the unrolled trainers.
    """

    inputs: Tensor
    targets: Tensor
    scales: Tensor
    volumes: Sequence[str] | None = None
    data: Any = None

    def __post_init__(self) -> None:
        if self.targets is None or self.scales is None:
            raise ValueError("With 'val_inputs', 'val_targets' and 'val_scales' must be given too.")
        if self.volumes is None and isinstance(self.inputs, Tensor):
            object.__setattr__(self, "volumes", ["val"] * len(self.inputs))

    @classmethod
    def of(cls, validation: Any = None, *, val_inputs: Tensor | None = None, val_targets: Tensor | None = None,
           val_scales: Tensor | None = None, val_volumes: Sequence[str] | None = None) -> "ValidationSet | None":
        """The one conversion of every accepted form: a :class:`ValidationSet`, a tuple ``(inputs, targets,
        scales, volumes[, data])``, or the keywords ``val_inputs``, ``val_targets``, ``val_scales``,
        ``val_volumes``; None when none is given."""
        if validation is not None and val_inputs is not None:
            raise ValueError("Give the validation set either as 'validation' or as 'val_inputs', 'val_targets', "
                             "'val_scales' and 'val_volumes', not both.")
        if val_inputs is not None:
            return cls(val_inputs, val_targets, val_scales, None if val_volumes is None else list(val_volumes))
        if validation is None or isinstance(validation, cls):
            return validation
        if not isinstance(validation, (tuple, list)) or len(validation) not in (4, 5):
            raise ValueError("The 'validation' parameter must be a ValidationSet, a tuple (inputs, targets, scales, "
                             f"volumes[, data]) or None. Got {type(validation).__name__} instead.")
        return cls(*validation)

    def tensors(self) -> dict[str, Tensor]:
        """The images, by the names device errors use."""
        return {"val_inputs": self.inputs, "val_targets": self.targets}

    def checked(self) -> "ValidationSet":
        """This set after checking its images (finite, 2-channel float tensors of one shape)."""
        check_images("val_inputs", self.inputs)
        check_images("val_targets", self.targets)
        if self.targets.shape != self.inputs.shape:
            raise ValueError(f"The 'val_targets' must have the shape of 'val_inputs' {tuple(self.inputs.shape)}. "
                             f"Got {tuple(self.targets.shape)} instead.")
        return self

    def to(self, device: torch.device) -> "ValidationSet":
        """The images (and measurements) moved to ``device`` once; scales and names stay where they are."""
        return ValidationSet(self.inputs.to(device), self.targets.to(device), self.scales, self.volumes,
                             None if self.data is None else self.data.to(device))


def holdout_of(holdout: Any, n: int, device: torch.device, needed_for: str | None) -> Tensor | None:
    """The ``holdout`` mask as a bool tensor on ``device``: some but not all of the ``n`` training slices.

    ``needed_for``: what the trainer chooses on the held-out slices, when it chooses anything (then a
    missing ``holdout`` is an error); None when nothing is chosen.
    """
    if holdout is None:
        if needed_for is not None:
            raise ValueError(f"{needed_for}: pass 'holdout', a boolean per training slice marking the slices that "
                             f"score the candidates.")
        return None
    held = torch.as_tensor(holdout)
    if held.dtype != torch.bool or held.shape != (n,):
        raise ValueError(f"The 'holdout' parameter must be a boolean per training slice, shape ({n},). "
                         f"Got dtype {held.dtype}, shape {tuple(held.shape)} instead.")
    if not 0 < int(held.sum()) < n:
        raise ValueError(f"The 'holdout' parameter must mark some but not all of the {n} training slices. "
                         f"Got {int(held.sum())} marked.")
    return held.to(device)


def block_beta(settings: BlockSettings, x: Tensor, y: Tensor, seed: int, chunk_size: int | None = None,
               ratio: float | None = None) -> float:
    """``settings.beta``, or ``ratio`` (default ``settings.beta_ratio``) ``* beta_max`` on ``(x, y)`` with the
    block's gates (:func:`~convexrecon.block.fit.problem_beta_max`)."""
    if settings.beta is not None:
        return float(settings.beta)
    options = settings.fit_options(seed=seed, chunk_size=chunk_size, device=x.device)
    value = (settings.beta_ratio if ratio is None else ratio) * problem_beta_max(x, y, options=options)
    if not value > 0:
        raise ValueError("The block's targets are zero on every arrangement: pass an explicit 'beta'.")
    return value


def warn_choice_at_edge(where: str, what: str, chosen: float, candidates: Sequence[float], setting: str,
                        stacklevel: int = 3) -> bool:
    """Warn (:class:`~convexrecon.errors.SelectionWarning`) when ``chosen`` is the smallest or largest of two or more
    ``candidates``; returns whether it is. Exact-ReLU blocks of the quick knee benchmark chose the smallest β ratio
    of [3e-3, 3e-2] and lost 2 dB to gated blocks; given candidates down to 1e-4 they gained 1.4 dB over them.
    ``stacklevel`` 3 points at the caller of the function that calls this one."""
    edge = grid_edge(chosen, candidates)
    if edge is None:
        return False
    side, other = edge
    shown = [float(f"{v:g}") for v in sorted({float(c) for c in candidates})]
    warnings.warn(f"{where}: the {what} chosen on the held-out slices is {chosen:g}, the {side} of the candidates "
                  f"{shown}: the best value may lie outside them; add {other} values to '{setting}'.",
                  SelectionWarning, stacklevel=stacklevel)
    return True


def block_record(block: ConvexBlock, settings: BlockSettings, gates_seed: int, targets: Tensor, ratio: float | None,
                 selection: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """What a trainer records of one solved block: β, width, its certificate and how β was chosen."""
    report = block.report
    return {
        "beta": block.beta, "width": block.width, "activation": settings.activation, "gates_seed": gates_seed,
        "num_pixels": int(targets[:, 0].numel()), "seconds": seconds,
        "solver": None if report is None else report.solver,
        "duality_gap": None if report is None else report.gap,
        "relative_gap": None if report is None else report.relative_gap,
        "status": None if report is None else str(report.status),
        "iterations": None if report is None else report.iterations,
        "report": None if report is None else report.to_dict(),
        "beta_ratio": ratio if ratio is not None else (None if settings.beta is not None else settings.beta_ratio),
        "selection": selection,
    }
