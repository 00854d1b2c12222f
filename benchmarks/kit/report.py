"""The knee experiment's ``results.md``: one table per mask (PSNR, SSIM, seconds, epochs or solver iterations,
converged or certified), the per-block and per-stage tables, the training rule's choices, the headline differences
as paired intervals, the out-of-distribution rows and the memory table."""

from __future__ import annotations

from typing import Any

from benchmarks.kit.evidence import effort_cell
from benchmarks.kit.seeds import FIRST_SEED_ONLY
from benchmarks.kit.shift import RECOMMENDED

CNN_METHODS = ("zero_filled", "cs_l1_wavelet", "cs_cycle_spun", "end_to_end", "layerwise_adam", "layerwise_convex",
                "layerwise_convex_relu")
UNROLLED_METHODS = ("cs_ensemble_mean", "unrolled_convex", "unrolled_end_to_end", "unrolled_layerwise_adam",
                    "peer_varnet")
METHODS = CNN_METHODS + UNROLLED_METHODS
# the headline differences, each a paired per-slice interval
HEADLINES = (("layerwise_convex", "end_to_end"), ("layerwise_convex", "layerwise_adam"),
             ("layerwise_convex_relu", "end_to_end"), ("layerwise_convex", "cs_cycle_spun"),
             ("unrolled_convex", "unrolled_end_to_end"), ("unrolled_convex", "unrolled_layerwise_adam"),
             ("unrolled_convex", "cs_cycle_spun"), ("unrolled_convex", "cs_l1_wavelet"),
             ("unrolled_convex", "peer_varnet"))


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    lines = [f"# Knee reconstruction (run_knee.py, mode `{cfg['mode']}`)", "",
             f"Command: `{cfg['command']}`  ", f"Machine: {cfg['machine']}; date {cfg['date']}; "
             f"total wall time {cfg['total_seconds']:.0f} s", "",
             f"Data: {cfg['data_description']}", "",
             "Slice-wise PSNR/SSIM (data range = each target slice's maximum), mean ± std over validation slices. "
             "train (s): the whole training (Adam: every lr / weight-decay candidate; convex: every β candidate and "
             "the final solves). epochs: the chosen Adam run's (summed over blocks / stages), converged = its "
             "held-out loss stopped improving before the maximum of epochs; iterations: the convex solver's (summed), "
             "certified = every solve reached its duality-gap tolerance.",
             ""]
    for mask, entry in results["masks"].items():
        lines += [f"## Mask `{mask}` (4×)", "", "| method | PSNR (dB) | SSIM | train (s) | epochs / iterations | "
                  "converged / certified | peak memory / step |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for m in (m for m in METHODS if m in entry):
            e = entry[m]
            mem = f"{e['peak_memory_bytes'] / 2**20:.1f} MiB" if e.get("peak_memory_bytes") else "—"
            effort, done = effort_cell(e)
            lines.append(f"| {m} | {e['psnr_mean']:.2f} ± {e['psnr_std']:.2f} | {e['ssim_mean']:.4f} ± "
                         f"{e['ssim_std']:.4f} | {e['train_seconds']:.1f} | {effort} | {done} | {mem} |")
            if e.get("at_convex_time"):
                t = e["at_convex_time"]
                lines.append(f"| {m} at the convex method's time | {t['psnr_mean']:.2f} ± {t['psnr_std']:.2f} | "
                             f"{t['ssim_mean']:.4f} ± {t['ssim_std']:.4f} | {t['seconds']:.1f} | {t['epoch']} ep "
                             f"(best by then) | — | — |")
        if any(isinstance(e, dict) and e.get("at_convex_time") for e in entry.values()):
            lines += ["", "*At the convex method's time*: the chosen (lr, weight decay) run's best held-out checkpoint "
                      "among the epochs it finished within the wall time of its convex counterpart (layer-wise CNN: "
                      "`layerwise_convex`; unrolled: `unrolled_convex`); the lr / weight-decay search is not counted. "
                      "Adam rows train on the training slices outside the held-out volume (it chooses their lr, "
                      "weight decay and stopping epoch); the convex rows re-solve on all training slices once β is "
                      "chosen."]
        relu = entry.get("layerwise_convex_relu")
        head = "| block | convex (gated) PSNR | SSIM | duality gap | relative gap | status | solver | width |"
        rule = "| --- | --- | --- | --- | --- | --- | --- | --- |"
        if relu:
            head += " exact-ReLU PSNR | relative gap | status | solver | width |"
            rule += " --- | --- | --- | --- | --- |"
        lines += ["", head + " Adam PSNR | Adam SSIM |", rule + " --- | --- |"]
        for i, (b, a) in enumerate(zip(entry["layerwise_convex"]["blocks"], entry["layerwise_adam"]["blocks"])):
            row = (f"| {i + 1} | {b['psnr']:.2f} | {b['ssim']:.4f} | {b['duality_gap']:.3g} | {b['relative_gap']:.2g} | "
                   f"{b['status']} | {b.get('solver')} | {b['width']} |")
            if relu:
                r = relu["blocks"][i]
                row += f" {r['psnr']:.2f} | {r['relative_gap']:.2g} | {r['status']} | {r.get('solver')} | {r['width']} |"
            lines.append(row + f" {a['psnr']:.2f} | {a['ssim']:.4f} |")
        chosen = entry["end_to_end"].get("weight_decay_selection")
        if chosen:
            lines += ["", "End-to-end weight decay chosen on the held-out training volume: "
                      f"{chosen['chosen']:.3g} of {', '.join(f'{d:.3g}' for d in chosen['weight_decays'])} "
                      f"(held-out squared errors {', '.join(f'{e:.4g}' for e in chosen['holdout_sq_error'])})."]
        if any(b.get("selection") for b in entry["layerwise_convex"]["blocks"]):
            ratios = [b.get("beta_ratio") for b in entry["layerwise_convex"]["blocks"]]
            lines += ["", f"Convex (gated) β ratios chosen per block on the held-out training volume: {ratios}."]
            if relu:
                lines[-1] += f" Exact ReLU: {[b.get('beta_ratio') for b in relu['blocks']]}."
        for name in ("end_to_end", "layerwise_adam"):
            if entry[name].get("chosen"):
                lines += ["", f"{name} by the training rule (lr, weight decay chosen on the held-out training volume; "
                          f"per run/block): " + "; ".join(f"lr {c['lr']:g}, wd {c['weight_decay']:.3g}, "
                                                          f"{c['epochs']} epochs (best {c['best_epoch']}), "
                                                          f"{'converged' if c['converged'] else 'NOT converged'}"
                                                          for c in entry[name]["chosen"]) + "."]
        gap = entry["layerwise_convex"]["psnr_mean"] - entry["end_to_end"]["psnr_mean"]
        lines += ["", f"Convex layer-wise − end-to-end: {gap:+.2f} dB (target: within 0.3 dB)."]
        if relu:
            lines[-1] += (f" Exact-ReLU − gated convex layer-wise: "
                          f"{relu['psnr_mean'] - entry['layerwise_convex']['psnr_mean']:+.2f} dB.")
        if "unrolled_convex" in entry:
            lines += ["", "| stage | convex unrolled PSNR | λ | β ratio | width | status | relative gap | solver | "
                      "layer-wise Adam PSNR |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
            for st, a in zip(entry["unrolled_convex"]["stages"], entry["unrolled_layerwise_adam"]["stages"]):
                if st.get("identity"):  # every candidate scored below the stage's input on the held-out volume
                    lines.append(f"| {st['stage']} | {fmt(st.get('psnr'), '.2f')} | — | — | — | identity (kept its "
                                 f"input) | — | — | {a['psnr']:.2f} |")
                    continue
                lines.append(f"| {st['stage']} | {st['psnr']:.2f} | {st['lam']:g} | {st['beta_ratio']} | {st['width']} | "
                             f"{st['status']} | {st['relative_gap']:.2g} | {st.get('solver')} | {a['psnr']:.2f} |")
            arch = entry["unrolled_convex"].get("architecture") or {}
            if arch.get("cs_iterations") or arch.get("shrink") or arch.get("bias"):
                blocks = "exact-ReLU" if arch.get("activation") == "relu" else "gated"
                unit = "× σ̂ (the slice's noise level)" if arch.get("cs_relative") == "noise" else "× max|zero-filled|"
                images = ((["zero-filled"] if arch.get("concat_input", True) else [])
                          + ([f"db4-shrunk estimate at t = {', '.join(map(str, arch['shrink']))} × max|zero-filled|"]
                             if arch.get("shrink") else [])
                          + (["CS images at (λ, wavelet) " + ", ".join(f"({v:.3g}, {w})" for v, w in arch["cs_inputs"])]
                             if arch.get("cs_inputs") else [])
                          + (["SENSE-CG"] if arch.get("sense_input") else []))
                listed = (("every image minus the estimate: " if arch.get("residual") else "estimate, ")
                          + ("a constant channel, " if arch.get("bias") else "") + ", ".join(images))
                lines += ["", f"Unrolled architecture: {arch.get('stages')} stages ({blocks} convex blocks) refining "
                          + (f"{arch['cs_iterations']} FISTA steps of L1-wavelet CS (λ {arch['cs_lambda']:.3g} {unit}, "
                             f"CS's)" if arch.get("cs_iterations") else "the zero-filled image")
                          + f"; block inputs: {listed}"
                          + ("; the identity stage among the held-out candidates" if arch.get("keep_start") else "")
                          + "."]
            for name in ("unrolled_end_to_end", "unrolled_layerwise_adam"):
                if entry[name].get("chosen"):
                    lines += ["", f"{name} by the training rule: " + "; ".join(
                        f"lr {c['lr']:g}, wd {c['weight_decay']:.3g}, {c['epochs']} epochs (best {c['best_epoch']}), "
                        f"{'converged' if c['converged'] else 'NOT converged'}" for c in entry[name]["chosen"]) + "."]
            u, c, e = (entry[k]["psnr_mean"] for k in ("unrolled_convex", "cs_l1_wavelet", "unrolled_end_to_end"))
            lines += ["", f"Convex unrolled − CS: {u - c:+.2f} dB (target ≥ +1 dB); convex unrolled − unrolled "
                      f"end-to-end: {u - e:+.2f} dB (target: within 0.3 dB). End-to-end learned λ: "
                      f"{', '.join(f'{v:.3g}' for v in entry['unrolled_end_to_end']['learned_lambdas'])}."]
            if "cs_ensemble_mean" in entry:
                lines[-1] += (f" Convex unrolled − the plain average of its {entry['cs_ensemble_mean']['cs_images']} "
                              f"CS images (no learning): {u - entry['cs_ensemble_mean']['psnr_mean']:+.2f} dB.")
        if entry.get("differences"):
            lines += ["", "Headline differences (validation PSNR, paired per slice, 95 % Student-t interval over "
                      "slices; slices of one volume are correlated, so the interval is optimistic):", ""]
            lines += [f"- {d['a']} − {d['b']}: {d['text']}" for d in entry["differences"]]
        if entry.get("seeds"):
            lines += seed_lines(entry, results["config"])
        lines.append("")
    if results.get("out_of_distribution"):
        lines += shift_lines(results["out_of_distribution"])
    mem = results["memory"]
    lines += ["## Memory at the paper's full architecture (Fig. 4)", "",
              f"{mem['method']}; 5 conv layers, 256 channels, 7×7, 320×320, float32, budget 12 GiB.", "",
              "| training | bytes at batch 1 | max batch in 12 GiB |", "| --- | --- | --- |",
              f"| end-to-end | {mem['end_to_end']['batch_1']['total']:,} | {mem['end_to_end']['max_batch_12gb']} |"]
    for b in mem["layerwise"]["blocks"]:
        lines.append(f"| layer-wise block {b['block']} | {b['batch_1']['total']:,} | {b['max_batch_12gb']} |")
    if "convex_solve" in mem:
        lines.append(f"| convex block solve, in memory (320×320 slices) | — | {mem['convex_solve']['max_slices_12gb']} |")
    ratio = mem["layerwise"]["max_batch_12gb"] / max(mem["end_to_end"]["max_batch_12gb"], 1)
    lines += ["", f"Layer-wise (worst block) / end-to-end max batch: {ratio:.2f}× (target ≥ 1.6×).", ""]
    return "\n".join(lines)


def seed_lines(entry: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """The spread-over-seeds table of one mask (mean ± sample std over seeds of each learned row's mean PSNR / SSIM;
    the classical rows once) and the headline differences pooled over seeds."""
    info = entry["seeds"]
    seeds, spread = info["seeds"], info["spread"]
    n = len(seeds)
    total = cfg.get("total_seconds")
    budget = ("" if cfg.get("mode") != "quick" or total is None else
              f" Whole run (both masks, all seeds): {total:.0f} s, "
              + ("within" if total <= 300 else "**over**") + " the quick mode's 5-minute budget.")
    lines = ["", f"### Spread over {n} seeds {seeds}", "",
             f"Learned rows: mean ± sample std (ddof 1) over the seeds of each seed's mean validation PSNR / SSIM; "
             f"train (s): mean over seeds. Classical rows: seed-independent, computed once. Learned-method time per "
             f"seed (this mask): {', '.join(f'{t:.0f} s' for t in info['learned_seconds'])}.{budget}", "",
             f"| method | PSNR (dB), {n} seeds | SSIM, {n} seeds | train (s), mean | epochs / iterations per seed | "
             f"converged / certified (all seeds) |", "| --- | --- | --- | --- | --- | --- |"]
    for m in (m for m in METHODS if m in entry):
        if m in spread:
            e = spread[m]
            effort = ", ".join(f"{v} ep" for v in e["epochs"]) if "epochs" in e else (
                ", ".join(f"{v} it" for v in e["iterations"]) if "iterations" in e else "—")
            done = ("yes" if e["converged"] else "**no** (max epochs in some seed)") if "converged" in e else (
                ("certified" if e["certified"] else "**not certified** in some seed") if "certified" in e else "—")
            lines.append(f"| {m} | {e['psnr_mean']:.2f} ± {e['psnr_std_seeds']:.2f} | {e['ssim_mean']:.4f} ± "
                         f"{e['ssim_std_seeds']:.4f} | {e['train_seconds_mean']:.1f} | {effort} | {done} |")
        elif isinstance(entry[m], dict) and "psnr_mean" in entry[m]:
            which = f"seed {seeds[0]} only" if m in FIRST_SEED_ONLY else "seed-independent"
            lines.append(f"| {m} | {entry[m]['psnr_mean']:.2f} ({which}) | {entry[m]['ssim_mean']:.4f} | "
                         f"— | — | — |")
    if info.get("differences"):
        lines += ["", f"Headline differences pooled over {n} seeds (each validation slice's PSNR difference averaged "
                  f"over the seeds, then the paired 95 % Student-t interval over slices; it reflects slice-to-slice "
                  f"spread after averaging, not seed-to-seed spread, which the per-seed means show):", ""]
        lines += [f"- {d['a']} − {d['b']}: {d['text']}" for d in info["differences"]]
    return lines


def fmt(value: Any, spec: str) -> str:
    """``value`` formatted by ``spec``, or a dash when it is missing."""
    return "—" if value is None else format(value, spec)


def shift_lines(shifted: dict[str, Any]) -> list[str]:
    """The out-of-distribution tables (:mod:`benchmarks.kit.shift`): one per mask, methods by condition, and the
    recommended network against the best classical row of every condition."""
    lines = ["## Out of distribution: trained on knee at one SNR, tested on other anatomy, SNR and coils", "",
             "Every model as trained above, every slice of each set scored. CS and cycle-spun CS take λ chosen on "
             "the set's own slices by their PSNR (an oracle no user has: an upper bound on CS there); SENSE-CG "
             "is unregularised (no parameter). Bold: the best classical row.", ""]
    for mask, conditions in shifted.items():
        names = list(conditions)
        first = conditions[names[0]]
        methods = [m for m in METHODS if m in first and isinstance(first[m], dict) and "psnr_mean" in first[m]]
        methods += [m for m in ("sense_cg",) if m in first and m not in methods]
        order = [m for m in ("zero_filled", "sense_cg", "cs_l1_wavelet", "cs_cycle_spun") if m in methods]
        order += [m for m in methods if m not in order]
        lines += [f"### {mask}: PSNR (dB), mean ± std over slices", "",
                  "| method | " + " | ".join(f"{n} ({conditions[n]['slices']} slices)" for n in names) + " |",
                  "| --- |" + " --- |" * len(names)]
        for m in order:
            cells = []
            for n in names:
                e = conditions[n][m]
                cell = f"{e['psnr_mean']:.2f} ± {e['psnr_std']:.2f}"
                cells.append(f"**{cell}**" if conditions[n]["best_classical"] == m else cell)
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines += ["", f"{RECOMMENDED} − the best classical row (paired per slice, 95 % interval; passes when the "
                  f"mean is at most 0.2 dB below):", ""]
        for n in names:
            e = conditions[n]
            d = (e.get("versus_best_classical") or {}).get(RECOMMENDED)
            if d is None:
                continue
            verdict = "passes" if e.get("recommended_passes") else "**fails**"
            lines.append(f"- {n}: − {e['best_classical']}: {d['text']} ({verdict})")
        lines.append("")
    return lines
