"""The ``reconstruct`` command: apply a saved model to fastMRI multi-coil files.

    python -m convexrecon reconstruct --model MODEL_DIR --data DIR_OR_FILE --out OUT_DIR [--crop N]

Writes one HDF5 file per input volume, same name, with a ``reconstruction``
dataset ``(slices, crop, crop)`` float32 magnitude at physical scale (fastMRI's
submission layout, readable by fastMRI's ``evaluate.py``), the zero-filled SENSE
magnitude the network was given (``zero_filled``) and, as attributes, the crop,
the sampling used and each slice's ESPIRiT calibration width.

Sampling: a file that is already undersampled keeps its own sampling and is never
undersampled again: its ``mask`` dataset (fastMRI's test split), or, without one,
the zero pattern of its k-space (more than 1 % of the positions exactly zero in
every coil, e.g. fastMRI challenge files). Only fully sampled files are
undersampled retrospectively with the model's training mask (``config.json``,
per-slice seeds of :class:`~convexrecon.data.masks.MaskFunc`). Each file's
sampling is printed; a warning says when it differs from the training one.

Crop: ``--crop``, else the side of the file's ``reconstruction_rss`` (what
fastMRI's evaluation compares against), else the model's training crop. ESPIRiT
maps are cached (``--cache-dir``) and reused by later runs; so are an unrolled
network's start images (its CS and SENSE-CG images, most of its time per slice:
:class:`~convexrecon.data.inputcache.InputCache`), so that reconstructing the same
data again gives the same images bit for bit in a fraction of the time.

Ctrl-C prints one line (the file and slice it stopped in, which output files are
complete) and exits with status 130. Each output file is written to a temporary
name and renamed when complete, so none is left half-written; running the same
command again reconstructs every file (the ESPIRiT maps done are read from the cache).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from convexrecon.cli.common import (
    HelpFormatter, Progress, add_cache_dir, cache_dir_of, on_interrupt, output_dir, written_files,
)
from convexrecon.cli.device import add_device_argument
from convexrecon.data.fastmri import FastMRIVolume, list_volumes
from convexrecon.data.inputcache import InputCache
from convexrecon.data.mapcache import MapCache
from convexrecon.mri.espirit import calibration_width
from convexrecon.errors import DataWarning
from convexrecon.io import atomic_path, ensure_writable_dir
from convexrecon.recon import mask_func_of, model_crop, reconstruct_slice, volume_sampling


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("reconstruct", help="reconstruct fastMRI files with a saved model",
                                   description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="directory written by `train`")
    parser.add_argument("--data", type=Path, required=True, help="a fastMRI .h5 file or a directory of them")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--crop", type=int, default=None,
                        help="output side; default: the side of the file's reconstruction_rss, else the model's "
                             "training crop")
    add_cache_dir(parser)
    parser.add_argument("--verbose", action="store_true", help="one progress bar per volume instead of one in all")
    add_device_argument(parser, "device of ESPIRiT, the SENSE images and the network")
    parser.set_defaults(handler=lambda args: run(args, parser))
    return parser


def _open_volumes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[FastMRIVolume]:
    """The readable volumes of ``--data``; unreadable files of a directory are skipped with a warning."""
    if args.data.is_file():
        try:
            return [FastMRIVolume(args.data)]
        except ValueError as error:
            parser.error(f"argument --data: {error}")
    if not args.data.is_dir():
        parser.error(f"argument --data: expected a .h5 file or a directory. Got {args.data}.")
    try:
        files = list_volumes(args.data)
    except ValueError as error:
        parser.error(f"argument --data: {error}")
    volumes = []
    for path in files:
        try:
            volumes.append(FastMRIVolume(path))
        except ValueError as error:
            warnings.warn(f"Skipping a file of '{args.data}': {error}", DataWarning, stacklevel=2)
    if not volumes:
        parser.error(f"argument --data: no readable fastMRI file in {args.data}.")
    return volumes


def _reference_side(volume: FastMRIVolume) -> int | None:
    """The side fastMRI's evaluation crops to: the last axis of ``reconstruction_rss`` (None without one)."""
    if not volume.has_rss:
        return None
    with h5py.File(volume.path, "r") as handle:
        return int(handle["reconstruction_rss"].shape[-1])


