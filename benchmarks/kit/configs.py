"""The knee experiment's configurations (``run_knee.py --config``), its two masks and its time estimate.

A configuration is a frozen :class:`KneeConfig` (the CNN methods' settings) holding a :class:`SyntheticSet` (the
data) and an :class:`UnrolledConfig` (the unrolled network's settings). Derive a variant with
:func:`dataclasses.replace`; :meth:`KneeConfig.to_dict` is what ``results.json`` records.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from convexrecon.data.masks import CENTER_FRACTION
from convexrecon.stack.adam import TrainingRule

MASKS = {"poisson": {"mask": "poisson", "acceleration": 4.0, "calib": 16},
         "lines": {"mask": "lines", "acceleration": 4.0, "center_fraction": CENTER_FRACTION}}


def _frozen(value: Any) -> Any:
    """Lists (e.g. from a JSON override) as tuples, nested ones included, so that a configuration stays immutable."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


class _Frozen:
    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, field.name, _frozen(getattr(self, field.name)))

    @classmethod
    def setting_names(cls) -> list[str]:
        """The names of the settings, sorted (for error messages about unknown overrides)."""
        return sorted(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class SyntheticSet(_Frozen):
    """The synthetic knee-like set (:func:`convexrecon.data.make_synthetic`): volumes × slices, coils, k-space
    shape, SNR."""

    volumes: int
    slices: int
    coils: int
    shape: tuple[int, int]
    snr: float


@dataclass(frozen=True, kw_only=True)
class RuleConfig(_Frozen):
    """The training rule of a mode's Adam baselines (:class:`convexrecon.stack.adam.TrainingRule`): lr and weight
    decay (multiples of the convex blocks' ``beta_i / n_i``) chosen on the held-out training volume, early stopping
    after ``patience`` epochs without a ``rel_tol`` relative improvement of the held-out loss, at most
    ``max_epochs`` epochs per run."""

    lrs: tuple[float, ...]
    decay_factors: tuple[float, ...]
    search: str
    max_epochs: int
    patience: int
    rel_tol: float

    def training_rule(self, snapshot_seconds: float | None = None) -> TrainingRule:
        """The library's rule with these settings (``snapshot_seconds``: keep the run at another method's time)."""
        return TrainingRule(lrs=self.lrs, decay_factors=self.decay_factors, search=self.search,
                            max_epochs=self.max_epochs, patience=self.patience, rel_tol=self.rel_tol,
                            snapshot_seconds=snapshot_seconds)

    def runs(self) -> int:
        """The number of candidate runs."""
        lrs, decays = len(self.lrs), len(set(self.decay_factors))
        return lrs * decays if self.search == "grid" else lrs + decays - 1


@dataclass(frozen=True, kw_only=True)
class UnrolledConfig(_Frozen):
    """The unrolled network with data consistency: ``stages`` convex stages (β ratio and DC λ chosen per stage on
    the held-out training volume from ``beta_ratios`` and ``lambdas``) and its two Adam baselines.

    The stages refine ``cs_iterations`` FISTA steps of L1-wavelet CS (``cs_lambda = "cs"``: the CS baseline's λ)
    and see the estimate, a constant channel (``bias``), the db4-shrunk estimates at ``shrink`` and the further CS
    images ``cs_inputs`` (``(multiple of the start's λ, wavelet)`` pairs).

    The fallback (``docs/design.md`` §9.2): ``sense_input`` adds the unregularised SENSE-CG image as a block input,
    ``cs_relative = "noise"`` weighs the CS start and CS images by each slice's estimated noise level (the CS
    baseline's λ converted at the training slices' median ratio of image maximum to noise level, so the
    in-distribution weights stay those of the CS baseline), ``keep_start`` lets the held-out selection make a
    stage the identity when every candidate scores below its input, and ``residual`` gives the blocks every
    further image minus the estimate instead of the estimate. ``cs_shifts`` > 1 cycle-spins every CS image over
    that many wavelet-grid shifts (that many times the CS work). ``dc_relative = "noise"`` scales every stage's
    data-consistency weight by the square of each slice's relative noise level over the training slices' median
    (:class:`convexrecon.stack.stage_inputs.StageInputs` ``dc_noise``; ``"fixed"``: the weights as chosen).
    ``cs_clean`` names the masks on which every CS weight of a slice cleaner than the training slices' median
    relative noise level is multiplied by its ratio to that median (``StageInputs.cs_noise``); on other masks the
    weights are as ``cs_relative`` says at every noise level. With Poisson-disc sampling the best CS weight falls
    that way on cleaner scans; on lines it does not (``benchmarks/cs_weight_law.py``)."""

    stages: int
    activation: str
    kernel_size: int
    num_arrangements: int
    beta_ratios: tuple[float, ...]
    lambdas: tuple[float, ...]
    tol: float
    max_iter: int | None
    gated_method: str
    cg_iterations: int
    concat_input: bool
    epochs_end_to_end: int
    epochs_layerwise: int
    bias: bool
    shrink: tuple[float, ...]
    cs_iterations: int
    cs_lambda: float | str
    cs_inputs: tuple[tuple[float, str], ...]
    halve_every: int
    lr: float
    batch_size: int
    rule: RuleConfig | None = None
    layerwise_rule: RuleConfig | None = None
    sense_input: bool = False
    cs_relative: str = "max"
    keep_start: bool = False
    residual: bool = False
    cs_shifts: int = 1
    dc_relative: str = "fixed"
    cs_clean: tuple[str, ...] = ()

    def stage_rule(self) -> RuleConfig | None:
        """The rule of the layer-wise Adam stages: ``layerwise_rule``, or ``rule`` when None (a stage's block trains
        without data-consistency steps, so far more of its epochs fit the time of one end-to-end epoch)."""
        return self.layerwise_rule or self.rule


@dataclass(frozen=True, kw_only=True)
class Condition(_Frozen):
    """One out-of-distribution test set: ``volumes`` synthetic volumes of the ``anatomy`` family at ``snr`` with
    ``coils`` coils, the training set's k-space shape and slices per volume
    (:func:`benchmarks.kit.shift.condition_root`)."""

    name: str
    anatomy: str
    snr: float
    coils: int
    volumes: int = 1


def shifted(syn: SyntheticSet, volumes: int = 1, coils_other: int | None = None) -> tuple[Condition, ...]:
    """The out-of-distribution protocol for a knee set at one SNR: the other family (brain) at the training SNR and
    at 4x it, knee at 4x and at 0.4x the training SNR, and knee with another coil count (``coils_other``, default
    twice the training set's)."""
    snr, coils = syn.snr, syn.coils
    return (Condition(name=f"brain, SNR {snr:g}", anatomy="brain", snr=snr, coils=coils, volumes=volumes),
            Condition(name=f"brain, SNR {4 * snr:g}", anatomy="brain", snr=4 * snr, coils=coils, volumes=volumes),
            Condition(name=f"knee, SNR {4 * snr:g}", anatomy="knee", snr=4 * snr, coils=coils, volumes=volumes),
            Condition(name=f"knee, SNR {0.4 * snr:g}", anatomy="knee", snr=0.4 * snr, coils=coils, volumes=volumes),
            Condition(name=f"knee, {coils_other or 2 * coils} coils", anatomy="knee", snr=snr,
                      coils=coils_other or 2 * coils, volumes=volumes))


@dataclass(frozen=True, kw_only=True)
class KneeConfig(_Frozen):
    """One mode of the knee experiment: data, the layer-wise CNN (``blocks`` convex blocks, β per block chosen from
    ``beta_ratios`` on the last ``holdout_volumes`` training volumes, or the fixed ``beta_ratio`` when None), its
    Adam baselines, L1-wavelet CS (λ from ``cs_lambdas`` on ``cs_lambda_slices`` training slices; scored on the
    first ``cs_val_slices`` validation slices, all when None), exact-ReLU blocks (``relu``), the
    out-of-distribution test sets (``conditions``: another anatomy family, SNR and coil count), the unrolled network
    and the number of seeds of the learned methods (``seeds``; ``run_knee.py --seeds`` overrides it)."""

    synthetic: SyntheticSet
    crop: int
    val_volumes: int
    blocks: int
    kernel_size: int
    num_arrangements: int
    activation: str
    gate_sampling: str
    beta_ratio: float
    beta_ratios: tuple[float, ...] | None
    holdout_volumes: int
    tol: float
    max_iter: int | None
    solve_chunk_size: int | None
    patch_size: int | None
    patches_per_slice: int
    epochs_end_to_end: int
    epochs_layerwise: int
    halve_every: int
    batch_size: int
    cs_lambda_slices: int
    cs_max_iter: int
    cs_lambdas: tuple[float, ...]
    cs_val_slices: int | None = None
    allow_tf32: bool = False
    relu: bool
    conditions: tuple[Condition, ...] = ()
    unrolled: UnrolledConfig | None = None
    rule: RuleConfig | None = None
    cs_shifts: int = 4
    seeds: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain JSON-ready values (nested configurations as dicts), for ``results.json``."""
        return dataclasses.asdict(self)


# The unrolled network's further CS images (multiples of the CS start's λ, wavelet): the blocks learn where to trust
# which (docs/design.md §9.1). With them, the zero-filled image and the db4-shrunk estimates add nothing as block
# inputs (one stage: lines 27.79 / 27.78 dB, Poisson 34.11 / 34.13 dB without / with), so every configuration's
# stage sees [estimate, constant channel, 4 CS images]: 11 channels.
CS_INPUTS = ((1 / 3, "db4"), (10 / 3, "db4"), (1, "haar"), (1, "sym8"))
# The fallback of every configuration's unrolled network (as ``train --recommended``): the SENSE-CG image as a further
# block input, CS weights relative to each slice's noise level, the identity stage among the held-out candidates,
# residual block inputs (every image minus the estimate), so that a stage's correction shrinks where the
# reconstructions agree, cycle-spun CS images and data-consistency weights that follow the noise (docs/design.md §9.2;
# docs/benchmarks.md §1.4 measures each part out of distribution)
FALLBACK: dict[str, Any] = {"sense_input": True, "cs_relative": "noise", "keep_start": True, "residual": True,
                            "cs_shifts": 4, "dc_relative": "noise", "cs_clean": ("poisson",)}

# the training sets of the modes (knee family, one SNR); their out-of-distribution sets derive from them
QUICK_SET = SyntheticSet(volumes=3, slices=2, coils=6, shape=(96, 368), snr=25.0)
DEFAULT_SET = SyntheticSet(volumes=5, slices=4, coils=8, shape=(160, 368), snr=25.0)
FULL_SET = SyntheticSet(volumes=4, slices=8, coils=15, shape=(640, 368), snr=25.0)
GPU_SET = SyntheticSet(volumes=5, slices=8, coils=15, shape=(640, 368), snr=25.0)

CONFIGS: dict[str, KneeConfig] = {
    "quick": KneeConfig(
        synthetic=QUICK_SET,
        crop=48, val_volumes=1, blocks=2, kernel_size=3, num_arrangements=4,
        activation="gated", gate_sampling="antithetic",
        # half-decades from 1e-4 to 1e-1: at the same ratio the exact-ReLU blocks' cone constraints regularise harder;
        # with [3e-3, 3e-2] they chose the smallest candidate and lost 2 dB to the gated blocks on Poisson, with these
        # they choose 1e-4-3e-4 and gain 1.4 dB over them, and the gated blocks choose 3e-3-1e-1 (docs/benchmarks.md)
        beta_ratio=1e-2, beta_ratios=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1), holdout_volumes=1,
        # 1000: at 200 the gated block 1 (Poisson) stopped at a relative gap of 1.7e-3 (tol 1e-3)
        tol=1e-3, max_iter=1000, solve_chunk_size=None,
        patch_size=16, patches_per_slice=4,
        epochs_end_to_end=6, epochs_layerwise=3, halve_every=10, batch_size=2, cs_lambda_slices=1,
        cs_max_iter=30, cs_lambdas=(1e-3, 1e-2),
        relu=True, conditions=shifted(QUICK_SET),
        unrolled=UnrolledConfig(
            stages=3, activation="gated",
            kernel_size=3, num_arrangements=4, beta_ratios=(3e-3, 3e-2),
            lambdas=(0.01, 0.1, 1.0, 10.0), tol=1e-4, max_iter=200, gated_method="interior_point",
            cg_iterations=5, concat_input=False, epochs_end_to_end=15, epochs_layerwise=10,
            # the stage inputs and CS start of the default (below), CS at this mode's iteration count
            bias=True, shrink=(), cs_iterations=30, cs_lambda="cs",
            cs_inputs=CS_INPUTS, **FALLBACK,
            halve_every=10, lr=1e-3, batch_size=2,
            # end to end, lr 3e-3 reaches within 0.15 dB of the convex network on Poisson by 80 epochs (34.43 dB,
            # seed 0) where 1e-3 stops 0.7 dB below it; it needs ~190 epochs to plateau, which the 5-minute budget
            # does not hold, and its validation PSNR no longer moves after 80 (34.43 at 200, seed 0)
            rule=RuleConfig(lrs=(3e-3, 1e-2), decay_factors=(1.0,), search="grid", max_epochs=80, patience=10,
                            rel_tol=1e-3),
            layerwise_rule=RuleConfig(lrs=(1e-3, 1e-2), decay_factors=(1.0,), search="grid", max_epochs=400,
                                      patience=20, rel_tol=1e-3)),
        # tiny networks: every lr run to a plateau (or 400 epochs) costs seconds
        rule=RuleConfig(lrs=(1e-3, 3e-3, 1e-2), decay_factors=(1.0, 0.0, 10.0), search="lr_then_decay",
                        max_epochs=400, patience=20, rel_tol=1e-3),
        seeds=3,
    ),
    "default": KneeConfig(
        synthetic=DEFAULT_SET,
        crop=80, val_volumes=1, blocks=4, kernel_size=5, num_arrangements=8,
        activation="gated", gate_sampling="antithetic",
        # 3 β candidates; the whole mode (2 seeds, the training rule, the out-of-distribution sets) took 65 minutes
        # on 2 cores shared with other jobs (docs/benchmarks.md §1.1)
        beta_ratio=1e-2, beta_ratios=(3e-3, 1e-2, 3e-2), holdout_volumes=1,
        tol=1e-3, max_iter=500, solve_chunk_size=None,
        patch_size=None, patches_per_slice=1,
        epochs_end_to_end=200, epochs_layerwise=150, halve_every=50, batch_size=2,
        cs_lambda_slices=2, cs_max_iter=100, cs_lambdas=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
        # no exact-ReLU blocks: on whole 80x80 slices the interior point's patch matrix (102,400 x 6,400 float64,
        # ~5 GB) does not fit a 2-core machine and ADMM there takes hours (estimate, docs/benchmarks.md "Exact-ReLU
        # blocks at training scale"); the quick mode has them
        relu=False, conditions=shifted(DEFAULT_SET, coils_other=15),
        # 10 / 6 Adam epochs and 5 CG steps: at 150 / 100 epochs and 10 CG steps one end-to-end epoch on 16 slices
        # takes ~2 min on a 2-core machine (extrapolated from the quick run), hours in all
        unrolled=UnrolledConfig(
            stages=2, activation="gated",
            kernel_size=5, num_arrangements=8, beta_ratios=(1e-3, 1e-2, 1e-1),
            lambdas=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0), tol=1e-4, max_iter=500,
            gated_method="interior_point", cg_iterations=5, concat_input=False,
            # the stages refine CS (run_knee's λ and iteration count) and see a constant channel and the CS
            # images of CS_INPUTS (docs/benchmarks.md); the gain plateaus after 1-2 stages
            bias=True, shrink=(), cs_iterations=100, cs_lambda="cs",
            cs_inputs=CS_INPUTS, **FALLBACK,
            epochs_end_to_end=10, epochs_layerwise=6, halve_every=5, lr=1e-3, batch_size=2,
            rule=RuleConfig(lrs=(1e-3, 3e-3), decay_factors=(1.0,), search="grid", max_epochs=40, patience=10,
                            rel_tol=1e-3),
            layerwise_rule=RuleConfig(lrs=(1e-3, 1e-2), decay_factors=(1.0,), search="grid", max_epochs=300,
                                      patience=20, rel_tol=1e-3)),
        # lr 1e-4 (the paper's) is left out: on 16 slices it needs thousands of epochs to plateau; the quick mode
        # chose 1e-2 or 1e-3 for every Adam network
        rule=RuleConfig(lrs=(1e-3, 1e-2), decay_factors=(1.0, 0.0, 10.0), search="lr_then_decay",
                        max_epochs=300, patience=20, rel_tol=1e-3),
        seeds=2,
    ),
    "full": KneeConfig(
        synthetic=FULL_SET,
        crop=320, val_volumes=1, blocks=4, kernel_size=7, num_arrangements=128,
        activation="gated", gate_sampling="antithetic",
        beta_ratio=1e-3, beta_ratios=(1e-4, 1e-3, 1e-2), holdout_volumes=1,
        tol=1e-4, max_iter=None, solve_chunk_size=8,
        patch_size=None, patches_per_slice=1,
        epochs_end_to_end=40, epochs_layerwise=30, halve_every=10, batch_size=4,
        cs_lambda_slices=4, cs_max_iter=100, cs_lambdas=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
        relu=True, conditions=shifted(FULL_SET, volumes=2, coils_other=8),
        unrolled=UnrolledConfig(
            stages=5, activation="gated",
            kernel_size=7, num_arrangements=32, beta_ratios=(1e-3, 1e-2, 1e-1),
            lambdas=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0), tol=1e-4, max_iter=None,
            gated_method="fista", cg_iterations=10, concat_input=False,
            bias=True, shrink=(), cs_iterations=100, cs_lambda="cs",
            cs_inputs=CS_INPUTS, **FALLBACK,
            epochs_end_to_end=40, epochs_layerwise=30, halve_every=10, lr=1e-3,
            batch_size=2,
            rule=RuleConfig(lrs=(1e-4, 1e-3), decay_factors=(1.0,), search="grid", max_epochs=50, patience=5,
                            rel_tol=1e-3)),
        rule=RuleConfig(lrs=(1e-4, 1e-3), decay_factors=(1.0, 0.0, 10.0), search="lr_then_decay", max_epochs=100,
                        patience=10, rel_tol=1e-3),
    ),
    # one H100/H200 in 8 minutes including data and preprocessing (run_knee.py --config gpu); every reduction from
    # the paper's settings ("full") is listed in REDUCTIONS and printed with the results
    "gpu": KneeConfig(
        synthetic=GPU_SET,
        crop=320, val_volumes=1, blocks=4, kernel_size=7, num_arrangements=32,
        activation="gated", gate_sampling="antithetic",
        beta_ratio=1e-3, beta_ratios=(1e-3, 1e-2), holdout_volumes=1,
        tol=1e-3, max_iter=300, solve_chunk_size=None,
        patch_size=64, patches_per_slice=4,
        epochs_end_to_end=20, epochs_layerwise=15, halve_every=5, batch_size=4,
        cs_lambda_slices=1, cs_max_iter=30, cs_lambdas=(3e-3, 1e-2), cs_val_slices=4,
        allow_tf32=True,
        relu=False, conditions=shifted(GPU_SET, coils_other=8),
        unrolled=UnrolledConfig(
            stages=4, activation="gated",
            kernel_size=5, num_arrangements=16, beta_ratios=(1e-3, 1e-2),
            lambdas=(0.03, 0.3, 3.0), tol=1e-3, max_iter=300, gated_method="fista",
            cg_iterations=5, concat_input=False, epochs_end_to_end=10, epochs_layerwise=5,
            bias=True, shrink=(), cs_iterations=30, cs_lambda="cs",
            cs_inputs=CS_INPUTS, **FALLBACK,
            halve_every=5, lr=1e-3, batch_size=4,
            rule=RuleConfig(lrs=(1e-3,), decay_factors=(1.0,), search="grid", max_epochs=20, patience=4,
                            rel_tol=1e-3)),
        rule=RuleConfig(lrs=(1e-4, 1e-3), decay_factors=(1.0, 0.0), search="lr_then_decay", max_epochs=60,
                        patience=8, rel_tol=1e-3),
    ),
}

REDUCTIONS: dict[str, tuple[str, ...]] = {
    "gpu": (
        "hidden width 64 (P = 32 gated gates) instead of 256 (P = 128): the estimate at 256 is several times the "
        "8-minute budget (docs/benchmarks.md: one 320x320 slice, C_in 256, k 7, P 64 takes ~10 s per solve with TF32)",
        "convex blocks fit on 4 seeded 64x64 windows per training slice instead of whole slices",
        "convex tolerance 1e-3 (max 300 iterations) instead of 1e-4",
        "beta ratio candidates (1e-3, 1e-2) instead of (1e-4, 1e-3, 1e-2)",
        "Adam: 20 end-to-end epochs (lr halved every 5) and 15 per layer-wise block instead of 40 / 30 (every 10)",
        "L1-wavelet CS: 30 iterations, lambda from (3e-3, 1e-2) on 1 training slice, scored on the first 4 "
        "validation slices",
        "TF32 on for every method alike (convex solves, feature computation, both Adam baselines)",
        "40 synthetic slices (5 volumes x 8: 1 validation volume, 4 training volumes = 32 slices, the last held out "
        "for beta selection) instead of 32 training + real data",
        "exact-ReLU blocks (layerwise_convex_relu) left out: an interior-point/ADMM solve at this size does not fit "
        "the budget; the unrolled network reduced to 4 stages of 5x5 gated blocks, P = 16, 5 CG steps, 10 / 5 Adam "
        "epochs (not measured on a GPU)",
    ),
}


def unrolled_variants(text: str) -> list[dict[str, Any]]:
    """A ``--variants`` argument: a JSON list of objects, each overriding settings of :class:`UnrolledConfig`;
    ``ValueError`` naming what was expected otherwise."""
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"expected a JSON list of objects. Got {text!r} ({error}).") from None
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"expected a JSON list of objects. Got {text!r}.")
    unknown = sorted({k for v in variants for k in v} - set(UnrolledConfig.setting_names()))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; expected keys of {UnrolledConfig.setting_names()}.")
    return variants


def hidden_width(cfg: KneeConfig) -> int:
    """Channels of every hidden layer: the most neurons a convex block of ``cfg`` can have."""
    return (2 if cfg.activation == "gated" else 4) * cfg.num_arrangements


def beta_text(cfg: KneeConfig) -> str:
    """How β is set, for the run's description."""
    if cfg.beta_ratios is None:
        return f"beta = {cfg.beta_ratio} beta_max"
    return (f"beta per block chosen from {list(cfg.beta_ratios)} x beta_max by the squared error on the last "
            f"{cfg.holdout_volumes} training volume(s) (held out from the fit; the validation volume is not "
            f"used), then re-solved on all training slices")


def estimate_seconds(cfg: KneeConfig, device: str, masks: int = 2) -> dict[str, float]:
    """A rough upper bound on the wall time of run_knee with ``cfg`` on ``device`` (seconds per phase), from the
    timings in docs/benchmarks.md, the learned methods once per seed: synthesis ~4.8 s per full-size slice per core;
    ESPIRiT + SENSE ~10 s per full-size 15-coil slice on 2 CPU cores (torch ESPIRiT) and an assumed ~1 s on one
    H100/H200; L1-wavelet ~0.29 s per iteration and slice on one core; a gated solve ~10 s per (320x320 slice,
    C_in 256, P 64) at tol 1e-4 with TF32 on an H100 (x6 without TF32), scaled by pixels x C_in x P, assumed x0.5 at
    tol 1e-3, x200 on a CPU; Adam at ~2e13 useful flop/s on a GPU (4e10 on 2 CPU cores), every candidate of the
    training rule run to its maximum of epochs."""
    syn = cfg.synthetic
    n = syn.volumes * syn.slices
    scale = syn.coils * syn.shape[0] * syn.shape[1] / (15 * 640 * 368)
    gpu = device.startswith("cuda")
    cores = os.cpu_count() or 1
    out = {"synthetic data": 4.8 * n * scale / min(cores, syn.volumes)}
    out["preprocessing (both masks)"] = masks * n * scale * (1.0 if gpu else 10.0)
    val = syn.slices * cfg.val_volumes
    cs_val = val if cfg.cs_val_slices is None else min(val, cfg.cs_val_slices)
    cs_slices = cfg.cs_lambda_slices * len(cfg.cs_lambdas) + cs_val
    out["L1-wavelet CS (both masks)"] = (masks * cs_slices * scale * (0.29 * cfg.cs_max_iter + 10.0)
                                         / max(1, min(cores, cs_slices)))
    train = n - val
    side = cfg.patch_size or cfg.crop
    pixels = train * cfg.patches_per_slice * side ** 2 if cfg.patch_size else train * cfg.crop ** 2
    width = hidden_width(cfg)
    solves = len(cfg.beta_ratios or [0]) + 1
    per_solve = [10.0 * pixels / 320 ** 2 * (2 if i == 0 else width) / 256 * cfg.num_arrangements / 64
                 * (1.0 if cfg.tol < 1e-3 else 0.5) * (1.0 if cfg.allow_tf32 else 6.0)
                 for i in range(cfg.blocks)]
    out["convex layer-wise (both masks)"] = masks * solves * sum(per_solve) * (1.0 if gpu else 200.0)
    k = cfg.kernel_size
    flops = 6 * cfg.crop ** 2 * (2 * width * k * k + (cfg.blocks - 1) * width * width * k * k + 2 * width)
    rate = (2e13 if cfg.allow_tf32 else 1e13) if gpu else 4e10
    e2e_runs = 1 + (3 * (train - syn.slices) / train if cfg.beta_ratios else 0)
    e2e_epochs, lw_epochs = e2e_runs * cfg.epochs_end_to_end, cfg.epochs_layerwise
    if cfg.rule:  # an upper bound: every candidate run to its maximum of epochs
        e2e_epochs = lw_epochs = cfg.rule.runs() * cfg.rule.max_epochs
    out["end-to-end Adam (both masks)"] = masks * e2e_epochs * train * flops / rate
    out["layer-wise Adam (both masks)"] = masks * lw_epochs * train * flops / rate * 1.5
    u = cfg.unrolled
    if u:  # ~7e-8 s per (slice, stage, CG step, coil pixel) and Adam epoch on 2 CPU cores (measured on the quick run)
        coil_pixels = syn.coils * syn.shape[0] * syn.shape[1]
        out["unrolled networks (both masks)"] = unrolled_training = (masks * 7e-8 * train * u.stages * u.cg_iterations * coil_pixels
                                                 * (u.epochs_end_to_end + u.epochs_layerwise if u.rule is None
                                                    else u.rule.runs() * u.rule.max_epochs * 1.2)
                                                 * (0.05 if gpu else 1.0))
        # the CS start and CS inputs: computed once for the training slices, the validation slices and the held-out
        # anatomy (about as many slices as validation), shared by the 3 methods; ~2e-8 s per (slice, FISTA step,
        # coil pixel, CS image) on one core, and ~1e-8 s more per further wavelet-grid shift
        scored = train + 2 * val
        out["unrolled networks (both masks)"] += (masks * (2e-8 + 1e-8 * (u.cs_shifts - 1)) * u.cs_iterations
                                                  * coil_pixels * scored * (1 + len(u.cs_inputs))
                                                  * (0.05 if gpu else 1.0))
    if cfg.conditions:  # the out-of-distribution sets: synthesis, ESPIRiT + SENSE, SENSE-CG, 6 CS λ + cycle-spun CS
        # and the unrolled networks' start images, per slice (CS as above, one slice per core)
        per_slice = [c.coils / syn.coils * scale * (4.8 + 10.0 + 0.29 * cfg.cs_max_iter * (6 + cfg.cs_shifts)
                                                    * (0.05 if gpu else 1.0) / max(1, min(cores, 2)))
                     * c.volumes * syn.slices for c in cfg.conditions]
        out["out of distribution (both masks)"] = masks * sum(per_slice)
    if cfg.relu:  # the exact-ReLU solves: ~20x a gated one on the quick run
        out["exact-ReLU layer-wise (both masks)"] = 20 * out["convex layer-wise (both masks)"]
    if cfg.seeds > 1:  # every learned method once per seed (an upper bound: later seeds reuse some choices)
        for key in ("convex layer-wise (both masks)", "end-to-end Adam (both masks)", "layer-wise Adam (both masks)",
                    "exact-ReLU layer-wise (both masks)"):
            if key in out:
                out[key] *= cfg.seeds
        if u:
            out["unrolled networks (both masks)"] += (cfg.seeds - 1) * unrolled_training
    return out
