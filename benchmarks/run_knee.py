"""Knee reconstruction: convex layer-wise vs end-to-end vs non-convex layer-wise vs classical.

Reproduces the paper's three results (ISMRM 2021, Figs. 2-4) on the embedded
synthetic knee-like data (or real fastMRI multi-coil files with ``--data``),
for a Poisson-disc 4x mask and a 1-D Cartesian 4x mask (centre fraction 0.04):

* zero-filled SENSE, L1-wavelet CS (λ chosen on training slices) and cycle-spun L1-wavelet CS
  (``cs_cycle_spun``: FISTA averaged over ``cs_shifts`` wavelet grids, λ chosen on the held-out training volume),
  the strongest classical row;
* ``end_to_end``: the whole network by Adam on the l2 loss; ``layerwise_adam``: each block by Adam on the same
  objective, then frozen. Both, like the unrolled Adam baselines, are trained by the library's rule
  (:class:`convexrecon.stack.adam.TrainingRule`, settings ``CONFIGS[mode].rule``): lr and weight decay (multiples
  of ``d = beta_i / n_i`` of the convex blocks) chosen by the loss on the last training volume (held out; never the
  validation volume), early stopping on that loss, a maximum of epochs (reaching it = "not converged"), the best
  held-out checkpoint kept (so they learn from the training slices outside that volume, where the convex methods
  re-solve on all training slices once β is chosen); the end-to-end baselines are also scored at the convex
  method's wall time (the best checkpoint of the chosen run by then; the lr/decay search is not counted);
* ``layerwise_convex``: each block by ``fit_layer`` (``docs/design.md`` §9) with antithetic
  gates (pairs ``g, -g``), β per block chosen from ``beta_ratios`` x β_max by the
  error on the last training volume (held out; never the validation volume), then
  re-solved on all training slices (``BlockSettings.beta_ratios``).
* ``layerwise_convex_relu``: the same, with exact-ReLU blocks (``activation="relu"``, ``relu_method="auto"``:
  interior point where it fits, ADMM otherwise; ``report.solver`` per block in the results), where the mode's
  configuration has ``relu`` (quick and full; left out of the default and gpu modes for time);
* ``unrolled_convex``, ``unrolled_end_to_end``, ``unrolled_layerwise_adam``: the unrolled network with SENSE data
  consistency (:func:`benchmarks.kit.methods.train_unrolled_methods`, settings ``CONFIGS[mode].unrolled``),
  convex stage by stage (β ratio and λ_i chosen on the held-out training volume) and the same architecture by Adam;
* with the synthetic data, the out-of-distribution protocol (:mod:`benchmarks.kit.shift`, ``cfg.conditions``): every
  knee-trained model on the brain family, on SNRs 4x above and 0.4x the training SNR and with another coil count,
  beside zero-filled, SENSE-CG, CS and cycle-spun CS of those slices (λ chosen on them: an oracle), and whether the
  recommended network (``unrolled_convex``) stays within 0.2 dB of the best classical row (skipped with ``--data``).

Spread over seeds (``--seeds N``; the mode's ``seeds`` by default: quick 3, default 2): the learned methods are
trained with seeds ``--seed``, ``--seed + 1``, ... (gates, patch windows, initialisation, data order) on the first
seed's data, masks, preprocessing, CS λ and unrolled CS starts; the classical rows are computed once. The first
seed's run is exactly a single-seed run (its numbers, figures, per-block tables and out-of-distribution rows); each later
seed adds mean ± std over seeds per learned row and the headline differences pooled over seeds
(:func:`later_seeds`, :mod:`benchmarks.kit.seeds`). Later seeds train the end-to-end baselines (CNN and unrolled)
in one run at the first seed's chosen lr and decay factor, stopped by the same rule; every other learned method
repeats its whole selection.

Every slice goes through ESPIRiT once (:func:`benchmarks.kit.data.measured_split`): the CNN inputs, the unrolled
networks' measurements and CS all come from the same ``slice_problem`` (cached under ``--out/cache``).

Writes ``results.json``, ``results.md``, ``psnr_vs_layers.png``,
``examples.png``, ``batch_size.png`` and ``training_curves.png`` (held-out loss against wall time)
under ``--out``; checkpoints under
``--out/checkpoints`` (a killed run restarted with the same command resumes). From the repository root:

    python -m benchmarks.run_knee            # default (CPU, 2 seeds; about 65 min on 2 shared cores)
    python -m benchmarks.run_knee --quick    # every method, 3 seeds (budget 5 min on 2 cores, one thread)
    python -m benchmarks.run_knee --full --data /data/knee_multicoil  # the paper's settings, GPU
    python -m benchmarks.run_knee --config gpu   # one H100/H200 in ~8 min, reductions printed

(or ``python -m benchmarks.run_knee ...``). ``--device`` (default ``cuda`` when available) runs
preprocessing (ESPIRiT, SENSE) and every trainer there. On CUDA the memory table (Fig. 4) is measured by real
allocation under a 12 GiB cap (``convexrecon.analysis.memory.measured_max_batch``); on the CPU it stays the
meta-device count, a lower bound on the real peak, labelled as such in ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see docs/data.md, performance note

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.kit.configs import (CONFIGS, MASKS, REDUCTIONS, KneeConfig, RuleConfig, beta_text,  # noqa: E402
                                    estimate_seconds, hidden_width)
from benchmarks.kit.data import measured_split, synthetic_parallel  # noqa: E402
from benchmarks.kit.evidence import (adam_effort, convex_effort, curve_of, cycle_spun_cs, model_scores,  # noqa: E402
                                     paired, slice_scores)
from benchmarks.kit.figures import (plot_batch_size, plot_examples, plot_psnr_vs_layers,  # noqa: E402
                                    plot_training_curves)
from benchmarks.kit.memory import measured_memory_table  # noqa: E402
from benchmarks.kit.methods import (convex_solver_bytes, cs_predictions, train_convex,  # noqa: E402
                                    train_end_to_end_baseline, train_layerwise_adam_baseline,
                                    train_unrolled_methods, unrolled_starts)
from benchmarks.kit.report import HEADLINES, markdown  # noqa: E402
from benchmarks.kit.peer import available as peer_available, peer_row  # noqa: E402
from benchmarks.kit.shift import out_of_distribution, write_conditions  # noqa: E402
from benchmarks.kit.seeds import FIRST_SEED_ONLY, fixed_rule, pooled_paired, seed_list, slim, spread  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402
from convexrecon.analysis.memory import block_memory, end_to_end_memory, memory_table  # noqa: E402
from convexrecon.devices import default_device, parse_device  # noqa: E402
from convexrecon.stack.unrolled import UnrolledNet  # noqa: E402

def first_image(model: Any, part: dict[str, Any]) -> torch.Tensor:
    if isinstance(model, UnrolledNet):
        return model.predict(part["data"])[0].cpu()
    return model.predict(part["inputs"][:1].to(next(model.parameters()).device))[0].cpu()


def block_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**{key: r.get(key) for key in ("psnr", "ssim", "duality_gap", "relative_gap", "status", "beta", "width",
                                            "iterations", "seconds", "num_patches", "num_pixels", "beta_ratio",
                                            "selection", "activation")},
             "solver": (r.get("report") or {}).get("solver")} for r in records]


def run_mask(mask: str, root: Path, cfg: KneeConfig, out: Path, seed: int,
             device: torch.device = torch.device("cpu"), condition_roots: list[Path] | None = None,
             seeds: list[int] | None = None) -> tuple[dict[str, Any], dict, dict[str, Any] | None]:
    """Every method on one mask; returns the ``results.json`` entry, images for the figures and (with
    ``condition_roots``, :func:`benchmarks.kit.shift.write_conditions`) the out-of-distribution entries. The data, CS
    rows, figures and out-of-distribution rows are those of
    ``seed``; with further ``seeds`` (the first must be ``seed``) the learned methods are trained again with each
    (:func:`later_seeds`), and the entry's ``"seeds"`` holds their spread."""
    seeds = seeds or [seed]
    if seeds[0] != seed:
        raise ValueError(f"The 'seeds' parameter must start with seed {seed}. Got {seeds!r} instead.")
    t0 = time.perf_counter()
    split = measured_split(root, mask, cfg, seed, out / "cache")
    print(f"preprocessing (ESPIRiT + SENSE once per slice, CPU): {time.perf_counter() - t0:.0f} s", flush=True)
    va = split["val"]
    entry: dict[str, Any] = {"preprocessing_seconds": time.perf_counter() - t0}
    images: dict[str, Any] = {"target": va["targets"][0], "zero_filled": va["inputs"][0]}
    entry["zero_filled"] = {**slice_scores(va, va["inputs"]), "train_seconds": 0.0, "peak_memory_bytes": 0}
    start = time.perf_counter()
    cs, lamda, lambda_scores = cs_predictions(split, cfg)
    ncs = len(cs)
    entry["cs_l1_wavelet"] = {**slice_scores(va, cs), "iterations": cfg.cs_max_iter,
                              "scored_slices": ncs, "train_seconds": 0.0,
                              "peak_memory_bytes": 0, "lambda": lamda, "lambda_scores": lambda_scores,
                              "seconds": time.perf_counter() - start}
    images["cs_l1_wavelet"] = cs[0]
    data_cfg = {"data": {**split["dataset"].settings(), "root": str(root)}}
    print(f"CS: {time.perf_counter() - start:.0f} s", flush=True)
    entry["cs_cycle_spun"], spun = cycle_spun_cs(split, cfg)
    images["cs_cycle_spun"] = spun[0]
    print(f"cycle-spun CS: {entry['cs_cycle_spun']['seconds']:.0f} s", flush=True)
    shared: dict[str, Any] = {}  # seed-independent work of the learned methods (the unrolled CS starts)
    learned_start = time.perf_counter()
    models = train_learned(entry, images, split, cfg, seed, data_cfg, device, lamda, shared,
                           out / "checkpoints" / mask, out / "models" / mask)
    first_seconds = time.perf_counter() - learned_start
    images["scale"] = float(va["scales"][0])
    entry["differences"] = [d for d in (paired(entry, a, b) for a, b in HEADLINES) if d is not None]
    shift = None if not condition_roots else out_of_distribution(condition_roots, mask, cfg, seed, out / "cache",
                                                                  models)
    if len(seeds) > 1:
        entry["seeds"] = later_seeds(entry, split, cfg, seeds, data_cfg, device, lamda, shared, out, mask,
                                     first_seconds)
    return entry, images, shift


