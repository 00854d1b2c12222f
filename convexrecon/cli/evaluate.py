"""The ``evaluate`` command: metrics of reconstructions, and of zero-filling, against one reference.

    python -m convexrecon evaluate --recon OUT_DIR --data DIR [--reference rss|sense]

For every ``OUT_DIR/<name>.h5`` written by ``reconstruct`` the reference comes from
``DIR/<name>.h5``:

* ``rss`` (default, fastMRI's convention): ``reconstruction_rss`` cropped to
  ``(W, W)`` with ``W`` its last axis, the reconstruction cropped to the same
  size, as fastMRI's ``evaluate.py`` does; reconstructions smaller than the
  reference are refused (``reconstruct --crop W``);
* ``sense``: the fully sampled SENSE image with the package's ESPIRiT maps (the
  training target and ``prepare``'s reference), at the reconstruction's size;
  needs fully sampled k-space.

Prints one row per file (volume-wise: data range = the volume's maximum, SSIM the
mean over its slices, fastMRI's numbers), its last column saying what the file was to
the model (``training``, ``validation`` or ``unseen``, from the split ``train`` records
in the model's ``config.json``; training files score optimistically), for the model, the zero-filled SENSE image
it was given, SENSE-CG and L1-wavelet CS (each file undersampled as ``reconstruct``
did, the CS λ chosen on the other files; computed once and cached,
:mod:`convexrecon.cli.references`; ``--no-classical`` skips them), then the mean over
files and the slice-wise means.

When ``--reference`` cannot score every file, one error says what to run instead: the
other reference when it scores them all, else which files each one can score. Ctrl-C
prints one line (what it stopped in; ``evaluate`` writes no file, the ESPIRiT maps done
stay cached) and exits with status 130.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from convexrecon.cli.common import (REFERENCE_TEXT, REFERENCES, HelpFormatter, Progress, add_cache_dir, cache_dir_of,
                                    markdown_table, on_interrupt)
from convexrecon.cli.device import add_device_argument
from convexrecon.mri.fft import center_crop
from convexrecon.metrics import evaluate


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help="metrics of reconstructions and zero-filling against a reference",
                                   description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--recon", type=Path, required=True, help="directory written by `reconstruct`")
    parser.add_argument("--data", type=Path, required=True, help="directory of the data .h5 files (references)")
    parser.add_argument("--reference", choices=REFERENCES, default="rss",
                        help="rss: the files' reconstruction_rss (fastMRI); sense: fully sampled SENSE (the "
                             "package's training target)")
    parser.add_argument("--no-classical", action="store_true",
                        help="skip the SENSE-CG and L1-wavelet CS columns (computed once per file set with each "
                             "file's sampling, and cached)")
    add_cache_dir(parser)
    add_device_argument(parser, "accepted and validated as in the other commands; the metrics are "
                                "computed in NumPy on the host whatever the device")
    parser.set_defaults(handler=lambda args: run(args, parser))
    return parser


def _keys(path: Path) -> set[str]:
    try:
        with h5py.File(path, "r") as handle:
            return set(handle.keys())
    except (OSError, ValueError):
        return set()


def _check_roles(args: argparse.Namespace, parser: argparse.ArgumentParser, files: list[Path]) -> None:
    """Refuse --recon / --data given the other way round (recon files: 'reconstruction', no 'kspace')."""
    recon_keys = _keys(files[0])
    if "reconstruction" in recon_keys and "kspace" not in recon_keys:
        return
    data_files = sorted(args.data.glob("*.h5"))
    data_keys = _keys(data_files[0]) if data_files else set()
    swapped = "kspace" in recon_keys and "reconstruction" in data_keys and "kspace" not in data_keys
    hint = " The two directories look swapped: pass --recon OUT_DIR --data DATA_DIR." if swapped else ""
    parser.error(f"argument --recon: expected files written by `reconstruct` (a 'reconstruction' dataset, no "
                 f"'kspace'). Got {files[0].name} with {sorted(recon_keys)}.{hint}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``evaluate``; returns the exit code (usage errors exit with 2, Ctrl-C with 130)."""
    progress = Progress("evaluate (reading the files)", "evaluate writes no file; the ESPIRiT maps done stay cached")
    with on_interrupt(progress):
        return _run(args, parser, progress)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, progress: Progress) -> int:
    for name in ("recon", "data"):
        if not getattr(args, name).is_dir():
            parser.error(f"argument --{name}: expected a directory. Got {getattr(args, name)}.")
    files = sorted(p for p in args.recon.glob("*.h5") if not p.name.startswith("."))
    if not files:
        parser.error(f"argument --recon: no .h5 files in {args.recon}.")
    _check_roles(args, parser, files)
    _check_references(args, parser, files)
    rows, per_file, references, model_dirs = [], [], {}, set()
    all_targets, all_model, all_zero, all_names = [], [], [], []
    for number, path in enumerate(files, 1):
        progress.during = f"evaluate (scoring {path.name}, file {number} of {len(files)})"
        reference = args.data / path.name
        with h5py.File(path, "r") as rec:
            pred = np.asarray(rec["reconstruction"])
            zero = np.asarray(rec["zero_filled"]) if "zero_filled" in rec else None
            widths = rec.attrs.get("calib_width")
            model_dirs.add(str(rec.attrs.get("model", "")))
        if args.reference == "rss":
            target = _rss(parser, reference, pred)
        else:
            target = _sense(args, parser, reference, pred, widths)
        side = target.shape[-2:]
        references[path.name] = np.asarray(target)
        pred = center_crop(pred, side)
        zero = None if zero is None else center_crop(zero, side)
        model = evaluate(list(target), list(pred), [path.name] * len(target), "volume")
        cells = [path.name, str(len(target)), *_cells(model)]
        cells += _cells(evaluate(list(target), list(zero), [path.name] * len(target), "volume")) if zero is not None \
            else ["–"] * 3
        rows.append(cells)
        per_file.append(side)
        all_targets += list(target)
        all_model += list(pred)
        all_zero += list(zero) if zero is not None else [None] * len(target)
        all_names += [path.name] * len(target)
    sizes = sorted({f"{h}x{w}" for h, w in per_file})
    print(f"Reference: {args.reference} = {REFERENCE_TEXT[args.reference]}; scored on the central "
          f"{', '.join(sizes)} of the reconstructions; magnitude images.\n"
          f"Per file: volume-wise (fastMRI's convention: data range = the volume's maximum, SSIM averaged over "
          f"its slices). zero-filled = the zero-filled SENSE image the model was given.\n")
    have_zero = all(z is not None for z in all_zero)
    overall = {"volume": evaluate(all_targets, all_model, all_names, "volume"),
               "slice": evaluate(all_targets, all_model, all_names, "slice")}
    zero_overall = {c: evaluate(all_targets, all_zero, all_names, c) for c in ("volume", "slice")} if have_zero \
        else None
    rows.append([f"mean over {len(files)} file(s)", str(len(all_targets)), *_cells(overall["volume"]),
                 *(_cells(zero_overall["volume"]) if zero_overall else ["–"] * 3)])
    rows.append(["slice-wise mean (data range per slice)", str(len(all_targets)), *_cells(overall["slice"]),
                 *(_cells(zero_overall["slice"]) if zero_overall else ["–"] * 3)])
    header = ["file", "slices", "model PSNR (dB)", "model SSIM", "model NMSE",
              "zero-filled PSNR (dB)", "zero-filled SSIM", "zero-filled NMSE"]
    roles, role_note = _roles(model_dirs, [p.name for p in files])
    progress.during = "evaluate (the SENSE-CG and L1-wavelet references)"
    classical = None if args.no_classical else _classical(args, references, model_dirs)
    if isinstance(classical, dict):
        header += ["SENSE-CG PSNR (dB)", "SENSE-CG SSIM", "L1-wavelet PSNR (dB)", "L1-wavelet SSIM"]
        for row, key in zip(rows, [*references, ("__overall__", "volume"), ("__overall__", "slice")]):
            name, convention = key if isinstance(key, tuple) else (key, "volume")
            row += [f"{classical['files'][name][m][convention][k]:{f}}" for m in ("SENSE-CG", "L1-wavelet")
                    for k, f in (("psnr", ".2f"), ("ssim", ".4f"))]
        print(f"SENSE-CG: 10 CG iterations; L1-wavelet CS: λ chosen {classical['how']} "
              f"({', '.join(f'{n}: {lam:g}' for n, lam in classical['lambdas'].items())}); each file undersampled "
              f"as `reconstruct` did{'; read from the cache' if classical.get('cached') else ''}.\n")
    rows = [[*row, roles.get(row[0], "all" if i >= len(files) else "–")] for i, row in enumerate(rows)]
    print(markdown_table([*header, "role"], rows))
    print(f"\nrole: {role_note}")
    if isinstance(classical, str):
        print(f"\n(SENSE-CG and L1-wavelet columns skipped: {classical})")
    if not have_zero:
        print("\n(–: the reconstruction files hold no 'zero_filled' dataset; rerun `reconstruct` to get it.)")
    return 0


