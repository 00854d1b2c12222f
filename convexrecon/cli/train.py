"""The ``train`` command: train a reconstruction network on a directory of fastMRI files.

Which network: ``--recommended`` trains the recommended one, the unrolled network that refines
L1-wavelet CS with certified convex stages and data consistency (the benchmark's configuration:
``--architecture unrolled --blocks 2 --cs-start 100 --cs-relative noise --cs-start-lambda 0.5 --cs-inputs
0.15 1.5 0.5:haar 0.5:sym8 --cs-shifts 4 --stage-sense --stage-residual --no-stage-zero-filled --stage-bias
--dc-relative noise``, and ``--cs-clean shrink`` with a Poisson mask: CS and data-consistency weights that follow
each scan's noise level, CS images cycle-spun over 4 wavelet grids, the SENSE-CG image beside the CS images, and
blocks that see how those images differ from the estimate, so that a stage's correction shrinks where they agree).
Without it, ``train`` trains the paper's layer-wise CNN (``--architecture layerwise-cnn``, alias ``seed``), which
stays below CS on these data.

    python -m convexrecon train --data DIR --mask poisson|lines --out MODEL_DIR --recommended
    python -m convexrecon train --data DIR --mask poisson|lines --out MODEL_DIR \\
        [--method layerwise_convex|end_to_end|layerwise_adam] [--architecture layerwise-cnn|unrolled] \\
        [--blocks 4] [--kernel-size 5] ...

The first ``--val-volumes`` volumes (by name) are the validation split, the
rest the training split (:func:`convexrecon.data.splits.stack_split`, shared with
``benchmarks/run_knee.py``). Checkpoints go to ``MODEL_DIR/checkpoints``; the
same command after an interruption resumes. Ctrl-C prints one line,
``interrupted during block k; run the same command to resume`` (exit status
130), and the re-run prints ``resuming after block k-1``. The model is written
with its ``save`` (``model.pt`` + ``config.json``).

With ``layerwise_convex`` the layer-wise CNN keeps the number of blocks with the best
validation PSNR (:meth:`~convexrecon.stack.layerwise.LayerwiseResult.best`; ``--keep-all-blocks``
keeps them all); the summary lists every block's solver status and relative duality gap
against ``--tol`` and says loudly when a block is not certified. Every run ends with a table
of the model and the zero-filled image per validation volume, and one of the model beside
zero-filled, SENSE-CG and L1-wavelet CS on the same slices (:mod:`convexrecon.cli.references`,
cached; ``--no-classical`` skips it), all against one reference: ``--reference rss`` (default)
the files' ``reconstruction_rss``, as ``prepare`` and ``evaluate`` score, or ``sense`` the fully
sampled SENSE image (the training target). A validation file without ``reconstruction_rss`` is refused
before preprocessing, with the flag that scores it.
Preprocessed slices are cached in ``--cache-dir``. The trainers, one per (method, architecture), are in
:mod:`convexrecon.cli.trainers`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any


from solvers.report import SolverError

from convexrecon.block.options import CLI_BETA_RATIO
from convexrecon.cli.common import (
    REFERENCES, HelpFormatter, add_cache_dir, cache_dir_of, finished_blocks, interrupted, output_dir,
)
from convexrecon.cli.device import add_device_argument
from convexrecon.cli.references import no_rss, references_table, rss_references, validation_references
from convexrecon.cli.summary import add_stage_solver, block_summary, comparison, stage_solver
from convexrecon.cli.trainers import TRAINERS, Job
from convexrecon.data.dataset import SliceDataset
from convexrecon.data.fastmri import FastMRIVolume, build_index
from convexrecon.data.inputcache import InputCache, cached_initial_estimates
from convexrecon.data.masks import CENTER_FRACTION, MASK_KINDS
from convexrecon.data.problems import measured_data
from convexrecon.data.splits import holdout_mask, stack_split
from convexrecon.io import ensure_writable_dir
from convexrecon.mri import measured_groups
from convexrecon.stack.adam import END_TO_END_EPOCHS, LAYERWISE_EPOCHS, AdamSettings
from convexrecon.stack.modelfiles import ARCHITECTURE_ALIASES, LAYERWISE_CNN, UNROLLED
from convexrecon.stack.run import RunOptions
from convexrecon.stack.settings import BlockSettings
from convexrecon.stack.stage_inputs import CS_RELATIVE, StageInputs
from convexrecon.stack.unrolled import dc_reference
from convexrecon.stack.unrolled_train import DEFAULT_LAMBDAS

METHODS = ("layerwise_convex", "end_to_end", "layerwise_adam")
UNROLLED_METHOD_NAMES = {"layerwise_convex": "unrolled_convex", "end_to_end": "unrolled_end_to_end",
                         "layerwise_adam": "unrolled_layerwise_adam"}
"""The final summary's name of each trainer of the unrolled network: the benchmark tables' names."""
ARCHITECTURES = (LAYERWISE_CNN, UNROLLED)

# the flag of each library setting, to name it in a usage error the library raised
FLAGS = {"kernel_size": "--kernel-size", "num_arrangements": "--arrangements", "activation": "--activation",
         "beta_ratio": "--beta-ratio", "beta_ratios": "--beta-ratios", "gate_sampling": "--gates", "tol": "--tol",
         "max_iter": "--max-iter", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
         "halve_every": "--halve-every", "weight_decay": "--weight-decay", "shrink": "--stage-shrink",
         "cs_iterations": "--cs-start", "cs_lambda": "--cs-start-lambda", "cs_inputs": "--cs-inputs",
         "cs_relative": "--cs-relative", "sense_input": "--stage-sense", "residual": "--stage-residual",
         "dc_noise": "--dc-relative", "cs_noise": "--cs-clean",
         "cs_shifts": "--cs-shifts",
         "gated_method": "--stage-solver"}


def _architecture(text: str) -> str:
    """``--architecture`` value, the earlier spelling ``seed`` read as ``layerwise-cnn``."""
    return ARCHITECTURE_ALIASES.get(text, text)


def _cs_input(text: str) -> tuple[float, str]:
    """``--cs-inputs`` item ``L`` or ``L:WAVELET`` (:meth:`StageInputs.parse_cs_input`)."""
    try:
        return StageInputs.parse_cs_input(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train a reconstruction network (--recommended: the recommended "
                                   "one, the unrolled network refining CS)",
                                   description=__doc__, formatter_class=HelpFormatter)
    block, adam = BlockSettings(), AdamSettings()  # the library's defaults, shown by --help
    parser.add_argument("--data", type=Path, required=True, help="directory of fastMRI multi-coil .h5 files")
    parser.add_argument("--mask", required=True, choices=[k for k in MASK_KINDS], help="sampling pattern")
    parser.add_argument("--out", type=Path, required=True, help="model directory")
    parser.add_argument("--method", default="layerwise_convex", choices=METHODS, help="trainer")
    parser.add_argument("--recommended", action="store_true",
                        help="train the recommended network: the unrolled network refining L1-wavelet CS, as "
                             f"'{' '.join(_preset_flags())}', and --cs-clean shrink with --mask poisson (flags "
                             "given beside it override --blocks, --cs-start and --cs-inputs)")
    parser.add_argument("--architecture", default=None, type=_architecture, choices=ARCHITECTURES,
                        help="default layerwise-cnn (also 'seed'): the paper's CNN (blocks stacked, skip from the "
                             "input); unrolled (default with --recommended): stages of a block and a data-consistency "
                             "step with the measured k-space (one stage per --blocks)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(DEFAULT_LAMBDAS), metavar="LAMBDA",
                        help="unrolled: candidate weights of every data-consistency step, chosen per stage on the "
                             "last --holdout-volumes training volumes")
    parser.add_argument("--no-stage-zero-filled", action="store_true",
                        help="unrolled: the blocks do not see the zero-filled image (by default every stage's block "
                             "sees the estimate and the zero-filled image)")
    parser.add_argument("--stage-bias", action="store_true",
                        help="unrolled: a constant input channel in every stage's block (scaled with the slice)")
    parser.add_argument("--stage-shrink", type=float, nargs="+", default=[], metavar="T",
                        help="unrolled: for each relative threshold T, the estimate soft-thresholded in the "
                             "Daubechies-4 wavelet domain at T * max|zero-filled| as a further block input "
                             "(e.g. 0.003 0.01 0.03)")
    parser.add_argument("--cs-start", type=int, default=None, metavar="N",
                        help="unrolled: the stages refine N FISTA steps of L1-wavelet CS instead of the zero-filled "
                             "image (default 0: zero-filled; 100 with --recommended)")
    parser.add_argument("--cs-start-lambda", type=float, default=None, metavar="L",
                        help="unrolled: weight of the CS start's L1 term, relative to what --cs-relative names "
                             "(default 0.003 x max|zero-filled|; 0.5 x the noise level with --cs-relative noise "
                             "or --recommended)")
    parser.add_argument("--cs-relative", default=None, choices=CS_RELATIVE,
                        help="unrolled: what the CS weights (--cs-start-lambda, --cs-inputs) multiply: max (the "
                             "slice's max |zero-filled|; default) or noise (the slice's noise level, estimated from "
                             "its outer k-space: the weights then follow the scan's SNR; default with --recommended)")
    parser.add_argument("--dc-relative", default=None, choices=("fixed", "noise"),
                        help="unrolled: the stages' data-consistency weights: fixed (as chosen on the held-out "
                             "slices; default) or noise (each slice's weight times (r / r0)^2, r its noise level over "
                             "its max |zero-filled| and r0 the training slices' median: the MAP weight, so the "
                             "measured data count more on a scan with less noise; default with --recommended)")
    parser.add_argument("--cs-clean", default=None, choices=("keep", "shrink"),
                        help="unrolled: the CS weights of a scan cleaner than the training slices (r < r0, r its "
                             "noise level over its max |zero-filled| and r0 the training slices' median): keep (as "
                             "--cs-relative says; default) or shrink (times r / r0: with Poisson-disc sampling the "
                             "best CS weight falls faster than the noise on clean scans; default with --recommended "
                             "and a Poisson mask)")
    parser.add_argument("--stage-sense", action="store_true",
                        help="unrolled: the unregularised SENSE-CG image as a further block input of every stage, so "
                             "a stage can reproduce it (default with --recommended)")
    parser.add_argument("--cs-shifts", type=int, default=None, metavar="N",
                        help="unrolled, with --cs-start: cycle-spin every CS image over N wavelet-grid shifts (1-8; "
                             "N times the wavelet work per FISTA step, at training and reconstruction; default 1, "
                             "4 with --recommended)")
    parser.add_argument("--stage-residual", action="store_true",
                        help="unrolled: every stage's block sees each further image minus the estimate instead of "
                             "the estimate itself, so its correction shrinks where the reconstructions agree (at "
                             "higher SNR than in training); default with --recommended")
    parser.add_argument("--no-keep-start", action="store_true",
                        help="unrolled, layerwise_convex: do not weigh the identity stage; by default a stage whose "
                             "every candidate scores below its input on the held-out training volumes becomes the "
                             "identity, so the network never scores below its start there")
    parser.add_argument("--cs-inputs", type=_cs_input, nargs="+", default=None, metavar="L[:WAVELET]",
                        help="unrolled, with --cs-start: for each relative weight L (and wavelet, default db4), the CS "
                             "image of --cs-start FISTA steps as a further block input of every stage "
                             "(e.g. 0.001 0.01 0.003:haar 0.003:sym8; default none, those four with --recommended)")
    add_stage_solver(parser)
    parser.add_argument("--acceleration", type=float, default=4.0, help="acceleration > 1")
    parser.add_argument("--center-fraction", type=float, default=CENTER_FRACTION, help="line masks' centre band")
    parser.add_argument("--crop", type=int, default=320, help="image side after cropping")
    parser.add_argument("--val-volumes", type=int, default=1, help="the first N volumes by name validate")
    add_cache_dir(parser)
    parser.add_argument("--blocks", type=int, default=None,
                        help="K blocks (K + 1 conv layers) or unrolled stages (default 4; 2 with --recommended)")
    parser.add_argument("--keep-all-blocks", action="store_true",
                        help="layerwise_convex: keep all K blocks instead of the count with the best validation PSNR")
    parser.add_argument("--kernel-size", type=int, default=block.kernel_size, help="odd k of every k x k layer")
    parser.add_argument("--arrangements", type=int, default=block.num_arrangements, help="P gates per block")
    parser.add_argument("--activation", default=block.activation, choices=["gated", "relu"], help="block activation")
    parser.add_argument("--gates", default=block.gate_sampling, choices=["antithetic", "gaussian"],
                        help="gate sampling: complementary pairs g, -g (each block then holds every linear "
                             "convolution of its input) or i.i.d.")
    parser.add_argument("--beta-ratio", type=float, default=CLI_BETA_RATIO, help="beta = ratio * beta_max per block")
    parser.add_argument("--beta-ratios", type=float, nargs="+", default=None, metavar="RATIO",
                        help="candidate ratios instead of --beta-ratio: every block keeps the one whose network best "
                             "predicts the held-out training volumes (--holdout-volumes), then is solved on all")
    parser.add_argument("--holdout-volumes", type=int, default=1,
                        help="with --beta-ratios: the last N training volumes by name score the candidates")
    parser.add_argument("--tol", type=float, default=1e-3, help="relative duality gap a block solve must reach")
    parser.add_argument("--max-iter", type=int, default=400, help="solver iterations per block")
    parser.add_argument("--patch-size", type=int, default=24, help="0: whole slices")
    parser.add_argument("--patches-per-slice", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"Adam epochs (default {END_TO_END_EPOCHS} end-to-end, {LAYERWISE_EPOCHS} per block)")
    parser.add_argument("--halve-every", type=int, default=adam.halve_every,
                        help=f"epochs between halvings of Adam's learning rate {adam.lr:g} (the paper's 10)")
    parser.add_argument("--batch-size", type=int, default=2, help="Adam batch size (baselines)")
    parser.add_argument("--weight-decay", type=float, default=adam.weight_decay, help="Adam weight decay (baselines)")
    parser.add_argument("--seed", type=int, default=0, help="seeds masks, windows, gates and initialisations")
    parser.add_argument("--verbose", action="store_true", help="also show the progress bars inside every solve")
    parser.add_argument("--no-classical", action="store_true",
                        help="skip the classical references (zero-filled, SENSE-CG, L1-wavelet CS) printed beside the "
                             "model on the validation slices (computed once per data set and cached)")
    parser.add_argument("--reference", choices=REFERENCES, default="rss",
                        help="what the validation tables score against: rss, the files' reconstruction_rss "
                             "(fastMRI's reference, as prepare and evaluate); sense, the fully sampled SENSE image "
                             "(the training target)")
    add_device_argument(parser, "device of the preprocessing (ESPIRiT, SENSE) and the training")
    parser.set_defaults(handler=lambda args: run(args, parser))
    return parser


def library_settings(args: argparse.Namespace, parser: argparse.ArgumentParser
                     ) -> tuple[list[BlockSettings], AdamSettings, StageInputs]:
    """The library's setting objects of the flags; a setting they refuse is a usage error naming its flag."""
    try:
        block = BlockSettings(kernel_size=args.kernel_size, num_arrangements=args.arrangements,
                              activation=args.activation, beta_ratio=args.beta_ratio,
                              beta_ratios=None if args.beta_ratios is None else tuple(args.beta_ratios),
                              gate_sampling=args.gates, tol=args.tol, max_iter=args.max_iter)
        adam = AdamSettings(epochs=args.epochs, batch_size=args.batch_size, halve_every=args.halve_every,
                            weight_decay=args.weight_decay)
        inputs = StageInputs.from_options(bias=args.stage_bias, shrink=tuple(args.stage_shrink),
                                          cs_iterations=args.cs_start, cs_lambda=args.cs_start_lambda,
                                          cs_inputs=tuple(args.cs_inputs), sense_input=args.stage_sense,
                                          cs_relative=args.cs_relative, residual=args.stage_residual,
                                          cs_shifts=args.cs_shifts)
    except ValueError as error:
        names = re.findall(r"'(\w+)'", str(error))
        flag = next((FLAGS[n] for n in names if n in FLAGS), None)
        parser.error(f"argument {flag}: {error}" if flag else str(error))
    return [block] * args.blocks, adam, inputs


