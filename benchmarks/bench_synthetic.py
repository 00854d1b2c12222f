"""How realistic is the synthetic data set? Generation time, texture statistics, classical references.

For each family of subjects (``knee``, the default; ``brain``; ``legacy``, a simpler
phantom kept in ``tests/legacy_phantom.py``) this script

1. times the generation of one slice (the phantom alone, and the whole volume
   pipeline: phantom, coil images, FFT and noise);
2. measures texture statistics of the noiseless targets (wavelet compressibility:
   relative error of the best 5 % Daubechies-4 approximation; share of the energy
   above a quarter of Nyquist; ``convexrecon.data.statistics``);
3. writes a small data set, chooses the L1-wavelet λ on the first volume and
   prints zero-filled, SENSE-CG and L1-wavelet PSNR / SSIM on the second
   (``convexrecon.mri.classical``, exactly what ``python -m convexrecon prepare``
   runs), for each mask at the requested acceleration;
4. saves a figure of target slices (``--figure``).

    python -m benchmarks.bench_synthetic                 # full size (3-5 min per family and mask, 2 cores)
    python -m benchmarks.bench_synthetic --quick         # 160 x 92, 8 coils (about 2 min)

Results go to ``benchmarks/results/synthetic[-quick]/`` (``results.json``, ``results.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from convexrecon.io import write_text
from convexrecon.data.problems import slice_problem
from convexrecon.mri.classical import choose_lambda, reference_table
from convexrecon.data.fastmri import FastMRIVolume
from convexrecon.data.masks import MaskFunc, slice_seed
from convexrecon.mri.fft import center_crop, fft2c
from convexrecon.data.statistics import high_frequency_fraction, wavelet_compressibility
from convexrecon.data.synthetic import (
    INTENSITY,
    birdcage_maps,
    make_synthetic,
    phantom_slice,
    synthesize_volume,
    write_fastmri,
)
from tests.legacy_phantom import legacy_phantom_slice

FAMILIES = ("knee", "brain", "legacy")


def _slice(family: str, shape: tuple[int, int], subject: int, z: float, k: int) -> np.ndarray:
    if family == "legacy":
        return legacy_phantom_slice(shape, subject, z, k)
    return phantom_slice(shape, subject, z, k, family)


def _legacy_volume(shape: tuple[int, int], slices: int, coils: int, subject: int, snr: float) -> np.ndarray:
    """k-space of the legacy family (its phantom, birdcage coils and white noise)."""
    zs = np.linspace(-0.6, 0.6, slices) if slices > 1 else np.zeros(1)
    images = np.stack([legacy_phantom_slice(shape, subject, float(z), k) for k, z in enumerate(zs)]) * INTENSITY
    maps = birdcage_maps(coils, shape)
    kspace = fft2c(torch.from_numpy(images[:, None] * maps[None])).numpy()
    magnitude = np.abs(images)
    sigma = magnitude[magnitude > 0.05 * magnitude.max()].mean() / snr
    noise = np.random.default_rng([subject, 101]).standard_normal(kspace.shape + (2,), dtype=np.float32)
    return (kspace + (sigma / np.sqrt(2)) * (noise[..., 0] + 1j * noise[..., 1])).astype(np.complex64)


def _write(family: str, root: Path, args: argparse.Namespace) -> list[Path]:
    shape = tuple(args.shape)
    if family != "legacy":
        return make_synthetic(root, volumes=2, slices=args.slices, coils=args.coils, shape=shape, snr=args.snr,
                              anatomy=family, seed=args.seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(2):
        subject = slice_seed(args.seed, "volume", v)
        kspace = _legacy_volume(shape, args.slices, args.coils, subject, args.snr)
        paths.append(write_fastmri(root / f"file_legacy_{args.seed}_{v:04d}.h5", kspace, (shape[0] // 2,) * 2, "legacy"))
    return paths


def _timing(family: str, args: argparse.Namespace) -> dict[str, float]:
    shape = tuple(args.shape)
    _slice(family, shape, 1, 0.0, 0)  # warm-up
    t = time.perf_counter()
    for k in range(args.repeats):
        _slice(family, shape, 2 + k, 0.1 * k, k)
    phantom = (time.perf_counter() - t) / args.repeats
    t = time.perf_counter()
    if family == "legacy":
        _legacy_volume(shape, args.repeats, args.coils, 5, args.snr)
    else:
        synthesize_volume(shape, args.repeats, args.coils, 5, args.snr, family)
    return {"phantom_s_per_slice": phantom, "volume_s_per_slice": (time.perf_counter() - t) / args.repeats}


def _statistics(family: str, args: argparse.Namespace) -> dict[str, float]:
    shape, crop = tuple(args.shape), args.crop
    images = [center_crop(_slice(family, shape, slice_seed(args.seed, "stats", s), z, s), (crop, crop))
              for s, z in enumerate((-0.4, 0.0, 0.4))]
    levels = 4 if crop >= 128 else 3
    return {"wavelet_error_5pct": float(np.mean([wavelet_compressibility(im, 0.05, levels=levels) for im in images])),
            "high_frequency_fraction": float(np.mean([high_frequency_fraction(im) for im in images]))}


def _classical(paths: list[Path], mask: str, args: argparse.Namespace) -> dict:
    func = MaskFunc(mask, args.acceleration, center_fraction=0.04, calib=16, seed=args.seed)

    def problems(path: Path) -> list:
        volume = FastMRIVolume(path)
        count = min(args.max_slices, volume.shape[0])
        picks = np.linspace(0, volume.shape[0] - 1, count + 2)[1:-1].round().astype(int)  # interior slices
        return [slice_problem(volume, int(s), func, args.crop) for s in sorted(set(picks))]

    lamda, scores = choose_lambda(problems(paths[0]), args.lambdas, args.max_iter)
    table = reference_table(problems(paths[1]), lamda, args.max_iter)
    out = {"lambda": lamda, "lambda_scores": scores}
    for method, results in table.items():
        out[method] = {c: {m: [r[m].mean, r[m].std, r[m].n] for m in ("psnr", "ssim")} for c, r in results.items()}
    return out


def _figure(args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape, crop = tuple(args.shape), args.crop
    panels = [("legacy phantom (tests/legacy_phantom.py)", "legacy", 0.0), ("knee (default), z = 0", "knee", 0.0),
              ("knee, z = 0.4 (posterior)", "knee", 0.4), ("brain, z = 0", "brain", 0.0)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, family, z) in zip(axes, panels):
        image = np.abs(center_crop(_slice(family, shape, slice_seed(args.seed, "volume", 0), z, 3), (crop, crop)))
        ax.imshow(image, cmap="gray", vmin=0, vmax=np.percentile(image, 99.7))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=args.dpi)
    plt.close(fig)


def _markdown(results: dict) -> str:
    lines = [f"Synthetic data realism ({results['settings']}), {results['date']}", "",
             "| family | phantom s/slice | volume s/slice | wavelet error (5 %) | energy > Nyquist/4 |",
             "| --- | --- | --- | --- | --- |"]
    for family, r in results["families"].items():
        lines.append(f"| {family} | {r['timing']['phantom_s_per_slice']:.3f} | {r['timing']['volume_s_per_slice']:.3f} "
                     f"| {r['statistics']['wavelet_error_5pct']:.4f} | {r['statistics']['high_frequency_fraction']:.4f} |")
    for convention in ("slice", "volume"):
        lines += ["", f"Classical references, {convention}-wise PSNR (dB) / SSIM, mean over the test slices:", "",
                  "| family | mask | zero-filled | SENSE-CG | L1-wavelet | CS gain (dB) | λ |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for family, r in results["families"].items():
            for mask, c in r.get("classical", {}).items():
                cells = [f"{c[m][convention]['psnr'][0]:.2f} / {c[m][convention]['ssim'][0]:.4f}"
                         for m in ("zero-filled", "SENSE-CG", "L1-wavelet")]
                gain = c["L1-wavelet"][convention]["psnr"][0] - c["zero-filled"][convention]["psnr"][0]
                lines.append(f"| {family} | {mask} | {' | '.join(cells)} | {gain:+.2f} | {c['lambda']:g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="160 x 92 k-space, 8 coils, crop 80")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--masks", nargs="*", default=["poisson", "lines"],
                        help="masks of the classical table (none: skip it)")
    parser.add_argument("--classical-families", nargs="+", choices=FAMILIES, default=None,
                        help="families that get the classical table (default: all of --families)")
    parser.add_argument("--shape", type=int, nargs=2, default=None)
    parser.add_argument("--coils", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--slices", type=int, default=3, help="slices per volume (two volumes: λ choice, test)")
    parser.add_argument("--max-slices", type=int, default=1, help="slices used per volume (evenly spaced, interior)")
    parser.add_argument("--acceleration", type=float, default=4.0)
    parser.add_argument("--snr", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lambdas", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3, 1e-2])
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2, help="slices timed")
    parser.add_argument("--figure", type=Path, default=None, help="also save target slices as a PNG here")
    parser.add_argument("--dpi", type=int, default=70)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.shape = args.shape or ([160, 92] if args.quick else [640, 368])
    args.coils = args.coils or (8 if args.quick else 15)
    args.crop = args.crop or args.shape[0] // 2
    out = args.out or Path("benchmarks/results") / ("synthetic-quick" if args.quick else "synthetic")
    classical_families = args.classical_families or args.families

    settings = (f"k-space {args.shape[0]}×{args.shape[1]}, {args.coils} coils, crop {args.crop}, SNR {args.snr:g}, "
                f"acceleration {args.acceleration:g}, {args.max_slices} slice(s) per volume, λ grid {args.lambdas}, "
                f"{torch.get_num_threads()} torch threads")
    results = {"settings": settings, "date": datetime.date.today().isoformat(), "families": {}}
    if args.figure is not None:
        _figure(args, args.figure)
        print(f"figure written to {args.figure}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            entry = {"timing": _timing(family, args), "statistics": _statistics(family, args)}
            print(family, json.dumps(entry), flush=True)
            if family in classical_families:
                paths = _write(family, Path(tmp) / family, args)
                entry["classical"] = {}
                for mask in args.masks:
                    t = time.perf_counter()
                    entry["classical"][mask] = _classical(paths, mask, args)
                    print(f"{family} {mask}: {time.perf_counter() - t:.0f} s", json.dumps(entry["classical"][mask]),
                          flush=True)
            results["families"][family] = entry
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(results, indent=2))
    write_text(out / "results.md", _markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