def _check_references(args: argparse.Namespace, parser: argparse.ArgumentParser, files: list[Path]) -> None:
    """Every file has its data file, and ``--reference`` can score every one; otherwise one error that says what
    to run instead (never an advice that the other reference then refuses)."""
    for path in files:
        if not (args.data / path.name).is_file():
            parser.error(f"argument --data: expected the reference {path.name} in {args.data}; it is missing.")
    def fully_sampled(path: Path) -> bool:
        try:
            return _fully_sampled(path)
        except (OSError, ValueError) as error:
            parser.error(f"argument --data: {error}")

    qualifies = {"rss": _has_rss, "sense": fully_sampled}
    refused = [p.name for p in files if not qualifies[args.reference](args.data / p.name)]
    if not refused:
        return
    other = "sense" if args.reference == "rss" else "rss"
    scorable = qualifies[other]
    needs = {"rss": "needs a 'reconstruction_rss' dataset", "sense": "needs fully sampled k-space"}
    neither = [n for n in refused if not scorable(args.data / n)]
    if neither:
        what = ("this file has no reference; leave it" if len(neither) == 1 else
                "these files have no reference; leave them")
        parser.error(f"argument --reference: {', '.join(neither)}: neither a 'reconstruction_rss' dataset (for "
                     f"--reference rss) nor fully sampled k-space (for --reference sense): {what} out of --recon.")
    names = ", ".join(refused)
    others = [p.name for p in files if not scorable(args.data / p.name)]
    if not others:
        parser.error(f"argument --reference: {args.reference} {needs[args.reference]}, which {names} "
                     f"{'lacks' if len(refused) == 1 else 'lack'}. Run the same command with --reference {other}, "
                     f"which scores every file.")
    rest = ", ".join(p.name for p in files if p.name not in refused)
    parser.error(f"argument --reference: no one reference scores every file: {args.reference} "
                 f"{needs[args.reference]} ({names} {'lacks' if len(refused) == 1 else 'lack'} it), {other} "
                 f"{needs[other]} ({', '.join(others)} {'lacks' if len(others) == 1 else 'lack'} it). Evaluate in two "
                 f"runs, each --recon directory holding one group's reconstructions: {names} with --reference "
                 f"{other}; {rest} with --reference {args.reference}.")