RECOMMENDED: dict[str, Any] = {"architecture": UNROLLED, "blocks": 2, "cs_start": 100, "cs_relative": "noise",
                               "cs_start_lambda": 0.5, "cs_inputs": ["0.15", "1.5", "0.5:haar", "0.5:sym8"],
                               "stage_sense": True, "stage_residual": True, "no_stage_zero_filled": True,
                               "stage_bias": True, "cs_shifts": 4, "dc_relative": "noise"}
"""``--recommended``: the default-mode benchmark's unrolled network (benchmarks/kit/configs.py: 2 gated stages, k = 5,
P = 8, refining 100 FISTA steps of CS, a constant channel, four CS images and the SENSE-CG image as inputs, no
zero-filled input, every CS image cycle-spun over 4 wavelet grids, data-consistency weights that follow each scan's
noise level), with this command's own β ratio, λ candidates and tolerance. Its CS weights are multiples of
each scan's noise level: 0.5 σ̂ is where plain L1-wavelet CS (100 FISTA steps, Poisson 4x) peaks on the synthetic
knee and brain families at SNR 10, 25 and 100 alike (0.25-1 σ̂ within 1 dB of the best), while the best multiple of
max |zero-filled| moves 8x over that range (docs/benchmarks.md, "Out of distribution"). With a Poisson mask it also
takes ``--cs-clean shrink`` (:data:`RECOMMENDED_CS_CLEAN`): the best *cycle-spun* weight falls below 0.5 σ̂ on scans
cleaner than the training data (0.29 σ̂ at the training SNR 25, 0.09 σ̂ at SNR 100 on the knee family,
benchmarks/cs_weight_law.py), while with lines it does not."""
RECOMMENDED_CS_CLEAN: dict[str, str] = {"poisson": "shrink"}
"""``--cs-clean`` of ``--recommended`` by ``--mask`` (``keep`` for the others): on lines the best CS weight follows the
aliasing, not the noise (benchmarks/cs_weight_law.py), and the recommended network trained with ``shrink`` there
scored 1.8 and 3.2 dB below cycle-spun CS on brain and knee at 4x the training SNR (docs/benchmarks.md §1.4)."""
PLAIN: dict[str, Any] = {"architecture": LAYERWISE_CNN, "blocks": 4, "cs_start": 0, "cs_inputs": [],
                         "cs_relative": "max", "cs_start_lambda": 0.003, "cs_shifts": 1, "dc_relative": "fixed",
                         "cs_clean": "keep"}