def train_learned(entry: dict[str, Any], images: dict[str, Any], split: dict[str, Any], cfg: KneeConfig, seed: int,
                  data_cfg: dict[str, Any], device: torch.device, lamda: float, shared: dict[str, Any], ckpt: Path,
                  models_dir: Path,
                  e2e_rules: tuple[RuleConfig | None, RuleConfig | None] | None = None,
                  peer: bool = True) -> dict[str, Any]:
    """Every learned method of one seed on ``split``: fills ``entry`` and ``images`` and returns the trained
    models by name. ``shared`` keeps seed-independent work between seeds (the unrolled networks' CS starts);
    ``e2e_rules``, when given, replace ``cfg.rule`` for the end-to-end network and ``cfg.unrolled.rule`` for the
    unrolled end-to-end network (None in either place: the configuration's) (a later seed's one-candidate rule, :func:`later_seeds`);
    ``peer``: also train the external peer (fastMRI's VarNet, :mod:`benchmarks.kit.peer`) when its extra is
    installed (the first seed only: it costs more than every other unrolled method together on the CPU)."""
    va = split["val"]
    k, K = cfg.kernel_size, cfg.blocks
    convex, convex_seconds, caught = train_convex(split, cfg, ckpt / "layerwise_convex", seed, data_cfg, device)
    convex.network.save(models_dir / "layerwise_convex")
    decays = [r["beta"] / r["num_pixels"] for r in convex.records]
    width = hidden_width(cfg)
    widths = [width] * K
    net, e2e_seconds, e2e_selection = train_end_to_end_baseline(split, cfg, decays, ckpt, seed, data_cfg, device,
                                                                snapshot_seconds=convex_seconds,
                                                                rule=None if e2e_rules is None else e2e_rules[0])
    e2e_snapshot = (e2e_selection or {}).pop("snapshot_net", None)
    net.save(models_dir / "end_to_end")
    # non-convex layer-wise
    adam_net, adam_seconds, adam_records = train_layerwise_adam_baseline(split, cfg, decays, ckpt, seed, data_cfg,
                                                                         device)
    adam_net.save(models_dir / "layerwise_adam")
    size, batch = cfg.crop, cfg.batch_size
    mem_e2e = end_to_end_memory(widths, k, size, batch).total
    mem_blocks = max(block_memory(2 if i == 0 else width, width, k, size, batch).total for i in range(K))
    models: dict[str, Any] = {"end_to_end": net, "layerwise_adam": adam_net, "layerwise_convex": convex.network}
    trained = [("end_to_end", net, e2e_seconds, mem_e2e), ("layerwise_adam", adam_net, adam_seconds, mem_blocks),
               ("layerwise_convex", convex.network, convex_seconds, convex_solver_bytes(convex.records, cfg))]
    relu = None
    if cfg.relu:  # the same architecture with exact-ReLU blocks (relu_method "auto"), same β candidates
        relu_cfg = dataclasses.replace(cfg, activation="relu")
        relu, relu_seconds, relu_caught = train_convex(split, relu_cfg, ckpt / "layerwise_convex_relu", seed,
                                                       data_cfg, device)
        relu.network.save(models_dir / "layerwise_convex_relu")
        models["layerwise_convex_relu"] = relu.network
        trained.append(("layerwise_convex_relu", relu.network, relu_seconds,
                        convex_solver_bytes(relu.records, relu_cfg)))
    for name, model, seconds, memory in trained:
        entry[name] = {**model_scores(model, va), "train_seconds": seconds, "peak_memory_bytes": int(memory)}
        images[name] = first_image(model, va)
    entry["layerwise_convex"].update(convex_effort(convex.records))
    if cfg.rule is not None:
        rule = e2e_selection["rule"]
        entry["end_to_end"].update({**adam_effort([rule]), "curve": curve_of([rule]),
                                    "rule_record": {k: v for k, v in rule.items() if k != "curve"}})
        if e2e_snapshot is not None:
            entry["end_to_end"]["at_convex_time"] = {**model_scores(e2e_snapshot, va), **rule["snapshot"]}
        rules = [r["rule"] for r in adam_records]
        entry["layerwise_adam"].update({**adam_effort(rules), "curve": curve_of(rules)})
    else:
        entry["end_to_end"]["weight_decay_selection"] = e2e_selection
    entry["layerwise_adam"]["blocks"] = [{"psnr": r["psnr"], "ssim": r["ssim"], "duality_gap": None,
                                          "relative_gap": None, "status": None} for r in adam_records]
    entry["layerwise_convex"]["blocks"] = block_rows(convex.records)
    entry["layerwise_convex"]["warnings"] = sorted({str(w.message)[:200] for w in caught})
    if relu is not None:
        entry["layerwise_convex_relu"]["blocks"] = block_rows(relu.records)
        entry["layerwise_convex_relu"].update(convex_effort(relu.records))
        entry["layerwise_convex_relu"]["width"] = hidden_width(relu_cfg)
        entry["layerwise_convex_relu"]["warnings"] = sorted({str(w.message)[:200] for w in relu_caught})
    if cfg.unrolled is not None:
        if "unrolled_starts" not in shared:
            shared["unrolled_starts"] = unrolled_starts(split, cfg, lamda, device)
        ucfg = cfg if e2e_rules is None or e2e_rules[1] is None else dataclasses.replace(
            cfg, unrolled=dataclasses.replace(cfg.unrolled, rule=e2e_rules[1],
                                              layerwise_rule=cfg.unrolled.stage_rule()))
        unrolled, unrolled_nets, val_start = train_unrolled_methods(split, ucfg, ckpt, models_dir, seed, data_cfg,
                                                                    device, cs_lambda=lamda,
                                                                    starts=shared["unrolled_starts"])
        snapshot = unrolled_nets.pop("unrolled_end_to_end@convex_time", None)
        entry.update(unrolled)
        models.update(unrolled_nets)
        entry["unrolled_convex"].update(convex_effort(entry["unrolled_convex"]["stages"]))
        if cfg.unrolled.rule is not None:
            rule = entry["unrolled_end_to_end"].pop("rule")
            entry["unrolled_end_to_end"].update({**adam_effort([rule]), "curve": curve_of([rule]),
                                                 "rule_record": {k: v for k, v in rule.items() if k != "curve"}})
            if snapshot is not None:
                entry["unrolled_end_to_end"]["at_convex_time"] = {**model_scores(snapshot, va, val_start),
                                                                  **rule["snapshot"]}
        if cfg.unrolled.stage_rule() is not None:
            rules = [st.pop("rule") for st in entry["unrolled_layerwise_adam"]["stages"]]
            entry["unrolled_layerwise_adam"].update({**adam_effort(rules), "curve": curve_of(rules)})
        if peer and peer_available() and cfg.unrolled.rule is not None:  # the external peer, first seed only
            models["peer_varnet"], entry["peer_varnet"] = peer_row(
                split, cfg.unrolled.rule, cfg.unrolled.batch_size, seed, cfg.holdout_volumes, device,
                entry["unrolled_convex"]["train_seconds"])
        for name in ("unrolled_convex", "unrolled_end_to_end"):
            images[name] = unrolled_nets[name].predict(va["data"], initial=val_start)[0].cpu()
    return models


