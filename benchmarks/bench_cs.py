"""Classical references on run_knee's validation slices: L1-wavelet CS by iteration count and cycle-spun CS.

The unrolled network is compared with run_knee's CS (sigpy's decimated db4 L1-wavelet, λ chosen on training
slices, 100 iterations). This script answers two questions about that baseline on the same split, with the
package's torch FISTA (``convexrecon.mri.sparsity.l1_wavelet_fista``, the same program):

* is 100 iterations converged (``--iterations``, each count a fresh run)?
* how much stronger is *cycle-spun* (translation-invariant) CS, the soft threshold averaged over shifted wavelet
  grids (``--shifts``: numbers of grid shifts from a fixed list; 1 = plain CS)?

    python -m benchmarks.bench_cs --mask lines --lambdas 0.002,0.003,0.005 --iterations 100,200,400,800

Every λ is relative to max|zero-filled| of the slice (run_knee's convention). The λ are compared on the
validation slices here, so the best of them is optimistic for its method. Writes ``results.json`` and
``results.md`` under ``--out`` (default ``benchmarks/results/cs-variants-MODE-MASK``; the data and ESPIRiT cache
live there as for ``ablate_unrolled.py``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as run_knee.py

import torch  # noqa: E402

from benchmarks.kit.configs import CONFIGS  # noqa: E402
from benchmarks.kit.data import split_under  # noqa: E402
from benchmarks.kit.methods import scores  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402
from convexrecon.mri.consistency import crop_center  # noqa: E402
from convexrecon.mri.fft import complex_to_channels  # noqa: E402
from convexrecon.mri.sense import sense_adjoint  # noqa: E402
from convexrecon.mri.sparsity import l1_wavelet_fista  # noqa: E402

# grid shifts of the cycle-spun runs, first n used: odd and even offsets, so every decimated level moves
SHIFTS = [(0, 0), (1, 1), (2, 3), (5, 6), (3, 5), (6, 2), (7, 7), (4, 1)]


def _ints(text: str, name: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"argument --{name}: expected comma-separated ints >= 1. Got {text!r}.")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default")
    parser.add_argument("--mask", choices=("poisson", "lines"), default="lines")
    parser.add_argument("--lambdas", default="0.003", help="comma-separated relative L1 weights")
    parser.add_argument("--iterations", default="100", help="comma-separated FISTA iteration counts (plain CS)")
    parser.add_argument("--shifts", default="1,4,8",
                        help=f"comma-separated numbers of grid shifts (at most {len(SHIFTS)}), at 100 iterations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        lambdas = [float(v) for v in args.lambdas.split(",") if v]
    except ValueError:
        lambdas = []
    if not lambdas or not all(v > 0 for v in lambdas):
        parser.error(f"argument --lambdas: expected comma-separated numbers > 0. Got {args.lambdas!r}.")
    counts = _ints(args.iterations, "iterations", parser)
    shifts = _ints(args.shifts, "shifts", parser)
    if max(shifts) > len(SHIFTS):
        parser.error(f"argument --shifts: expected at most {len(SHIFTS)}. Got {max(shifts)}.")
    cfg = CONFIGS[args.config]
    out = args.out or Path("benchmarks/results") / f"cs-variants-{args.config}-{args.mask}"
    va = split_under(out, cfg, args.mask, args.seed)["val"]
    d = va["data"]
    x1 = sense_adjoint(d.kspace, d.maps, d.mask)
    rho = crop_center(x1, d.crop).abs().flatten(1).amax(1)

    def psnr(x: torch.Tensor) -> float:
        pred = complex_to_channels(crop_center(x, d.crop)).float()
        return scores(va["targets"], pred, va["scales"], va["volumes"])["psnr_mean"]

    rows: list[dict[str, Any]] = []
    runs = [(lam, n, 1) for lam in lambdas for n in counts] + [(lam, 100, s) for lam in lambdas for s in shifts
                                                                  if s > 1 or 100 not in counts]
    for lam, n, s in runs:
        start = time.perf_counter()
        x = l1_wavelet_fista(d.kspace, d.maps, d.mask, lam, n, scale=rho, shifts=SHIFTS[:s])
        rows.append({"lambda": lam, "iterations": n, "shifts": s, "psnr_mean": psnr(x),
                     "seconds": time.perf_counter() - start})
        print(f"λ {lam:g}, {n} iterations, {s} grid shift(s): {rows[-1]['psnr_mean']:.2f} dB "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)
    zero = scores(va["targets"], va["inputs"], va["scales"], va["volumes"])["psnr_mean"]
    machine_line = f"Machine: {machine()}, torch threads {torch.get_num_threads()}; {utc_now()}"
    lines = [f"# L1-wavelet CS variants ({args.config}, mask {args.mask}, {len(va['volumes'])} validation slices)",
             "", f"Command: `{command('bench_cs.py', argv)}`  ", machine_line, "",
             f"Zero-filled: {zero:.2f} dB. Shifts: {SHIFTS}.", "",
             "| λ (× max\\|zero-filled\\|) | FISTA iterations | grid shifts | PSNR (dB) | s |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['lambda']:g} | {r['iterations']} | {r['shifts']} | {r['psnr_mean']:.2f} | {r['seconds']:.0f} |"
              for r in rows]
    write_results(out, {"command": command("bench_cs.py", argv), "machine": machine(), "date": utc_now(),
                        "config": args.config, "mask": args.mask, "zero_filled": zero, "shifts": SHIFTS, "rows": rows},
                  "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
