"""Does training on a mix of conditions change the recommended network? The quick mode's unrolled network
(`benchmarks/kit/configs.py`, with its fallback) trained on the quick split (knee only, 6 coils) and on a mix: two
volumes of another subject added to the training volumes, of the brain family (``--mix anatomy``) or of the knee
family with twice the coils (``--mix coils``; the slices of different coil counts train as one set, padded with
zero coils). The held-out selection then uses one added and one knee volume. Both networks are scored on the knee
validation volume and on the quick mode's five out-of-distribution sets (the brain sets, or the 12-coil set, are in
distribution for the mix). Poisson 4x, seed 0, one torch thread.

    python -m benchmarks.mix_anatomy                  # about 4 minutes on 2 cores
    python -m benchmarks.mix_anatomy --mix coils

Prints a Markdown table and writes JSON and Markdown to ``--out`` (default ``benchmarks/results/mix-anatomy`` or
``mix-coils``). The mix also doubles the training slices, so a difference mixes both effects.
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

import torch

from benchmarks.kit.configs import CONFIGS
from benchmarks.kit.data import anatomy_slices, measured_split
from benchmarks.kit.evidence import model_scores
from benchmarks.kit.methods import split_options, train_unrolled_convex
from benchmarks.kit.runinfo import command, machine, utc_now, write_results
from benchmarks.kit.shift import write_conditions
from convexrecon.data import make_synthetic

MIX_SEED = 11  # a subject seed apart from the training knees (seed 0) and the out-of-distribution sets
CS_LAMBDA = 1e-3  # the quick mode's CS λ on Poisson (chosen on its training volume, benchmarks/results/knee-quick)


def mixed_set(out: Path, mix: str) -> tuple[Path, Path]:
    """The quick mode's knee set and the mixed set (validation knee first, then added, knee, added, knee): two
    volumes of the brain family (``mix="anatomy"``) or of knee with twice the coils (``"coils"``) added."""
    cfg = CONFIGS["quick"]
    syn = cfg.synthetic
    knee, added, mixed = out / "knee", out / mix, out / f"mix-{mix}"
    if not any(mixed.glob("*.h5")):
        make_synthetic(knee, volumes=syn.volumes, slices=syn.slices, coils=syn.coils, shape=syn.shape, snr=syn.snr,
                       seed=0)
        make_synthetic(added, volumes=2, slices=syn.slices, coils=syn.coils * (2 if mix == "coils" else 1),
                       shape=syn.shape, snr=syn.snr, seed=MIX_SEED, anatomy="brain" if mix == "anatomy" else "knee")
        k, b = sorted(knee.glob("*.h5")), sorted(added.glob("*.h5"))
        mixed.mkdir(parents=True, exist_ok=True)
        for i, source in enumerate([k[0], b[0], k[1], b[1], k[2]]):  # the split sorts by name
            shutil.copy(source, mixed / f"file_synth_0_{i:04d}.h5")
    return knee, mixed


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mix", choices=("anatomy", "coils"), default="anatomy",
                        help="what the two added training volumes change: the anatomy family or the coil count")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results/mix-MIX")
    args = parser.parse_args(argv)
    args.out = args.out or Path(f"benchmarks/results/mix-{args.mix}")
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    cfg, mask, work = CONFIGS["quick"], "poisson", args.out / "data"
    knee, mix = mixed_set(work, args.mix)
    parts = [anatomy_slices(r, mask, cfg, 0, work / "cache") for r in write_conditions(work, cfg, 0, 1)]
    names = ["knee validation", *(c.name for c in cfg.conditions)]
    rows, results = [], {}
    added = "knee + brain" if args.mix == "anatomy" else f"knee + knee with {2 * cfg.synthetic.coils} coils"
    for name, root, held in (("knee only (the quick split)", knee, 1), (added, mix, 2)):
        split = measured_split(root, mask, cfg, 0, work / "cache")
        net = train_unrolled_convex(split, cfg.unrolled, split_options(split, cfg.unrolled, CS_LAMBDA), 0,
                                    held).network
        scores = [model_scores(net, part)["psnr_mean"] for part in (split["val"], *parts)]
        results[name] = {"training_slices": len(split["train"]["targets"]), "psnr": dict(zip(names, scores))}
        rows.append(f"| {name} | {len(split['train']['targets'])} | " + " | ".join(f"{v:.2f}" for v in scores) + " |")
    table = ["| training set | training slices | " + " | ".join(names) + " |",
             "| --- | --- | " + " | ".join("---" for _ in names) + " |", *rows]
    markdown = "\n".join([f"# {args.mix.capitalize()} mix (PSNR, dB, slice-wise mean)\n",
                          f"    {command('mix_anatomy.py', argv)}\n",
                          f"{utc_now()}, {machine()}\n", *table]) + "\n"
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, {"date": utc_now(), "machine": machine(), "command": command("mix_anatomy.py", argv),
                             "results": results}, markdown)
    return results


if __name__ == "__main__":
    main()