def _crop_of(args: argparse.Namespace, parser: argparse.ArgumentParser, volume: FastMRIVolume, trained: int) -> int:
    height, width = volume.shape[-2:]
    reference = _reference_side(volume)
    if args.crop is not None:
        crop = args.crop
        if not 1 <= crop <= min(height, width):
            parser.error(f"argument --crop: expected an int in [1, {min(height, width)}] (the k-space image "
                         f"{height}x{width} of {volume.path.name}). Got {crop}.")
    elif reference is not None and reference <= min(height, width):
        crop = reference
    else:
        crop = min(trained, height, width)
    if reference is not None and crop < reference:
        warnings.warn(f"{volume.path.name}: reconstructions of {crop}x{crop} are smaller than its "
                      f"reconstruction_rss ({reference} wide): fastMRI's evaluate.py cannot score them and "
                      f"`convexrecon evaluate` refuses them; pass --crop {reference}.", DataWarning, stacklevel=2)
    return crop


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``reconstruct``; returns the exit code (usage errors exit with 2, Ctrl-C with 130)."""
    progress = Progress("reconstruct (reading the model and the input files)", "nothing was written",
                        "redo it (the ESPIRiT maps done stay cached)")
    with on_interrupt(progress):
        return _run(args, parser, progress)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, progress: Progress) -> int:
    from convexrecon.stack.persist import load_network

    if not args.model.is_dir():
        state = "does not exist" if not args.model.exists() else "is not a directory"
        parser.error(f"argument --model: expected the directory `train --out` wrote. Got '{args.model}', which {state}.")
    try:
        net = load_network(args.model, map_location=args.device)
    except (FileNotFoundError, ValueError) as error:
        parser.error(f"argument --model: {error}")
    volumes = _open_volumes(args, parser)
    with output_dir(args.out):
        try:
            ensure_writable_dir(args.out)
        except ValueError as error:
            parser.error(f"argument --out: {error}")
        return _reconstruct(args, parser, net, volumes, progress)


def _reconstruct(args: argparse.Namespace, parser: argparse.ArgumentParser, net, volumes: list,
                 progress: Progress) -> int:
    mask_func = mask_func_of(net.config)
    trained = model_crop(net, volumes[0].shape[-2:])
    unrolled = getattr(net, "needs_measurements", False)
    inputs = InputCache(cache_dir_of(args)) if unrolled else None
    cache = inputs.map_cache if inputs is not None else MapCache(cache_dir_of(args))
    net.eval()
    print(f"model: {args.model} (trained on {mask_func.kind} masks, {mask_func.acceleration:g}x, crop {trained}); "
          f"ESPIRiT maps cached in {cache.directory}", flush=True)
    plans = []
    for volume in volumes:
        try:
            sampling = volume_sampling(volume, mask_func, cache_dir_of(args))
        except ValueError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        crop = _crop_of(args, parser, volume, trained)
        own = sampling.source != "model mask"
        print(f"{volume.path.name}: {volume.num_slices} slices, k-space {volume.shape[-2]}x{volume.shape[-1]}, "
              f"crop {crop}; sampling: {sampling.describe()}"
              + (" (the file's own sampling; not undersampled again)" if own else
                 " (fully sampled file, undersampled retrospectively)"), flush=True)
        mismatch = sampling.mismatch(mask_func)
        if mismatch:
            warnings.warn(f"{volume.path.name}: {mismatch}; expect worse reconstructions than on validation.",
                          DataWarning, stacklevel=2)
        if crop != trained:
            warnings.warn(f"{volume.path.name}: the model was trained on {trained}x{trained} crops and is applied "
                          f"at {crop}x{crop} (the network is convolutional; pass --crop {trained} for the training "
                          f"size).", DataWarning, stacklevel=2)
        plans.append((volume, sampling, crop))
    total = sum(v.num_slices for v, _, _ in plans)
    written: list[str] = []
    progress.kept = written_files(args.out, written, len(plans))
    bar = tqdm(total=total, desc="reconstructing slices", unit="slice", disable=args.verbose)
    try:
        for number, (volume, sampling, crop) in enumerate(plans, 1):
            recon, zero, widths = _volume(args, parser, net, volume, sampling, crop, mask_func, cache, inputs, bar,
                                          progress, f"file {number} of {len(plans)}")
            progress.during = f"reconstruct (writing {volume.path.name}, file {number} of {len(plans)})"
            with atomic_path(args.out / volume.path.name) as tmp, h5py.File(tmp, "w") as handle:
                handle.create_dataset("reconstruction", data=np.stack(recon))
                handle.create_dataset("zero_filled", data=np.stack(zero))
                handle.attrs["model"] = str(args.model)
                handle.attrs["crop"] = crop
                handle.attrs["sampling"] = sampling.describe()
                handle.attrs["calib_width"] = np.asarray(widths, dtype=np.int64)
            written.append(volume.path.name)
            progress.kept = written_files(args.out, written, len(plans))
    finally:
        bar.close()
    starts = "" if inputs is None else (f"; start images of the unrolled network: {inputs.computed} computed, "
                                        f"{inputs.reused} reused")
    print(f"{len(plans)} volume(s) reconstructed into {args.out} (ESPIRiT maps: {cache.computed} estimated, "
          f"{cache.reused} reused from the cache{starts})")
    return 0


def _volume(args: argparse.Namespace, parser: argparse.ArgumentParser, net, volume: FastMRIVolume, sampling,
            crop: int, mask_func, cache: MapCache, inputs: InputCache | None, bar, progress: Progress, which: str
            ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """The magnitude reconstructions, zero-filled inputs and calibration widths of every slice of one volume;
    ``inputs``: the cache of an unrolled network's full-grid maps and start images (None for the layer-wise CNN,
    whose cropped maps ``cache`` holds)."""
    recon, zero, widths = [], [], []
    try:
        for s in tqdm(range(volume.num_slices), desc=volume.path.name, unit="slice", disable=not args.verbose):
            progress.during = f"reconstruct of {volume.path.name} (slice {s + 1} of {volume.num_slices}, {which})"
            kspace = volume.kspace(s)
            mask = sampling.mask(kspace, volume, s, mask_func, cache_dir_of(args))
            limit = mask_func.calibration_limit(mask.shape)
            masked = kspace * mask
            # an unrolled network needs full-grid maps for its data consistency
            maps = cache.maps(volume.path, s, masked, mask, limit, crop) if inputs is None else \
                inputs.maps(volume.path, s, masked, mask, limit)
            image, zero_filled = reconstruct_slice(net, masked, mask, crop=crop, maps=maps, return_input=True,
                                                   device=args.device, cache=inputs)
            recon.append(image.abs().numpy().astype(np.float32))
            zero.append(zero_filled.abs().numpy().astype(np.float32))
            widths.append(calibration_width(mask, limit))
            bar.update(1)
    except (ValueError, OSError) as error:  # NaN/Inf k-space, unreadable slice, no calibration region
        bar.close()
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    return recon, zero, widths
