"""Data-pipeline throughput: preprocessing (ESPIRiT-dominated) and cached reads.

Writes a small synthetic volume at fastMRI knee size, preprocesses it into the
cache with ``SliceDataset`` (timing each stage on one slice too), then reads
the cached slices repeatedly. Prints a Markdown table and writes JSON and
Markdown to ``benchmarks/results/data/``.

    python -m benchmarks.bench_data --slices 4

Cached reads come from the page cache (the files were just written); a cold
read is bounded by the disk's bandwidth, reported as MB per slice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.kit.runinfo import machine, utc_now, write_results
from convexrecon.data import FastMRIVolume, MaskFunc, SliceDataset, make_synthetic
from convexrecon.data.problems import slice_problem
from convexrecon.mri.classical import l1_wavelet, sense_cg
from convexrecon.mri.espirit import calibration_width, espirit_maps
from convexrecon.mri.sense import sense_images


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _espirit_times(path: Path, func: MaskFunc, devices: list[torch.device], sigpy_reference: bool) -> dict[str, float]:
    """Seconds of one slice's ESPIRiT per device (torch path; the second of two runs, the first warms up) and,
    with ``sigpy_reference``, of sigpy's EspiritCalib on the CPU; agreement of the maps with it."""
    import numpy as np

    kspace = FastMRIVolume(path).kspace(0)
    mask = func.for_slice(kspace.shape[-2:], path.name, 0)
    masked, width = kspace * mask, calibration_width(mask, func.calibration_limit(mask.shape))
    out: dict[str, float] = {}
    reference = None
    if sigpy_reference:
        t = time.perf_counter()
        reference = espirit_maps(masked, width, method="sigpy")
        out["ESPIRiT, sigpy EspiritCalib, cpu (reference)"] = time.perf_counter() - t
    for device in devices:
        for _ in range(2 if device.type == "cuda" else 1):
            _sync(device)
            t = time.perf_counter()
            maps = espirit_maps(masked, width, device=device)
            _sync(device)
            seconds = time.perf_counter() - t
        out[f"ESPIRiT, torch, {device}"] = seconds
        t = time.perf_counter()
        sense_images(kspace, mask, func.calibration_limit(mask.shape), 320, maps=maps, device=device)
        _sync(device)
        out[f"SENSE images, {device}"] = time.perf_counter() - t
        if reference is not None:
            out[f"maps relative difference torch {device} vs sigpy"] = float(
                np.linalg.norm(maps - reference) / np.linalg.norm(reference))
    return out


