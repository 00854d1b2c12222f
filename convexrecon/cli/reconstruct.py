"""The ``reconstruct`` command: apply a saved model to fastMRI multi-coil files.

    python -m convexrecon reconstruct --model MODEL_DIR --data DIR_OR_FILE --out OUT_DIR

Writes one HDF5 file per input volume, same name, with a ``reconstruction``
dataset ``(slices, crop, crop)`` float32 magnitude at physical scale (fastMRI's
submission layout). A file with a ``mask`` dataset (fastMRI's test split) is
used as undersampled; otherwise the model's training mask settings
(``config.json``) undersample it retrospectively, with the per-slice seeds of
:class:`~convexrecon.data.masks.MaskFunc`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from convexrecon.cli.device import add_device_argument
from convexrecon.io import atomic_path, ensure_writable_dir
from convexrecon.data.fastmri import FastMRIVolume, list_volumes
from convexrecon.recon import mask_func_of, reconstruct_slice, volume_masks


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("reconstruct", help="reconstruct fastMRI files with a saved model",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="directory written by `train`")
    parser.add_argument("--data", type=Path, required=True, help="a .h5 file or a directory of them")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    add_device_argument(parser, "device of ESPIRiT, the SENSE images and the network")
    parser.set_defaults(handler=lambda args: run(args, parser))
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``reconstruct``; returns the exit code (usage errors exit with 2)."""
    from convexrecon.stack.persist import load_network

    try:
        net = load_network(args.model, map_location=args.device)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"argument --model: {error}")
    if args.data.is_file():
        files = [args.data]
    elif args.data.is_dir():
        try:
            files = list_volumes(args.data)
        except ValueError as error:
            parser.error(f"argument --data: {error}")
    else:
        parser.error(f"argument --data: expected a .h5 file or a directory. Got {args.data}.")
    try:
        ensure_writable_dir(args.out)
    except ValueError as error:
        parser.error(f"argument --out: {error}")
    mask_func = mask_func_of(net.config)
    net.eval()
    for path in tqdm(files, desc="volumes", unit="volume"):
        try:
            volume = FastMRIVolume(path)
        except ValueError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        try:
            masks = volume_masks(volume, mask_func)
            slices = [reconstruct_slice(net, volume.kspace(s), masks[s], args.device).abs().numpy().astype(np.float32)
                      for s in tqdm(range(volume.num_slices), desc=path.name, unit="slice", leave=False)]
        except (ValueError, OSError) as error:  # NaN/Inf k-space, unreadable slice or mask
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        with atomic_path(args.out / path.name) as tmp, h5py.File(tmp, "w") as handle:
            handle.create_dataset("reconstruction", data=np.stack(slices))
            handle.attrs["model"] = str(args.model)
    print(f"{len(files)} volume(s) reconstructed into {args.out}")
    return 0