"""The defaults without ``--recommended``: the paper's CNN."""


def _preset_flags() -> list[str]:
    """``--recommended`` as the flags it stands for."""
    flags = []
    for name, value in RECOMMENDED.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else [flag, *(value if isinstance(value, list) else [str(value)])]
    return flags


def apply_preset(args: argparse.Namespace, parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Fill the flags left unset from ``--recommended`` (or from the paper's CNN without it); a usage error when
    ``--recommended`` is given with ``--architecture layerwise-cnn``."""
    if args.recommended and args.architecture not in (None, UNROLLED):
        parser.error(f"argument --recommended: expected without --architecture or with --architecture unrolled (the "
                     f"recommended network is unrolled). Got --architecture {args.architecture}.")
    preset = RECOMMENDED if args.recommended else PLAIN
    if args.cs_start_lambda is None and args.cs_relative == "noise":  # a weight in noise units, not in max units
        args.cs_start_lambda = RECOMMENDED["cs_start_lambda"]
    if args.recommended and args.cs_clean is None:
        args.cs_clean = RECOMMENDED_CS_CLEAN.get(args.mask, "keep")
    for name, value in preset.items():
        if getattr(args, name) is None or getattr(args, name) is False:  # unset (0 is a value: --cs-start 0)
            if name == "cs_inputs" and value:
                value = [_cs_input(text) for text in value]
            setattr(args, name, value)
    return args


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``train``; returns the exit code (usage errors exit with 2, training failures with 1)."""
    apply_preset(args, parser)
    if not (args.data.is_dir() and any(args.data.glob("*.h5"))):
        parser.error(f"argument --data: expected a directory with .h5 files. Got {args.data}.")
    for name in ("blocks", "patches_per_slice", "holdout_volumes"):  # counts no library object holds
        if getattr(args, name) < 1:
            parser.error(f"argument --{name.replace('_', '-')}: expected an int >= 1. Got {getattr(args, name)}.")
    if not args.acceleration > 1:
        parser.error(f"argument --acceleration: expected a number > 1. Got {args.acceleration}.")
    _check_stage_flags(args, parser)
    blocks, adam, stage_inputs = library_settings(args, parser)
    _check_volume_count(args, parser)
    cache_dir = cache_dir_of(args)
    try:
        ensure_writable_dir(cache_dir)
    except ValueError as error:
        parser.error(f"argument --cache-dir: {error}")
    with output_dir(args.out):
        try:
            ensure_writable_dir(args.out)
        except ValueError as error:
            parser.error(f"argument --out: {error}")
        return _run(args, parser, cache_dir, blocks, adam, stage_inputs)


def _check_stage_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The unrolled architecture's flags: refused with the other architecture, and stated in the flags' own terms."""
    if args.architecture != UNROLLED and (args.stage_bias or args.stage_shrink or args.cs_start or args.cs_inputs
                                          or args.no_stage_zero_filled or args.stage_solver != "auto"
                                          or args.stage_sense or args.stage_residual or args.no_keep_start
                                          or args.cs_relative != "max" or args.cs_shifts != 1
                                          or args.dc_relative != "fixed" or args.cs_clean != "keep"):
        parser.error("argument --stage-bias/--stage-shrink/--cs-start/--cs-inputs/--cs-relative/--cs-shifts/"
                     "--dc-relative/--cs-clean/"
                     "--stage-sense/--stage-residual/--stage-solver/--no-stage-zero-filled/--no-keep-start: expected "
                     f"with --architecture unrolled only. Got --architecture {args.architecture}.")
    if not all(t > 0 and math.isfinite(t) for t in args.stage_shrink):
        parser.error(f"argument --stage-shrink: expected finite thresholds > 0. Got {args.stage_shrink}.")
    if args.cs_clean == "shrink" and not args.cs_start:
        parser.error(f"argument --cs-clean: expected shrink with --cs-start N > 0 (it scales the CS weights). Got "
                     f"--cs-start {args.cs_start}.")
    if args.cs_inputs and not args.cs_start:
        parser.error(f"argument --cs-inputs: expected with --cs-start N > 0 (their FISTA steps). Got --cs-inputs "
                     f"{' '.join(f'{lam:g}:{wave}' for lam, wave in args.cs_inputs)} and --cs-start {args.cs_start}.")
    if args.cs_start < 0 or not (args.cs_start_lambda > 0 and math.isfinite(args.cs_start_lambda)):
        parser.error(f"argument --cs-start/--cs-start-lambda: expected an int >= 0 and a finite number > 0. Got "
                     f"{args.cs_start} and {args.cs_start_lambda}.")


def _choosing(args: argparse.Namespace) -> bool:
    """Whether training chooses among candidates on held-out training volumes (β ratios, or the unrolled λ)."""
    return args.method == "layerwise_convex" and (args.beta_ratios is not None or args.architecture == UNROLLED)


def _check_volume_count(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse too few volumes before any preprocessing (validation + training (+ held-out) need one each), a
    validation file without ``reconstruction_rss`` under ``--reference rss``, and for the unrolled network trained by
    Adam, files of more than one k-space grid (it batches the slices through the DC steps; coil counts may differ;
    the convex trainer keeps each grid's slices apart)."""
    try:
        paths = sorted({path for path, _ in build_index(args.data)})
    except ValueError as error:
        parser.error(f"argument --data: {error}")
    count = len(paths)
    if args.reference == "rss":  # the validation volumes (the first by name) must hold the reference
        for path in paths[:max(args.val_volumes, 0)]:
            if not FastMRIVolume(path).has_rss:
                parser.error(no_rss(Path(path).name))
    if args.architecture == UNROLLED and args.method != "layerwise_convex":
        grids: dict[tuple[int, int], list[str]] = {}
        for path in paths:
            grids.setdefault(tuple(FastMRIVolume(path).shape[-2:]), []).append(Path(path).name)
        if len(grids) > 1:
            found = "; ".join(f"{h}x{w}: {len(names)} file(s), e.g. {names[0]}"
                              for (h, w), names in sorted(grids.items()))
            parser.error(f"argument --data: expected files of one k-space grid (H x W) for --method {args.method} "
                         f"--architecture unrolled (Adam batches the slices through the data-consistency steps; coil "
                         f"counts may differ; the convex method takes several grids). Got {found}. Put the files of "
                         "one grid in a directory of their own.")
    holdout = args.holdout_volumes if _choosing(args) else 0
    needed = args.val_volumes + 1 + holdout
    if args.val_volumes < 1 or count < needed:
        what = f"--val-volumes ({args.val_volumes}) for validation, " + (
            f"--holdout-volumes ({holdout}) to choose beta, " if holdout else "")
        parser.error(f"argument --data: expected at least {needed} readable volumes ({what}at least one to train "
                     f"on). Got {count} in {args.data}.")


def _grid_line(measured: tuple[Any, Any]) -> str | None:
    """One line naming the k-space grids of the training and validation slices when there are several (None
    otherwise): each grid keeps its own data-consistency steps and CS images."""
    counts: dict[tuple[int, int], int] = {}
    for data in measured:
        for group in measured_groups(data).groups:
            grid = tuple(group.kspace.shape[-2:])
            counts[grid] = counts.get(grid, 0) + len(group)
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{h}x{w} ({n} slice{'s' * (n != 1)})" for (h, w), n in sorted(counts.items()))
    return (f"k-space grids: {listed}; each grid keeps its own data-consistency steps and CS images, the blocks see "
            "the common crop")


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, cache_dir: Path, blocks: list[BlockSettings],
         adam: AdamSettings, stage_inputs: StageInputs) -> int:
    phase = ["preprocessing (the slices done stay cached)"]  # _train says when training starts
    try:
        return _train(args, parser, cache_dir, blocks, adam, stage_inputs, phase)
    except KeyboardInterrupt:  # Ctrl-C: one line and the block to resume after, not a traceback
        if phase[0] != "training":
            raise interrupted(phase[0]) from None
        if args.method != "layerwise_convex":
            raise interrupted("training") from None
        unit = "stage" if args.architecture == UNROLLED else "block"
        raise interrupted(f"{unit} {finished_blocks(args.out / 'checkpoints') + 1}") from None


def _resume_line(args: argparse.Namespace) -> str | None:
    """What a run finds in its checkpoint directory: ``resuming after block k``, or None for a fresh run."""
    directory = args.out / "checkpoints"
    if args.method == "layerwise_convex":
        done = finished_blocks(directory)
        unit = "stage" if args.architecture == UNROLLED else "block"
        return f"resuming after {unit} {done} (checkpoints in {directory})" if done else None
    if directory.is_dir() and any(directory.glob("*.pt")):
        return f"resuming from the checkpoints in {directory}"
    return None


def _train(args: argparse.Namespace, parser: argparse.ArgumentParser, cache_dir: Path, blocks: list[BlockSettings],
           adam: AdamSettings, stage_inputs: StageInputs, phase: list[str]) -> int:
    try:
        dataset = SliceDataset(args.data, mask=args.mask, acceleration=args.acceleration,
                               center_fraction=args.center_fraction, crop=args.crop, seed=args.seed,
                               cache_dir=cache_dir, device=args.device)
        train, val = stack_split(dataset, args.val_volumes)
        # the validation reference, read before training so that a file without one stops the run at once
        references = (rss_references(dataset, val.pairs, int(val.inputs.shape[-1])) if args.reference == "rss"
                      else None)
        holdout = holdout_mask(train.volumes, args.holdout_volumes) if _choosing(args) else None
        measured, solver = None, None
        if args.architecture == UNROLLED:  # the measured k-space and full-grid maps of every slice
            measured = tuple(measured_data(dataset, split.pairs)[0] for split in (train, val))
            grids = _grid_line(measured)
            if grids:
                print(grids, flush=True)
            if args.method == "layerwise_convex":
                solver = stage_solver(args.stage_solver, len(train.inputs), int(train.inputs.shape[-1]),
                                      stage_inputs.channels(not args.no_stage_zero_filled), args.kernel_size,
                                      args.arrangements)
        reference = dc_reference(measured[0]) if measured is not None and (
            args.dc_relative == "noise" or args.cs_clean == "shrink") else None
        if reference is not None and args.dc_relative == "noise":  # the noise level at which the DC weights hold
            stage_inputs = dataclasses.replace(stage_inputs, dc_noise=reference)
            print(f"data-consistency weights relative to each slice's noise: they hold at noise / max|zero-filled| "
                  f"= {reference:.4g} (the median of the {len(train.inputs)} training slices)", flush=True)
        if reference is not None and args.cs_clean == "shrink":  # the noise level below which CS weights shrink
            stage_inputs = dataclasses.replace(stage_inputs, cs_noise=reference)
            print(f"CS weights of a slice cleaner than noise / max|zero-filled| = {reference:.4g} shrink with its "
                  f"noise level", flush=True)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    split = {"training": sorted(set(train.volumes)), "validation": sorted(set(val.volumes))}
    if holdout is not None:  # training volumes that also chose β / λ
        split["held_out"] = sorted({v for v, held in zip(train.volumes, holdout.tolist()) if held})
    job = Job(args, train, val, blocks, adam, stage_inputs,
              RunOptions(seed=args.seed, checkpoint_dir=args.out / "checkpoints", progress=True, device=args.device),
              {"data": {**dataset.settings(), "root": str(args.data)}, "split": split}, holdout, measured, solver)
    if solver is not None and args.activation == "gated":
        print(solver.line(), flush=True)
    resume = _resume_line(args)
    if resume:
        print(resume, flush=True)
    phase[0] = "training"
    try:
        net, records = TRAINERS[args.method, args.architecture](job)
    except (ValueError, MemoryError, SolverError) as error:  # refused checkpoint, memory guard, diverged solve
        parser.exit(1, f"{parser.prog}: error: {type(error).__name__}: {error}\n")
    net.save(args.out)
    method = UNROLLED_METHOD_NAMES[args.method] if args.architecture == UNROLLED else args.method
    summary = {"method": method, "architecture": args.architecture, "model": str(args.out),
               "train_slices": len(train.inputs),
               "val_slices": len(val.inputs)}
    if args.method == "layerwise_convex":
        kept = net.num_blocks if measured is None else len(net.stages)
        print(block_summary([{**r, "block": r.get("block", r.get("stage"))} for r in records], kept, args.tol,
                            max_iter=args.max_iter, solver=solver if args.activation == "gated" else None,
                            crop=int(train.inputs.shape[-1]), selection_failures=job.notes.get("selection", 0)))
        if solver is not None:
            summary["stage_solver"] = solver.method
    starts = None if measured is None else cached_initial_estimates(net, measured[1], 4, InputCache(cache_dir),
                                                                    "start images (CS, SENSE-CG), validation")
    summary.update(comparison(net, val, None if measured is None else measured[1], starts, references,
                              args.reference))
    if not args.no_classical:
        refs = validation_references(dataset, val.pairs, cache_dir, references=references)
        print(references_table(summary, refs, args.reference) + "\n")
        summary.update({f"{m.lower().replace('-', '_')}_psnr": refs["table"][m]["slice"]["psnr"]["mean"]
                        for m in ("SENSE-CG", "L1-wavelet")})
    print(json.dumps(summary))
    return 0