def _stage_times(path: Path, func: MaskFunc, crop: int, classical: bool) -> dict[str, float]:
    volume = FastMRIVolume(path)
    t = time.perf_counter()
    kspace = volume.kspace(0)
    times = {"read raw k-space": time.perf_counter() - t}
    t = time.perf_counter()
    mask = func.for_slice(kspace.shape[-2:], path.name, 0)
    times["mask"] = time.perf_counter() - t
    t = time.perf_counter()
    maps = espirit_maps(kspace * mask, calibration_width(mask, func.calibration_limit(mask.shape)))
    times["ESPIRiT"] = time.perf_counter() - t
    t = time.perf_counter()
    sense_images(kspace, mask, func.calibration_limit(mask.shape), crop, maps=maps)
    times["SENSE images"] = time.perf_counter() - t
    if classical:
        problem = slice_problem(volume, 0, func, crop)
        t = time.perf_counter()
        sense_cg(problem)
        times["SENSE-CG (10 it.)"] = time.perf_counter() - t
        t = time.perf_counter()
        l1_wavelet(problem, 1e-3, max_iter=100)
        times["L1-wavelet (100 it.)"] = time.perf_counter() - t
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--coils", type=int, default=15)
    parser.add_argument("--shape", type=int, nargs=2, default=(640, 368))
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--mask", default="poisson")
    parser.add_argument("--reads", type=int, default=200, help="cached slice reads to time")
    parser.add_argument("--classical", action="store_true", help="also time SENSE-CG and L1-wavelet on one slice")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data"))
    parser.add_argument("--devices", nargs="+", default=None,
                        help="devices to time ESPIRiT on (default: cpu, and cuda when available)")
    parser.add_argument("--no-sigpy", action="store_true", help="skip the sigpy EspiritCalib reference timing")
    parser.add_argument("--espirit-only", action="store_true", help="only the per-device ESPIRiT timings")
    args = parser.parse_args()
    devices = [torch.device(d) for d in (args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        t = time.perf_counter()
        (path,) = make_synthetic(root, volumes=1, slices=args.slices, coils=args.coils, shape=tuple(args.shape))
        synth = time.perf_counter() - t
        func = MaskFunc(args.mask)
        func((64, 45), 0)  # load sigpy's numba-compiled sampler outside the timings
        espirit = _espirit_times(path, func, devices, not args.no_sigpy)
        for k, v in espirit.items():
            print(f"{k}: {v:.3g}", flush=True)
        if args.espirit_only:
            args.out.mkdir(parents=True, exist_ok=True)
            write_results(args.out, {"settings": vars(args) | {"out": str(args.out)}, "espirit": espirit,
                                     "machine": machine()},
                          "\n".join(f"| {k} | {v:.3g} |" for k, v in espirit.items()) + "\n", "bench_espirit")
            return
        stages = _stage_times(path, func, args.crop, args.classical)

        t = time.perf_counter()
        dataset = SliceDataset(root, mask=args.mask, crop=args.crop, cache_dir=Path(tmp) / "cache", progress=False)
        prep = time.perf_counter() - t
        cache_bytes = sum(f.stat().st_size for f in dataset.cache_dir.glob("*.h5"))

        reads = max(args.reads, len(dataset))
        t = time.perf_counter()
        for i in range(reads):
            sample = dataset[i % len(dataset)]
        read = time.perf_counter() - t
        assert sample.input.shape == (2, args.crop, args.crop)

    per_slice_mb = cache_bytes / len(dataset) / 1e6
    rate = reads / read
    results = {
        "date": utc_now(),
        "machine": machine(),
        "settings": {"slices": args.slices, "coils": args.coils, "shape": list(args.shape), "crop": args.crop,
                     "mask": args.mask},
        "synthesis_s_per_slice": synth / args.slices,
        "stage_s_one_slice": stages,
        "espirit_s_per_slice": espirit,
        "preprocess_slices_per_s": args.slices / prep,
        "preprocess_s_per_slice": prep / args.slices,
        "cache_mb_per_slice": per_slice_mb,
        "cached_reads": reads,
        "cached_read_slices_per_s": rate,
        "cached_epoch_1000_slices_s": 1000 / rate,
    }
    rows = [
        ("synthetic data generation", f"{synth / args.slices:.2f} s/slice"),
        *((f"one slice: {k}", f"{v:.2f} s") for k, v in stages.items()),
        *((f"one slice: {k}", f"{v:.3g}") for k, v in espirit.items()),
        ("preprocessing (mask + ESPIRiT + SENSE + cache write)",
         f"{args.slices / prep:.3f} slices/s ({prep / args.slices:.1f} s/slice)"),
        ("cache size", f"{per_slice_mb:.1f} MB/slice"),
        (f"cached read ({reads} reads, warm page cache)", f"{rate:.0f} slices/s"),
        ("cached epoch of 1,000 slices (extrapolated)", f"{1000 / rate:.1f} s (target < 30 s)"),
    ]
    table = "\n".join(["| measurement | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])
    header = (f"{args.slices} synthetic slices, {args.coils} coils, k-space {args.shape[0]}×{args.shape[1]}, "
              f"crop {args.crop}, mask {args.mask}; {results['machine']}; {results['date']}")
    print(header + "\n\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, results, header + "\n\n" + table + "\n", "bench_data")


if __name__ == "__main__":
    main()
