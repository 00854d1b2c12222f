"""The ``prepare`` subcommand: cache a data set and print the classical references.

``python -m convexrecon prepare --data DIR --mask poisson [--make-synthetic]``

1. optionally writes the synthetic default data set into an empty ``DIR``;
2. preprocesses every slice into the cache (``--cache-dir``, default the user
   cache directory, never the data directory);
3. prints zero-filled, SENSE-CG and L1-wavelet metrics on every file, slice-wise
   (the paper's convention) and volume-wise (fastMRI's), as Markdown tables. The
   L1-wavelet λ of a file's slices is chosen on the other files (leave-one-volume-out;
   with one file, leave-one-slice-out). The reference is ``--reference``: ``rss``
   (default; the files' ``reconstruction_rss``, centre-cropped to ``--crop``, as
   ``evaluate``) or ``sense`` (the fully sampled SENSE target, the training target).

Ctrl-C prints one line naming the step it stopped in and what stays (the preprocessed
slices and ESPIRiT maps done stay cached; synthetic files this run had written are
removed, so the re-run writes the whole set) and exits with status 130; running the
same command again resumes from the cache.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from tqdm.auto import tqdm

from convexrecon.cli.common import (
    REFERENCE_TEXT, REFERENCES, HelpFormatter, Progress, add_cache_dir, cache_dir_of, on_interrupt,
)
from convexrecon.cli.device import add_device_argument
from convexrecon.cli.references import rss_references
from convexrecon.io import ensure_writable_dir, write_text
from convexrecon.data.mapcache import MapCache
from convexrecon.data.problems import slice_problem
from convexrecon.mri.classical import LAMBDA_GRID, SliceProblem, cross_validated_table
from convexrecon.data.dataset import SliceDataset
from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.masks import CENTER_FRACTION, MASK_KINDS
from convexrecon.data.synthetic import make_synthetic
from convexrecon.metrics import Summary

PREPROCESSING = "preprocessing (the slices done stay cached)"  # as `train` says it

CONVENTIONS = {
    "slice": "slice-wise (the paper's convention): data range = max of each target slice; "
    "mean ± std (ddof=0) over {n} slices",
    "volume": "volume-wise (fastMRI's convention): data range = max of each target volume, SSIM averaged "
    "over its slices; mean ± std (ddof=0) over {n} volumes",
}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "prepare", help="prepare and cache a data set, print the classical references' table",
        description=__doc__, formatter_class=HelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="directory of fastMRI multi-coil .h5 files")
    p.add_argument("--mask", choices=MASK_KINDS, default="poisson", help="sampling pattern (default poisson)")
    p.add_argument("--acceleration", type=float, default=4.0, help="acceleration > 1 (default 4)")
    p.add_argument("--center-fraction", type=float, default=CENTER_FRACTION, help="line masks' centre band (default 0.04)")
    p.add_argument("--calib", type=int, default=16, help="Poisson-disc calibration square (default 16)")
    p.add_argument("--crop", type=int, default=320, help="image side after cropping (default 320)")
    p.add_argument("--seed", type=int, default=0, help="mask seed (default 0)")
    add_cache_dir(p)
    add_device_argument(p, "device of the preprocessing (ESPIRiT, SENSE images)")
    g = p.add_argument_group("synthetic data")
    g.add_argument("--make-synthetic", action="store_true", help="write the synthetic data set if DATA has none")
    g.add_argument("--volumes", type=int, default=4, help="synthetic volumes (default 4)")
    g.add_argument("--slices", type=int, default=8, help="synthetic slices per volume (default 8)")
    g.add_argument("--coils", type=int, default=15, help="synthetic coils (default 15)")
    g.add_argument("--shape", type=int, nargs=2, default=(640, 368), metavar=("H", "W"),
                   help="synthetic k-space shape (default 640 368)")
    g.add_argument("--snr", type=float, default=25.0, help="synthetic per-coil SNR (default 25)")
    c = p.add_argument_group("classical references")
    c.add_argument("--no-classical", action="store_true", help="only prepare the cache")
    c.add_argument("--reference", choices=REFERENCES, default="rss",
                   help="rss: the files' reconstruction_rss (fastMRI, as `evaluate`); sense: fully sampled SENSE")
    c.add_argument("--max-slices", type=int, default=None, help="at most this many slices per file")
    c.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDA_GRID), help="L1-wavelet λ grid")
    c.add_argument("--max-iter", type=int, default=100, help="L1-wavelet iterations (default 100)")
    c.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    p.set_defaults(handler=functools.partial(run, parser=p))
    return p


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.acceleration > 1:
        parser.error(f"argument --acceleration: must be > 1, got {args.acceleration}")
    if not 0 < args.center_fraction < 1:
        parser.error(f"argument --center-fraction: must lie in (0, 1), got {args.center_fraction}")
    if args.crop < 1 or args.calib < 1:
        parser.error("arguments --crop and --calib must be positive integers")
    has_data = args.data.is_dir() and any(args.data.glob("*.h5"))
    if not has_data and not args.make_synthetic:
        state = "does not exist" if not args.data.exists() else "holds no .h5 file"
        parser.error(
            f"argument --data: '{args.data}' {state}; pass --make-synthetic to write the synthetic data set there"
        )
    if args.data.exists() and not args.data.is_dir():
        parser.error(f"argument --data: '{args.data}' is not a directory")
    for option, directory in (("--cache-dir", cache_dir_of(args)),
                              ("--json", None if args.json is None else args.json.parent)):
        if directory is not None:
            try:
                ensure_writable_dir(directory)
            except ValueError as error:
                parser.error(f"argument {option}: {error}")


def format_table(table: dict[str, dict[str, dict[str, Summary]]], convention: str) -> str:
    """One convention of :func:`reference_table` as a Markdown table with its caption."""
    n = next(iter(table.values()))[convention]["psnr"].n
    lines = [f"Convention: {CONVENTIONS[convention].format(n=n)}; magnitude images.", "",
             "| method | PSNR (dB) | SSIM | NMSE |", "| --- | --- | --- | --- |"]
    for method, results in table.items():
        r = results[convention]
        lines.append(
            f"| {method} | {r['psnr'].mean:.2f} ± {r['psnr'].std:.2f} | {r['ssim'].mean:.4f} ± {r['ssim'].std:.4f} "
            f"| {r['nmse'].mean:.4f} ± {r['nmse'].std:.4f} |"
        )
    return "\n".join(lines)


def _problems(dataset: SliceDataset, limit: int | None) -> list[SliceProblem]:
    """The classical problems of every file (at most ``limit`` slices each), with a progress bar."""
    pairs, count = [], {}
    for path, s in dataset.index:
        count[path] = count.get(path, 0) + 1
        if limit is None or count[path] <= limit:
            pairs.append((path, s))
    cache = None if dataset.cache_root is None else MapCache(dataset.cache_root)  # full-grid maps, once per slice
    return [slice_problem(FastMRIVolume(p), s, dataset.mask_func, dataset.crop, cache)
            for p, s in tqdm(pairs, desc="classical problems (ESPIRiT)", unit="slice")]


def _write_synthetic(args: argparse.Namespace, progress: Progress) -> None:
    """The synthetic set, one file at a time; on Ctrl-C the files this run wrote are removed (a partial set would
    be kept by the re-run, since ``--make-synthetic`` never touches a directory holding .h5 files)."""
    written: list[Path] = []
    try:
        for v in range(args.volumes):
            progress.during = f"writing the synthetic data set (file {v + 1} of {args.volumes})"
            written += make_synthetic(args.data, volumes=args.volumes, slices=args.slices, coils=args.coils,
                                      shape=tuple(args.shape), snr=args.snr, only=[v])
    except KeyboardInterrupt:
        for path in written:
            path.unlink(missing_ok=True)
        progress.kept = (f"the {len(written)} complete file(s) it had written are removed" if written else
                         "no file was written")
        raise


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Execute ``prepare``; returns the exit code (usage errors exit with 2, Ctrl-C with 130)."""
    _validate(args, parser)
    progress = Progress(PREPROCESSING, None, "resume")
    with on_interrupt(progress):
        return _run(args, parser, progress)


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, progress: Progress) -> int:
    try:
        existing = sorted(args.data.glob("*.h5")) if args.data.is_dir() else []
        if args.make_synthetic and existing:
            print(f"--make-synthetic: {args.data} already holds {len(existing)} .h5 file(s), which are used as they "
                  f"are (--volumes, --slices, --coils, --shape and --snr are ignored); pass an empty or new "
                  f"directory to write a new set.", flush=True)
        if args.make_synthetic and not existing:
            print(f"writing the synthetic data set to {args.data} ({args.volumes} volumes × {args.slices} slices, "
                  f"{args.coils} coils, k-space {args.shape[0]}×{args.shape[1]}, SNR {args.snr})", flush=True)
            progress.rerun = "redo it"
            _write_synthetic(args, progress)
        progress.during, progress.kept, progress.rerun = PREPROCESSING, None, "resume"
        dataset = SliceDataset(
            args.data, mask=args.mask, acceleration=args.acceleration, center_fraction=args.center_fraction,
            calib=args.calib, crop=args.crop, seed=args.seed, cache_dir=cache_dir_of(args),
            device=args.device,
        )
        print(f"{len(dataset)} slices of {len(dataset.volumes)} volumes cached in {dataset.cache_dir}", flush=True)
        if args.no_classical:
            return 0
        progress.during = "the classical references (ESPIRiT maps of every slice)"
        progress.kept = "the preprocessed slices and the ESPIRiT maps done stay cached"
        problems = _problems(dataset, args.max_slices)
        try:
            references = rss_references(dataset, [(p.fname, p.slice_index) for p in problems], args.crop) \
                if args.reference == "rss" else None
        except ValueError as error:
            parser.error(str(error))
        progress.during = "the classical references (SENSE-CG and L1-wavelet reconstructions)"
        table, lambdas, how = cross_validated_table(problems, args.lambdas, args.max_iter, references, progress=True)
    except ValueError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    files = sorted({p.fname for p in problems})
    print(f"\nClassical references: mask {args.mask}, acceleration {args.acceleration:g}, crop {args.crop}; "
          f"{len(problems)} slices of {len(files)} volume(s), every file scored.\n"
          f"Reference: {args.reference} = {REFERENCE_TEXT[args.reference]}.\n"
          f"L1-wavelet λ chosen {how} by mean slice-wise PSNR from {list(args.lambdas)}: "
          f"{', '.join(f'{name}: {lam:g}' for name, lam in lambdas.items())}. SENSE-CG: 10 CG iterations.\n")
    for convention in ("slice", "volume"):
        print(format_table(table, convention) + "\n")
    if args.json is not None:
        progress.during, progress.kept = f"writing {args.json}", f"no partial {args.json.name} is left"
        payload = {
            "settings": dataset.settings(), "reference": args.reference, "lambda_selection": how,
            "lambdas": lambdas,
            "table": {m: {c: {k: vars(v) for k, v in r.items()} for c, r in res.items()} for m, res in table.items()},
        }
        write_text(args.json, json.dumps(payload, indent=2))
    return 0