def _has_rss(reference: Path) -> bool:
    return "reconstruction_rss" in _keys(reference)


def _classical(args: argparse.Namespace, references: dict, model_dirs: set[str]) -> dict | str:
    """The classical columns (:func:`convexrecon.cli.references.file_references`), or why they are skipped."""
    from convexrecon.cli.references import file_references

    if len(model_dirs) != 1 or not next(iter(model_dirs)):
        return "the reconstructions do not name one model (its mask is needed)"
    model = Path(next(iter(model_dirs)))
    try:
        return file_references(references, args.data, model, cache_dir_of(args), args.reference)
    except (FileNotFoundError, ValueError) as error:
        return f"the model '{model}' cannot be read ({error})"


def _roles(model_dirs: set[str], names: list[str]) -> tuple[dict[str, str], str]:
    """What each file was to the model (``training``, ``validation``, ``unseen``) from the split in its
    ``config.json``, and the line that explains the column."""
    from convexrecon.stack.modelfiles import read_config

    if len(model_dirs) != 1 or not next(iter(model_dirs)):
        return {}, "– (the reconstructions do not name one model)"
    try:
        _, config = read_config(next(iter(model_dirs)))
    except (FileNotFoundError, ValueError):
        return {}, "– (the model's config.json cannot be read)"
    split = config.get("split")
    if not isinstance(split, dict):
        return {}, "– (the model's config.json records no training/validation split)"
    training, validation = set(split.get("training", ())), set(split.get("validation", ()))
    roles = {n: "training" if n in training else "validation" if n in validation else "unseen" for n in names}
    root = config.get("data", {}).get("root")
    where = f" (by file name; the model was trained on {root})" if root else " (by file name)"
    note = (f"what each file was to the model{where}: training files were fitted and score optimistically; judge "
            "the model on validation and unseen files")
    return roles, note


