"""The trainers of the ``train`` command, one per (method, architecture), and the :class:`Job` they share.

Each trainer takes the :class:`Job` that ``train`` builds once from the flags and the data (splits, block and
Adam settings, stage inputs, run options, the unrolled network's measurements and stage solver) and returns
``(network, records)``; ``train`` prints the records and saves the network. :data:`TRAINERS` maps
``(--method, --architecture)`` to its trainer.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from convexrecon.cli.common import cache_dir_of
from convexrecon.cli.summary import StageSolver, marking_selection_warnings
from convexrecon.data.inputcache import InputCache, cached_initial_estimates
from convexrecon.data.splits import Split
from convexrecon.mri import measured_groups
from convexrecon.stack.adam import AdamSettings
from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import train_layerwise
from convexrecon.stack.modelfiles import LAYERWISE_CNN, UNROLLED
from convexrecon.stack.network import ReconNet
from convexrecon.stack.run import RunOptions
from convexrecon.stack.settings import BlockSettings, ValidationSet
from convexrecon.stack.stage_inputs import StageInputs
from convexrecon.stack.unrolled import UnrolledNet, unrolled_plain
from convexrecon.stack.unrolled_baselines import train_unrolled_end_to_end, train_unrolled_layerwise_adam
from convexrecon.stack.unrolled_train import train_unrolled


@dataclass(frozen=True)
class Job:
    """Everything a trainer of the table needs, built once from the flags and the data."""

    args: argparse.Namespace
    train: Split
    val: Split
    blocks: list[BlockSettings]
    adam: AdamSettings
    stage_inputs: StageInputs
    run: RunOptions
    config: dict[str, Any]
    holdout: torch.Tensor | None = None
    measured: tuple | None = None  # the training and validation slices' MeasuredData (unrolled)
    solver: StageSolver | None = None  # the unrolled stages' gated solver
    notes: dict[str, Any] = field(default_factory=dict)  # what a trainer reports beside its records

    @property
    def validation(self) -> ValidationSet:
        """The validation split (with its measurements for the unrolled architecture)."""
        return ValidationSet(*self.val.validation, data=None if self.measured is None else self.measured[1])

    @property
    def width(self) -> int:
        """Hidden width of every Adam baseline block: the convex block's largest."""
        return self.blocks[0].width

    @property
    def middle_lambda(self) -> float:
        """The Adam baselines' fixed (or initial) data-consistency weight: the middle of ``--lambdas``."""
        return sorted(self.args.lambdas)[len(self.args.lambdas) // 2]



def _convex_cnn(job: Job) -> tuple[Any, list]:
    a = job.args
    with marking_selection_warnings() as failures:
        result = train_layerwise(job.train.inputs, job.train.targets, job.blocks, validation=job.validation,
                                 patch_size=a.patch_size or None, patches_per_slice=a.patches_per_slice,
                                 holdout=job.holdout, solve_progress=a.verbose, config=job.config, run=job.run)
    job.notes["selection"] = failures[0]
    return result.best(keep_all=a.keep_all_blocks), result.records


def _end_to_end_cnn(job: Job) -> tuple[Any, list]:
    net = ReconNet.plain([job.width] * job.args.blocks, job.args.kernel_size, seed=job.args.seed, config=job.config)
    return net, train_end_to_end(net, job.train.inputs, job.train.targets, adam=job.adam, validation=job.validation,
                                 run=job.run)


def _layerwise_adam_cnn(job: Job) -> tuple[Any, list]:
    net, records = train_layerwise_adam(job.train.inputs, job.train.targets, [job.width] * job.args.blocks,
                                        job.args.kernel_size, adam=job.adam, validation=job.validation, run=job.run)
    net.config.update(job.config)
    return net, records


def _convex_unrolled(job: Job) -> tuple[Any, list]:
    with marking_selection_warnings() as failures:
        result = train_unrolled(job.train.inputs, job.train.targets, job.measured[0], job.blocks,
                                lambdas=job.args.lambdas, holdout=job.holdout, validation=job.validation,
                                initial=_starts(job, job.measured[0], "training"),
                                validation_initial=_starts(job, job.measured[1], "validation"),
                                concat_input=not job.args.no_stage_zero_filled, stage_inputs=job.stage_inputs,
                                solve_options={"gated_method": job.solver.method}, config=job.config, run=job.run,
                                keep_start=not job.args.no_keep_start, solve_progress=job.args.verbose,
                                fit_window=job.solver.window if job.args.activation == "gated" else None)
    job.notes["selection"] = failures[0]
    return result.network, result.records


def _starts(job: Job, data: Any, which: str) -> torch.Tensor | None:
    """The convex trainer's start images of ``data`` (its chunks of 4, precision and device) through the cache."""
    net = UnrolledNet([], int(job.train.inputs.shape[-1]), not job.args.no_stage_zero_filled,
                      stage_inputs=job.stage_inputs)
    net.to(job.run.device_of(targets=job.train.targets, kspace=measured_groups(job.measured[0]).groups[0].kspace,
                             inputs=job.train.inputs),
           job.train.inputs.dtype)
    with job.run.precision():
        return cached_initial_estimates(net, data, 4, InputCache(cache_dir_of(job.args)),
                                        f"start images (CS, SENSE-CG), {which}")


def _end_to_end_unrolled(job: Job) -> tuple[Any, list]:
    a = job.args
    net = unrolled_plain(a.blocks, job.width, a.kernel_size, [job.middle_lambda] * a.blocks, a.crop, seed=a.seed,
                         learn_lambda=True, config=job.config, concat_input=not a.no_stage_zero_filled,
                         **job.stage_inputs.options())
    return net, train_unrolled_end_to_end(net, job.train.targets, job.measured[0], adam=job.adam,
                                          validation=job.validation, run=job.run)


def _layerwise_adam_unrolled(job: Job) -> tuple[Any, list]:
    a = job.args
    net, records = train_unrolled_layerwise_adam(job.train.targets, job.measured[0], job.width, a.kernel_size,
                                                 [job.middle_lambda] * a.blocks, adam=job.adam,
                                                 validation=job.validation, concat_input=not a.no_stage_zero_filled,
                                                 stage_inputs=job.stage_inputs, run=job.run)
    net.config.update(job.config)
    return net, records


TRAINERS: dict[tuple[str, str], Callable[[Job], tuple[Any, list]]] = {
    ("layerwise_convex", LAYERWISE_CNN): _convex_cnn,
    ("end_to_end", LAYERWISE_CNN): _end_to_end_cnn,
    ("layerwise_adam", LAYERWISE_CNN): _layerwise_adam_cnn,
    ("layerwise_convex", UNROLLED): _convex_unrolled,
    ("end_to_end", UNROLLED): _end_to_end_unrolled,
    ("layerwise_adam", UNROLLED): _layerwise_adam_unrolled,
}
