"""The ``train`` command: train a reconstruction network on a directory of fastMRI files.

    python -m convexrecon train --data DIR --mask poisson|lines --out MODEL_DIR \\
        [--method layerwise_convex|end_to_end|layerwise_adam] [--blocks 4] [--kernel-size 5] ...

The first ``--val-volumes`` volumes (by name) are the validation split, the
rest the training split (:func:`convexrecon.data.splits.stack_split`, shared with
``benchmarks/run_knee.py``). Checkpoints go to ``MODEL_DIR/checkpoints``; the
same command after an interruption resumes. The model is written with
:meth:`~convexrecon.stack.network.ReconNet.save` (``model.pt`` + ``config.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path

import torch

from solvers.report import SolverError

from convexrecon.cli.device import add_device_argument
from convexrecon.io import ensure_writable_dir
from convexrecon.data.dataset import SliceDataset
from convexrecon.data.splits import Split, holdout_mask, stack_split
from convexrecon.data.masks import CENTER_FRACTION, MASK_KINDS

METHODS = ("layerwise_convex", "end_to_end", "layerwise_adam")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train a reconstruction network",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="directory of fastMRI multi-coil .h5 files")
    parser.add_argument("--mask", required=True, choices=[k for k in MASK_KINDS])
    parser.add_argument("--out", type=Path, required=True, help="model directory")
    parser.add_argument("--method", default="layerwise_convex", choices=METHODS)
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--center-fraction", type=float, default=CENTER_FRACTION)
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--val-volumes", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=4, help="K blocks (K + 1 conv layers)")
    parser.add_argument("--kernel-size", type=int, default=5)
    parser.add_argument("--arrangements", type=int, default=8, help="P gates per block")
    parser.add_argument("--activation", default="gated", choices=["gated", "relu"])
    parser.add_argument("--gates", default="antithetic", choices=["antithetic", "gaussian"],
                        help="gate sampling: complementary pairs g, -g (each block then holds every linear "
                             "convolution of its input) or i.i.d.")
    parser.add_argument("--beta-ratio", type=float, default=1e-2, help="beta = ratio * beta_max per block")
    parser.add_argument("--beta-ratios", type=float, nargs="+", default=None, metavar="RATIO",
                        help="candidate ratios instead of --beta-ratio: every block keeps the one whose network best "
                             "predicts the held-out training volumes (--holdout-volumes), then is solved on all")
    parser.add_argument("--holdout-volumes", type=int, default=1,
                        help="with --beta-ratios: the last N training volumes by name score the candidates")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=400)
    parser.add_argument("--patch-size", type=int, default=24, help="0: whole slices")
    parser.add_argument("--patches-per-slice", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="Adam epochs (default 40 end-to-end, 30 per block)")
    parser.add_argument("--halve-every", type=int, default=10,
                        help="epochs between halvings of Adam's learning rate 1e-4 (the seed's 10)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (baselines)")
    parser.add_argument("--seed", type=int, default=0)
    add_device_argument(parser, "device of the preprocessing (ESPIRiT, SENSE) and the training")
    parser.set_defaults(handler=lambda args: run(args, parser))
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``train``; returns the exit code (usage errors exit with 2, training failures with 1)."""
    from convexrecon.stack.layerwise import BlockSettings

    if not (args.data.is_dir() and any(args.data.glob("*.h5"))):
        parser.error(f"argument --data: expected a directory with .h5 files. Got {args.data}.")
    for name in ("blocks", "kernel_size", "arrangements", "max_iter", "batch_size", "patches_per_slice", "halve_every",
                 "epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"argument --{name.replace('_', '-')}: expected an int >= 1. Got {getattr(args, name)}.")
    if args.holdout_volumes < 1:
        parser.error(f"argument --holdout-volumes: expected an int >= 1. Got {args.holdout_volumes}.")
    if args.beta_ratios is not None and not all(r > 0 and math.isfinite(r) for r in args.beta_ratios):
        parser.error(f"argument --beta-ratios: expected finite numbers > 0. Got {args.beta_ratios}.")
    if args.kernel_size % 2 == 0:
        parser.error(f"argument --kernel-size: expected an odd int. Got {args.kernel_size}.")
    if not args.acceleration > 1:
        parser.error(f"argument --acceleration: expected a number > 1. Got {args.acceleration}.")
    for option, directory in (("--out", args.out), ("--data (its preprocessing cache)", args.data / ".cache")):
        try:
            ensure_writable_dir(directory)
        except ValueError as error:
            parser.error(f"argument {option}: {error}")
    try:
        dataset = SliceDataset(args.data, mask=args.mask, acceleration=args.acceleration,
                               center_fraction=args.center_fraction, crop=args.crop, seed=args.seed,
                               cache_dir=args.data / ".cache", device=args.device)
        train, val = stack_split(dataset, args.val_volumes)
        settings = [BlockSettings(kernel_size=args.kernel_size, num_arrangements=args.arrangements,
                                  activation=args.activation, beta_ratio=args.beta_ratio,
                                  beta_ratios=None if args.beta_ratios is None else tuple(args.beta_ratios),
                                  gate_sampling=args.gates,
                                  tol=args.tol, max_iter=args.max_iter)] * args.blocks
        holdout = None
        if args.beta_ratios is not None and args.method == "layerwise_convex":
            holdout = holdout_mask(train.volumes, args.holdout_volumes)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    config = {"data": {**dataset.settings(), "root": str(args.data)}}
    ckpt = args.out / "checkpoints"
    width = (2 if args.activation == "gated" else 4) * args.arrangements
    try:
        net, records = _train(args, train, val, settings, config, ckpt, width, holdout)
    except (ValueError, MemoryError, SolverError) as error:  # refused checkpoint, memory guard, diverged solve
        parser.exit(1, f"{parser.prog}: error: {type(error).__name__}: {error}\n")
    net.save(args.out)
    last = records[-1] if records else {}
    print(json.dumps({"method": args.method, "model": str(args.out), "train_slices": len(train.inputs),
                      "val_slices": len(val.inputs), "val_psnr": last.get("psnr"), "val_ssim": last.get("ssim")}))
    return 0


def _train(args: argparse.Namespace, train: Split, val: Split, settings: list, config: dict, ckpt: Path,
           width: int, holdout: torch.Tensor | None) -> tuple:
    """Run the chosen trainer; returns ``(network, records)``."""
    from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
    from convexrecon.stack.layerwise import train_layerwise
    from convexrecon.stack.network import ReconNet

    if args.method == "layerwise_convex":
        with warnings.catch_warnings():
            warnings.simplefilter("once")
            result = train_layerwise(train.inputs, train.targets, settings, val_inputs=val.inputs,
                                     val_targets=val.targets, val_scales=val.scales, val_volumes=val.volumes,
                                     patch_size=args.patch_size or None, patches_per_slice=args.patches_per_slice,
                                     seed=args.seed, checkpoint_dir=ckpt, progress=True, config=config,
                                     holdout=holdout, device=args.device)
        net, records = result.network, result.records
    elif args.method == "end_to_end":
        net = ReconNet.plain([width] * args.blocks, args.kernel_size, seed=args.seed, config=config)
        records = train_end_to_end(net, train.inputs, train.targets, epochs=args.epochs or 40,
                                   halve_every=args.halve_every, batch_size=args.batch_size,
                                   weight_decay=args.weight_decay, seed=args.seed,
                                   checkpoint_dir=ckpt, validation=val.validation, progress=True,
                                   device=args.device)
    else:
        net, records = train_layerwise_adam(train.inputs, train.targets, [width] * args.blocks, args.kernel_size,
                                            epochs=args.epochs or 30, halve_every=args.halve_every,
                                            batch_size=args.batch_size,
                                            weight_decay=args.weight_decay, seed=args.seed, checkpoint_dir=ckpt,
                                            validation=val.validation, progress=True, device=args.device)
        net.config.update(config)
    return net, records
