"""The ``evaluate`` command: metrics of reconstructions against the data's references.

    python -m convexrecon evaluate --recon OUT_DIR --data DIR

For every ``OUT_DIR/<name>.h5`` (``reconstruction``, ``(slices, H, W)``), the
reference is ``DIR/<name>.h5``'s ``reconstruction_rss``, centre-cropped to the
common size (fastMRI's evaluation). Prints PSNR/SSIM/NMSE tables, slice-wise
and volume-wise (:func:`convexrecon.metrics.evaluate`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from convexrecon.cli.device import add_device_argument
from convexrecon.data.sense import center_crop
from convexrecon.metrics import evaluate


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help="metrics of reconstructions against reconstruction_rss",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--recon", type=Path, required=True, help="directory written by `reconstruct`")
    parser.add_argument("--data", type=Path, required=True, help="directory of the reference .h5 files")
    add_device_argument(parser, "accepted and validated as in the other commands; the metrics are "
                                "computed in NumPy on the host whatever the device")
    parser.set_defaults(handler=lambda args: run(args, parser))
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``evaluate``; returns the exit code (usage errors exit with 2)."""
    for name in ("recon", "data"):
        if not getattr(args, name).is_dir():
            parser.error(f"argument --{name}: expected a directory. Got {getattr(args, name)}.")
    files = sorted(args.recon.glob("*.h5"))
    if not files:
        parser.error(f"argument --recon: no .h5 files in {args.recon}.")
    targets, predictions, volumes = [], [], []
    for path in files:
        reference = args.data / path.name
        if not reference.is_file():
            parser.error(f"argument --data: no reference {path.name} in {args.data}.")
        with h5py.File(path, "r") as rec, h5py.File(reference, "r") as ref:
            if "reconstruction_rss" not in ref:
                parser.error(f"argument --data: {path.name} has no 'reconstruction_rss' dataset.")
            pred, target = np.asarray(rec["reconstruction"]), np.asarray(ref["reconstruction_rss"])
        side = min(pred.shape[-1], pred.shape[-2], target.shape[-1], target.shape[-2])
        pred, target = center_crop(pred, (side, side)), center_crop(target, (side, side))
        for t, p in zip(target, pred):
            targets.append(t)
            predictions.append(p)
            volumes.append(path.name)
    for convention in ("slice", "volume"):
        table = evaluate(targets, predictions, volumes, convention)
        print(f"\nConvention: {convention}-wise; {len(targets)} slices of {len(files)} volume(s); magnitude.\n")
        print("| PSNR (dB) | SSIM | NMSE |\n| --- | --- | --- |")
        print(f"| {table['psnr'].mean:.2f} ± {table['psnr'].std:.2f} | {table['ssim']} | {table['nmse']} |")
    return 0
