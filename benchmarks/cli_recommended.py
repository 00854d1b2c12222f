"""The recommended network through the command line, the user's path: `prepare`, `train --recommended`,
`reconstruct` and `evaluate`, run as subprocesses, on small synthetic sets.

Trained on knee (4 volumes × 2 slices, 8 coils, 160 × 92 k-space, SNR 25, crop 64, Poisson 4×); scored with
`evaluate --reference sense` on unseen volumes (2 slices, 8 coils) of four sets: knee at the training SNR, brain
at SNR 100 and 25, knee at SNR 10. `evaluate` gives SENSE-CG and L1-wavelet CS beside the model (CS's λ chosen
leave-one-slice-out on the evaluated slices, so CS is tuned on the very slices it is scored on). Each variant
trains its own model from the same data; ``recommended`` is the preset alone, the others change one part of it.

    python -m benchmarks.cli_recommended            # about 10 minutes on one core

Prints a Markdown table and writes JSON and Markdown to ``--out`` (default
``benchmarks/results/cli-recommended``). Every command runs with ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.kit.runinfo import command, machine, utc_now, write_results
from convexrecon.cli.common import markdown_table
from convexrecon.data import make_synthetic

SHAPE = (160, 92)
CROP = 64
COILS = 8
TEST_SETS = {  # name: (anatomy, SNR, data seed); the training set is seed 0, every test set a subject apart
    "knee, SNR 25": ("knee", 25.0, 1001),
    "brain, SNR 100": ("brain", 100.0, 1002),
    "brain, SNR 25": ("brain", 25.0, 1003),
    "knee, SNR 10": ("knee", 10.0, 1004),
}
VARIANTS = {  # name: train arguments after --data/--mask/--out/--crop
    "recommended": ["--recommended"],
    "cs-clean-keep": ["--recommended", "--cs-clean", "keep"],
    "cs-shifts-1": ["--recommended", "--cs-shifts", "1"],
    "no-fallback": ["--architecture", "unrolled", "--blocks", "2", "--cs-start", "100", "--cs-inputs", "0.001",
                    "0.01", "0.003:haar", "0.003:sym8", "--no-stage-zero-filled", "--stage-bias", "--no-keep-start"],
}
LABELS = {
    "recommended": "`--recommended`",
    "cs-clean-keep": "`--recommended --cs-clean keep` (CS weights that follow σ̂ alone)",
    "cs-shifts-1": "`--recommended --cs-shifts 1` (CS images not cycle-spun)",
    "no-fallback": "no fallback (`--architecture unrolled --blocks 2 --cs-start 100 --cs-inputs 0.001 0.01 "
                   "0.003:haar 0.003:sym8 --no-stage-zero-filled --stage-bias --no-keep-start`)",
}


def set_folder(work: Path, name: str) -> Path:
    """Where the test set ``name`` is written under the run's directory."""
    return work / "sets" / re.sub(r"\W+", "_", name)


def cli(*args: str, cwd: Path) -> tuple[str, float]:
    """Run ``python -m convexrecon ARGS`` on one thread; its stdout and wall seconds. A failure stops the run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CONVEXRECON_CACHE": str(cwd / "cache")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "convexrecon", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"`convexrecon {' '.join(args)}` exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def mean_row(evaluate_output: str) -> dict[str, float]:
    """The 'mean over N file(s)' row of `evaluate`'s table, by column name."""
    lines = [line for line in evaluate_output.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0].startswith("mean over"):
            return {h: float(c) for h, c in zip(header, cells) if re.fullmatch(r"-?\d+(\.\d+)?", c)}
    raise ValueError("evaluate printed no 'mean over' row")


def certified(train_output: str) -> str:
    """`train`'s line on the certificates of the blocks the model keeps."""
    lines = [line.strip() for line in train_output.splitlines() if "certified" in line.lower()]
    return lines[-1] if lines else "no certificate line printed"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cli-recommended"))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not any((work / "train").glob("*.h5")):
        cli("prepare", "--make-synthetic", "--data", "train", "--volumes", "4", "--slices", "2", "--coils",
            str(COILS), "--shape", *map(str, SHAPE), "--crop", str(CROP), "--no-classical", cwd=work)
    for name, (anatomy, snr, seed) in TEST_SETS.items():
        folder = set_folder(work, name)
        if not any(folder.glob("*.h5")):
            make_synthetic(folder, volumes=1, slices=2, coils=COILS, shape=SHAPE, snr=snr, seed=seed, anatomy=anatomy)
    results: dict[str, Any] = {"sets": {}, "variants": {}}
    for variant in args.variants:
        model = work / "models" / variant
        out, seconds = cli("train", "--data", "train", "--mask", "poisson", "--out", str(model), "--crop", str(CROP),
                           *VARIANTS[variant], cwd=work)
        entry = {"train_seconds": round(seconds, 1), "certificates": certified(out), "sets": {}}
        print(f"{variant}: train {seconds:.0f} s; {entry['certificates']}", flush=True)
        for name in TEST_SETS:
            folder = set_folder(work, name)
            recon = work / "recon" / variant / folder.name
            _, rec_seconds = cli("reconstruct", "--model", str(model), "--data", str(folder), "--out", str(recon),
                                 "--crop", str(CROP), cwd=work)
            table, _ = cli("evaluate", "--recon", str(recon), "--data", str(folder), "--reference", "sense", cwd=work)
            row = mean_row(table)
            entry["sets"][name] = {"psnr": row["model PSNR (dB)"], "ssim": row["model SSIM"],
                                   "reconstruct_seconds": round(rec_seconds, 1)}
            results["sets"][name] = {m: {"psnr": row[f"{m} PSNR (dB)"], "ssim": row[f"{m} SSIM"]}
                                     for m in ("SENSE-CG", "L1-wavelet")}
        results["variants"][variant] = entry
    rows = [[m if m == "SENSE-CG" else "L1-wavelet CS (λ chosen on these slices)",
             *[f"{results['sets'][s][m]['psnr']:.2f}" for s in TEST_SETS]] for m in ("SENSE-CG", "L1-wavelet")]
    rows += [[LABELS[v], *[f"{results['variants'][v]['sets'][s]['psnr']:.2f}" for s in TEST_SETS]]
             for v in args.variants]
    table = markdown_table(["PSNR (dB), volume-wise, against fully sampled SENSE", *TEST_SETS], rows)
    notes = "\n".join(f"- {LABELS[v]}: train {results['variants'][v]['train_seconds']:.0f} s; "
                      f"{results['variants'][v]['certificates']}" for v in args.variants)
    results.update(command=command("cli_recommended.py", argv), machine=machine(), date=utc_now(),
                   total_seconds=round(time.perf_counter() - started, 1))
    markdown = (f"# The recommended network through the command line\n\nCommand: `{results['command']}`  \n"
                f"Machine: {results['machine']}; one thread per command; date {results['date']}; total wall time "
                f"{results['total_seconds']:.0f} s\n\n{table}\n\n{notes}\n")
    print(markdown)
    write_results(args.out, results, markdown)
    return results


if __name__ == "__main__":
    main()