def _cells(table: dict) -> list[str]:
    return [f"{table['psnr'].mean:.2f}", f"{table['ssim'].mean:.4f}", f"{table['nmse'].mean:.4f}"]


def _rss(parser: argparse.ArgumentParser, reference: Path, pred: np.ndarray) -> np.ndarray:
    """``reconstruction_rss`` cropped to ``(W, W)`` (fastMRI's ``evaluate.py``); refuses smaller reconstructions."""
    with h5py.File(reference, "r") as ref:
        if "reconstruction_rss" not in ref:
            hint = ("try --reference sense" if _fully_sampled(reference) else
                    "and its k-space is undersampled, so --reference sense cannot score it either: this file has no "
                    "reference; leave it out of --recon")
            parser.error(f"argument --reference: rss needs a 'reconstruction_rss' dataset; {reference.name} has "
                         f"none ({hint}).")
        target = np.asarray(ref["reconstruction_rss"])
    side = target.shape[-1]
    if len(pred) != len(target):
        parser.error(f"argument --recon: {reference.name} has {len(pred)} reconstructed slices, the reference "
                     f"{len(target)}.")
    if pred.shape[-1] < side or pred.shape[-2] < side or target.shape[-2] < side:
        parser.error(f"argument --recon: {reference.name} holds {pred.shape[-2]}x{pred.shape[-1]} reconstructions, "
                     f"smaller than the {side}x{side} its reconstruction_rss is scored on (fastMRI's convention); "
                     f"reconstruct with --crop {side}.")
    return center_crop(target, (side, side))


def _fully_sampled(reference: Path) -> bool:
    """Whether a data file holds fully sampled k-space (no 'mask' dataset, slice 0 not zeroed)."""
    from convexrecon.data.fastmri import FastMRIVolume
    from convexrecon.recon import UNDERSAMPLED_FRACTION, sampled_entries

    with h5py.File(reference, "r") as handle:
        if "mask" in handle:
            return False
    return 1.0 - sampled_entries(FastMRIVolume(reference).kspace(0)).mean() <= UNDERSAMPLED_FRACTION


def _sense(args: argparse.Namespace, parser: argparse.ArgumentParser, reference: Path, pred: np.ndarray,
           widths: np.ndarray | None) -> np.ndarray:
    """Fully sampled SENSE magnitude of every slice at the reconstruction's size (cached ESPIRiT maps)."""
    from convexrecon.data.fastmri import FastMRIVolume
    from convexrecon.data.mapcache import MapCache
    from convexrecon.recon import cropped_adjoint, sampled_entries, UNDERSAMPLED_FRACTION

    volume = FastMRIVolume(reference)
    with h5py.File(reference, "r") as handle:
        has_mask = "mask" in handle
    if widths is None or len(widths) != volume.num_slices:
        parser.error(f"argument --reference: sense needs the calibration widths `reconstruct` records; "
                     f"{reference.name}'s reconstruction has none (rerun `reconstruct`).")
    crop = pred.shape[-1]
    cache = MapCache(cache_dir_of(args))
    images = []
    for s in range(volume.num_slices):
        kspace = volume.kspace(s)
        if has_mask or 1.0 - sampled_entries(kspace).mean() > UNDERSAMPLED_FRACTION:
            hint = ("Use --reference rss." if volume.has_rss else "It has no 'reconstruction_rss' either, so "
                    "--reference rss cannot score it: this file has no reference; leave it out of --recon.")
            parser.error(f"argument --reference: sense needs fully sampled k-space; {reference.name} is "
                         f"undersampled. {hint}")
        maps = cache.maps(reference, s, kspace, None, 0, crop, calib_width=int(widths[s]))
        images.append(cropped_adjoint(kspace, maps, crop).abs().numpy())
    return np.stack(images)