def later_seeds(first: dict[str, Any], split: dict[str, Any], cfg: KneeConfig, seeds: list[int],
                data_cfg: dict[str, Any], device: torch.device, lamda: float, shared: dict[str, Any], out: Path,
                mask: str, first_seconds: float) -> dict[str, Any]:
    """The learned methods trained again with each of ``seeds[1:]`` (gates, windows, initialisation, data order)
    on the first seed's split, CS λ and unrolled CS starts; the spread over all seeds and the headline differences
    pooled over them (:mod:`benchmarks.kit.seeds`).

    The end-to-end baselines (CNN and unrolled) of a later seed train one run at the first seed's chosen lr and
    decay factor, stopped by the same rule (plateau, maximum of epochs, best held-out checkpoint); every other
    method repeats its whole selection. The global random state is restored afterwards, so the next mask's first
    seed sees what a single-seed run gives it."""
    rules: tuple[RuleConfig | None, RuleConfig | None] = (None, None)
    if cfg.rule is not None and first["end_to_end"].get("rule_record"):
        base = float(np.mean([b["beta"] / b["num_pixels"] for b in first["layerwise_convex"]["blocks"]]))
        rules = (fixed_rule(cfg.rule, first["end_to_end"]["rule_record"], base), None)
    u = cfg.unrolled
    if u is not None and u.rule is not None and first.get("unrolled_end_to_end", {}).get("rule_record"):
        e = first["unrolled_end_to_end"]
        rules = (rules[0], fixed_rule(u.rule, e["rule_record"], e["weight_decay"]))
    per_seed, seconds = [slim(first)], [first_seconds]
    state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        for s in seeds[1:]:
            print(f"\n--- mask {mask}, seed {s}: learned methods ---", flush=True)
            start, entry = time.perf_counter(), {}
            train_learned(entry, {}, split, cfg, s, data_cfg, device, lamda, shared,
                          out / "checkpoints" / mask / f"seed{s}", out / "models" / mask / f"seed{s}",
                          e2e_rules=None if rules == (None, None) else rules, peer=False)
            per_seed.append(slim(entry))
            seconds.append(time.perf_counter() - start)
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])
    differences = [d for d in (pooled_paired(per_seed, first, a, b) for a, b in HEADLINES
                               if not {a, b} & set(FIRST_SEED_ONLY)) if d is not None]
    return {"seeds": seeds, "learned_seconds": seconds, "per_seed": {str(s): e for s, e in zip(seeds[1:], per_seed[1:])},
            "spread": spread(per_seed), "differences": differences,
            "later_rules": {"end_to_end": None if rules[0] is None else dataclasses.asdict(rules[0]),
                            "unrolled_end_to_end": None if rules[1] is None else dataclasses.asdict(rules[1])}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="tiny configuration (about 5 minutes on 2 cores, one torch thread)")
    mode.add_argument("--full", action="store_true", help="the paper's settings (needs a GPU and real data)")
    mode.add_argument("--config", choices=sorted(CONFIGS), default=None,
                      help="a named configuration: quick, default, full, or gpu (the paper's geometry reduced to fit "
                           "8 minutes on one H100/H200; every reduction is printed)")
    parser.add_argument("--device", type=parse_device, default=parse_device(default_device()), metavar="DEVICE",
                        help=f"preprocessing and training device: cpu, cuda or cuda:N (default {default_device()}; "
                             f"cuda when available)")
    parser.add_argument("--data", type=Path, default=None, help="directory of fastMRI multi-coil .h5 files")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default benchmarks/results/knee, knee-quick or knee-full by mode)")
    parser.add_argument("--masks", nargs="+", default=list(MASKS), choices=list(MASKS))
    parser.add_argument("--seed", type=int, default=0,
                        help="the data's seed (synthetic set, masks) and the first seed of the learned methods")
    parser.add_argument("--seeds", type=int, default=None, metavar="N",
                        help="train the learned methods with N seeds (--seed, --seed + 1, ...; default the mode's: "
                             "quick 3, default 2, full and gpu 1) and report mean ± std over seeds and headline "
                             "differences pooled over them; the data, CS rows, figures and out-of-distribution rows are the "
                             "first seed's")
    parser.add_argument("--memory-only", action="store_true",
                        help="recount only the memory table (Fig. 4) of an existing run in --out and rewrite its "
                             "results and batch_size.png; the trained methods are kept as they are")
    parser.add_argument("--estimate-only", action="store_true", help="print the time estimate and the reductions, then exit")
    args = parser.parse_args(argv)
    if args.data is not None and not (args.data.is_dir() and any(args.data.glob("*.h5"))):
        parser.error(f"argument --data: expected a directory with .h5 files. Got {args.data}.")
    name = args.config or ("quick" if args.quick else "full" if args.full else "default")
    cfg = CONFIGS[name]
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error(f"argument --seeds: expected an integer >= 1. Got {args.seeds}.")
        cfg = dataclasses.replace(cfg, seeds=args.seeds)
    seeds = seed_list(args.seed, cfg.seeds)
    device = args.device
    estimate = estimate_seconds(cfg, str(device), masks=len(args.masks))
    print(f"run_knee ({name}) on {device}: estimated {sum(estimate.values()) / 60:.1f} min "
          f"at most ({', '.join(f'{k} {v:.0f} s' for k, v in estimate.items())}; a rough upper bound from "
          f"docs/benchmarks.md's timings, not a measurement: it counts every Adam candidate to its maximum of epochs, "
          f"and early stopping usually ends them several times sooner)", flush=True)
    for reduction in REDUCTIONS.get(name, ()):
        print(f"  reduction from the paper's settings: {reduction}", flush=True)
    if args.estimate_only:
        return 0
    torch.manual_seed(args.seed)
    # each mode has its own default directory, so --quick never overwrites the recorded default run
    out = args.out or Path("benchmarks/results") / ("knee" if name == "default" else f"knee-{name}")
    if args.memory_only:
        return recount_memory(out, argv)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.data is None:
        syn = cfg.synthetic
        root = out / f"data_{syn.volumes}x{syn.slices}_{syn.coils}c_{syn.shape[0]}x{syn.shape[1]}"
        if not any(root.glob("*.h5")):
            print(f"writing synthetic data to {root}: {syn}", flush=True)
            t = time.perf_counter()
            synthetic_parallel(root, os.cpu_count() or 1, volumes=syn.volumes, slices=syn.slices,
                               coils=syn.coils, shape=tuple(syn.shape), snr=syn.snr, seed=args.seed)
            print(f"synthetic data: {time.perf_counter() - t:.0f} s", flush=True)
        description = (f"synthetic knee-like set (convexrecon.data.make_synthetic): {syn.volumes} volumes × "
                       f"{syn.slices} slices, {syn.coils} coils, k-space {syn.shape[0]}×{syn.shape[1]}, "
                       f"SNR {syn.snr}")
        condition_roots = write_conditions(out, cfg, args.seed, os.cpu_count() or 1)
        if condition_roots:
            description += ("; out of distribution: " + "; ".join(
                f"{c.name} ({c.volumes} volume(s) × {syn.slices} slices, {c.coils} coils)" for c in cfg.conditions)
                + ", every slice scored")
    else:
        root, description = args.data, f"fastMRI multi-coil files in {args.data}"
        condition_roots = []
        print("run_knee: --data given: the out-of-distribution rows (synthetic sets) are skipped", flush=True)
    windows = ("whole training slices" if cfg.patch_size is None else
               f"{cfg.patches_per_slice} seeded {cfg.patch_size}×{cfg.patch_size} windows per training slice")
    description += (f"; crop {cfg.crop}×{cfg.crop}; first {cfg.val_volumes} volume(s) by name = validation, "
                     f"the rest = training. Convex fits on {windows}; "
                     f"{cfg.blocks} blocks, {cfg.kernel_size}×{cfg.kernel_size} kernels, "
                     f"{cfg.activation} ReLU, P = {cfg.num_arrangements} {cfg.gate_sampling} "
                     f"gates, {beta_text(cfg)}, "
                     f"tol {cfg.tol}, "
                     f"max_iter {cfg.max_iter}; Adam baselines on whole training slices, width "
                     f"{hidden_width(cfg)}, "
                     + (f"{cfg.epochs_end_to_end} / {cfg.epochs_layerwise} epochs (lr 1e-4 halved every "
                        f"{cfg.halve_every}), " if cfg.rule is None else
                        f"trained by the library's rule (lr from {list(cfg.rule.lrs)}, weight decay from "
                        f"{list(cfg.rule.decay_factors)} × d, search {cfg.rule.search}, both chosen by the loss on "
                        f"the last training volume (held out; never the validation volume); stop after "
                        f"{cfg.rule.patience} epochs without a {cfg.rule.rel_tol:g} relative improvement, at most "
                        f"{cfg.rule.max_epochs} epochs = not converged; the best held-out checkpoint kept; the "
                        f"unrolled Adam baselines likewise with {cfg.unrolled.rule if cfg.unrolled else None}), ")
                     + f"batch {cfg.batch_size}, weight decay d = mean beta_i / n_i of the convex blocks"
                     + ("" if cfg.beta_ratios is None or cfg.rule is not None else
                        ", end-to-end's chosen from {0, d, 10 d} on the same held-out training volume"))
    if len(seeds) > 1:
        description += (f". Learned methods trained with seeds {seeds} (gates, patch windows, initialisation, data "
                        f"order) on the data, masks, preprocessing, CS λ and unrolled CS starts of seed {seeds[0]}; "
                        f"the classical rows are computed once. Seeds after the first: the end-to-end baselines (CNN "
                        f"and unrolled) train one run at seed {seeds[0]}'s chosen lr and decay factor, stopped by the "
                        f"same rule; every other learned method repeats its whole selection (lr / decay grid, β, λ). "
                        f"Figures, per-block tables and the out-of-distribution rows are seed {seeds[0]}'s")
    print(f"run_knee ({name}): {description}", flush=True)
    masks: dict[str, Any] = {}
    images: dict[str, Any] = {}
    shifted: dict[str, Any] = {}
    for mask in args.masks:
        print(f"\n=== mask {mask} ===", flush=True)
        masks[mask], images[mask], shift = run_mask(mask, root, cfg, out, args.seed, device, condition_roots, seeds)
        if shift is not None:
            shifted[mask] = shift
    if device.type == "cuda":
        print("\nmemory at the paper's full architecture, measured on CUDA under a 12 GiB cap ...", flush=True)
        memory = measured_memory_table(device)
    else:
        print("\nmemory at the paper's full architecture (meta-device count, a lower bound) ...", flush=True)
        memory = memory_table([256] * 4, 7, 320)
        memory["method"] = "count (lower bound), not measured: " + memory["method"]
    results = {
        "config": {**cfg.to_dict(), "mode": name, "command": command("run_knee.py", argv), "machine": machine(),
                   "device": str(device), "estimated_seconds": estimate, "reductions": list(REDUCTIONS.get(name, ())),
                   "date": utc_now(),
                   "data_description": description, "seed": args.seed, "seeds": seeds,
                   "total_seconds": time.perf_counter() - t0,
                   "peak_memory_method": ("end_to_end / layerwise_adam: meta-device count of params + grads + Adam "
                                          "state + inputs + saved_tensors_hooks at the benchmark's size and batch; "
                                          "layerwise_convex: fit_layer's own memory estimate "
                                          "(convexrecon.block.guard.fit_memory_terms) of the largest block solve")},
        "masks": masks,
        "out_of_distribution": shifted or None,
        "memory": memory,
    }
    write_results(out, results, markdown(results))
    plot_psnr_vs_layers(masks, out / "psnr_vs_layers.png")
    plot_examples(images, out / "examples.png")
    plot_batch_size(memory, out / "batch_size.png")
    plot_training_curves(masks, out / "training_curves.png")
    print("\n" + markdown(results))
    print(f"written: {', '.join(p.name for p in sorted(out.glob('*.*')))} in {out}")
    return 0


def recount_memory(out: Path, argv: list[str] | None) -> int:
    """Replace the memory section of ``out/results.json`` by a fresh count (e.g. after a fix of the counter)."""
    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"run_knee --memory-only: expected an existing run in {out} (results.json); found none")
    results = json.loads(path.read_text())
    results["memory"] = memory_table([256] * 4, 7, 320)
    results["config"]["memory_recounted"] = {
        "date": utc_now(), "command": command("run_knee.py", argv)}
    write_results(out, results, markdown(results))
    plot_batch_size(results["memory"], out / "batch_size.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
