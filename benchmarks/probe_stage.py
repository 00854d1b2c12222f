"""What limits one stage of the convex unrolled network: stage input features, and CS at equal iteration counts.

On run_knee's preprocessed split (same data, masks and ESPIRiT as ``run_knee.py``) this measures, on the
validation slices:

1. **L1-wavelet CS by iteration count** (sigpy's ``L1WaveletRecon``, λ as run_knee chooses it): how many CS
   iterations the unrolled network's few stages compete with.
2. **Unlearned shrink-DC**: ``x <- DC_λ(S_t(x))`` with ``S_t`` Daubechies-4 soft-thresholding (CS's prior) and
   the unrolled network's DC step, per iteration: an unrolled network whose stages apply CS's prior exactly.
3. **One convex stage per feature set**: from ``x = DC(x_1)`` (the first stage's input), one gated block is fit
   on the residual ``y - x`` with the features named in ``--features`` and scored on the crop and after a DC
   step (λ grid). Features: ``x`` (current estimate, 2 channels), ``x1`` (zero-filled), ``one`` (a constant
   channel: the first layer's bias), ``blur`` (``x`` box-blurred at 2, 4 and 8 pixels: context beyond the
   kernel), ``shrink`` (``x`` soft-thresholded in the db4 wavelet domain at ``--thresholds``).

    python -m benchmarks.probe_stage --mask lines --features x+x1,x+x1+one,x+x1+one+shrink

Writes ``results.json`` and ``results.md`` under ``--out`` (default ``benchmarks/results/probe-stage-MODE-MASK``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as run_knee.py (docs/data.md, performance note)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import convexrecon as cr  # noqa: E402
from benchmarks.kit.configs import CONFIGS  # noqa: E402
from benchmarks.kit.data import split_under  # noqa: E402
from benchmarks.kit.methods import cs_predictions, scores  # noqa: E402
from benchmarks.kit.runinfo import command, machine, utc_now, write_results  # noqa: E402
from convexrecon.mri.consistency import crop_center, data_consistency, embed_crop  # noqa: E402
from convexrecon.mri.fft import channels_to_complex, complex_to_channels  # noqa: E402
from convexrecon.mri.sense import sense_adjoint  # noqa: E402
from convexrecon.mri.sparsity import wavelet_shrink  # noqa: E402

FEATURES = ("x", "x1", "one", "blur", "shrink")
BLUR_SCALES = (2, 4, 8)


def box_blur(h: torch.Tensor, s: int) -> torch.Tensor:
    """Separable box blur of width ``2s + 1`` per channel (reflected edges)."""
    c = h.shape[1]
    k = torch.full((c, 1, 1, 2 * s + 1), 1.0 / (2 * s + 1), dtype=h.dtype)
    h = F.conv2d(F.pad(h, (s, s, 0, 0), mode="reflect"), k, groups=c)
    return F.conv2d(F.pad(h, (0, 0, s, s), mode="reflect"), k.transpose(2, 3), groups=c)


def features_of(x: torch.Tensor, x1: torch.Tensor, crop: int, thresholds: list[float]) -> dict[str, torch.Tensor]:
    """Every feature of the full-grid estimate ``x`` (zero-filled ``x1``) on the centre crop."""
    def ch(t: torch.Tensor) -> torch.Tensor:
        return complex_to_channels(crop_center(t, crop)).float()

    f = {"x": ch(x), "x1": ch(x1)}
    f["one"] = torch.ones_like(f["x"][:, :1])
    f["blur"] = torch.cat([box_blur(f["x"], s) for s in BLUR_SCALES], 1)
    f["shrink"] = torch.cat([ch(s) for s in wavelet_shrink(x, thresholds)], 1)
    return f


def stage_features(part: dict[str, Any], lam0: float, cg: int, thresholds: list[float]) -> tuple[Any, Any, dict]:
    """The zero-filled ``x_1``, the first stage's input ``x = DC(x_1)`` (full grid) and every feature of it."""
    d = part["data"]
    x1 = sense_adjoint(d.kspace, d.maps, d.mask)
    x = data_consistency(x1, d.kspace, d.maps, d.mask, lam0, iterations=cg)
    return x1, x, features_of(x, x1, d.crop, thresholds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="default")
    parser.add_argument("--mask", choices=("poisson", "lines"), default="lines")
    parser.add_argument("--features", default="x+x1,x+x1+one,x+x1+one+shrink",
                        help=f"comma-separated feature sets, each '+'-joined names from {FEATURES}")
    parser.add_argument("--thresholds", default="0.003,0.01,0.03", help="soft thresholds of the 'shrink' feature")
    parser.add_argument("--cs-iterations", default="5,10,30,100", help="CS iteration counts to score")
    parser.add_argument("--shrink-iterations", type=int, default=8)
    parser.add_argument("--beta-ratio", type=float, default=1e-3)
    parser.add_argument("--gated-method", choices=("fista", "interior_point"), default="fista")
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--chain", type=int, default=0,
                        help="also train a greedy chain of this many stages per feature set (fixed DC λ, below)")
    parser.add_argument("--chain-lambda", type=float, default=1.0, help="DC λ of every chain stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    sets = [s.split("+") for s in args.features.split(",") if s]
    bad = sorted({n for s in sets for n in s} - set(FEATURES))
    if bad or not sets:
        parser.error(f"argument --features: expected '+'-joined names from {FEATURES}. Got {args.features!r}.")
    try:
        thresholds = [float(v) for v in args.thresholds.split(",")]
        cs_iterations = [int(v) for v in args.cs_iterations.split(",") if v]
    except ValueError as error:
        parser.error(f"--thresholds / --cs-iterations: expected comma-separated numbers ({error}).")
    if args.chain < 0 or not args.chain_lambda > 0 or not args.beta_ratio > 0 or args.max_iter < 1:
        parser.error(f"--chain must be >= 0, --chain-lambda and --beta-ratio > 0, --max-iter >= 1. Got "
                     f"{args.chain}, {args.chain_lambda}, {args.beta_ratio}, {args.max_iter}.")
    cfg = CONFIGS[args.config]
    u = cfg.unrolled
    out = args.out or Path("benchmarks/results") / f"probe-stage-{args.config}-{args.mask}"
    split = split_under(out, cfg, args.mask, args.seed)
    tr, va = split["train"], split["val"]
    dv = va["data"]
    lam0, cg, lams = u.lambdas[0], u.cg_iterations, (0.01, 0.1, 1.0)

    def psnr(pred: Any) -> float:  # cropped: 2 channels or complex
        n = len(pred)
        return scores(va["targets"][:n], pred, va["scales"][:n], va["volumes"][:n])["psnr_mean"]

    def psnr_full(x: torch.Tensor) -> float:
        return psnr(complex_to_channels(crop_center(x, dv.crop)).float())

    results: dict[str, Any] = {"zero_filled": psnr(va["inputs"])}
    cs_rows = []
    lamda = None  # chosen as run_knee chooses it (at the mode's own iteration count), then kept for every count
    for iters in sorted(cs_iterations, key=lambda i: i != cfg.cs_max_iter):
        start = time.perf_counter()
        if lamda is None and iters != cfg.cs_max_iter:
            _, lamda, _ = cs_predictions(split, cfg)
        preds, lamda, _ = cs_predictions(split, dataclasses.replace(cfg, cs_max_iter=iters), lamda)
        row = {"iterations": iters, "lambda": lamda, "psnr": psnr(preds), "slices": len(preds),
               "seconds": time.perf_counter() - start}
        cs_rows.append(row)
        print(f"CS {iters} iterations (λ {lamda}): {row['psnr']:.2f} dB", flush=True)
    results["cs"] = cs_rows
    x1t, xt, ft = stage_features(tr, lam0, cg, thresholds)
    x1v, xv, fv = stage_features(va, lam0, cg, thresholds)
    results["stage_input"] = psnr(fv["x"])
    shrink_rows = []
    for t in thresholds:
        for lam in (0.1, 1.0):
            x = xv  # DC(x_1), the first stage's input
            history = []
            for _ in range(args.shrink_iterations):
                x = data_consistency(wavelet_shrink(x, [t])[0], dv.kspace, dv.maps, dv.mask, lam, iterations=cg)
                history.append(psnr_full(x))
            shrink_rows.append({"threshold": t, "lambda": lam, "psnr": history})
            print(f"shrink-DC t {t} λ {lam}: {[round(p, 2) for p in history]}", flush=True)
    results["shrink_dc"] = shrink_rows

    def fit(inputs: torch.Tensor, residual: torch.Tensor, seed: int) -> Any:
        return cr.fit_layer(inputs, residual, kernel_size=u.kernel_size, num_arrangements=u.num_arrangements,
                            activation="gated", gate_sampling="antithetic", beta_ratio=args.beta_ratio, tol=1e-3,
                            max_iter=args.max_iter, seed=seed, gated_method=args.gated_method)

    def chain(names: list[str]) -> tuple[list[float], list[str]]:
        """Validation PSNR after each of ``args.chain`` greedy stages (stage i fit on the training chain)."""
        dt = tr["data"]
        state = {"t": xt, "v": xv}
        history, statuses = [psnr_full(xv)], []
        for i in range(args.chain):
            f = features_of(state["t"], x1t, dt.crop, thresholds)
            block = fit(torch.cat([f[n] for n in names], 1), tr["targets"] - f["x"], args.seed + i)
            statuses.append(block.report.status.value)
            for key, x1, d in (("t", x1t, dt), ("v", x1v, dv)):
                f = features_of(state[key], x1, d.crop, thresholds)
                with torch.no_grad():
                    z = f["x"] + block(torch.cat([f[n] for n in names], 1))
                state[key] = data_consistency(embed_crop(state[key], channels_to_complex(z).to(state[key].dtype)),
                                              d.kspace, d.maps, d.mask, args.chain_lambda, iterations=cg)
            history.append(psnr_full(state["v"]))
            print(f"  chain {'+'.join(names)} stage {i + 1}: {history[-1]:.2f} dB ({statuses[-1]})", flush=True)
        return history, statuses

    feature_rows = []
    for names in sets:
        inp_t, inp_v = torch.cat([ft[n] for n in names], 1), torch.cat([fv[n] for n in names], 1)
        start = time.perf_counter()
        block = fit(inp_t, tr["targets"] - ft["x"], args.seed)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            z = fv["x"] + block(inp_v)
        after = [psnr_full(data_consistency(embed_crop(xv, channels_to_complex(z).to(xv.dtype)), dv.kspace,
                                            dv.maps, dv.mask, lam, iterations=cg)) for lam in lams]
        row = {"features": "+".join(names), "channels": inp_t.shape[1], "crop_psnr": psnr(z),
               "after_dc": dict(zip(map(str, lams), after)), "status": block.report.status.value,
               "relative_gap": block.report.relative_gap, "seconds": seconds}
        if args.chain:
            row["chain_psnr"], row["chain_status"] = chain(names)
        feature_rows.append(row)
        print(f"{row['features']}: crop {row['crop_psnr']:.2f} dB, after DC {[round(a, 2) for a in after]}, "
              f"{row['status']} ({seconds:.0f} s)", flush=True)
    results["stages"] = feature_rows
    md = [f"# One unrolled stage, probed ({args.config}, mask {args.mask})", "",
          f"Command: `{command('probe_stage.py', argv)}`  ", f"Machine: {machine()}; {utc_now()}", "",
          (f"Zero-filled {results['zero_filled']:.2f} dB; the first stage's input x = DC(x_1) "
          f"{results['stage_input']:.2f} dB (validation slices)."), "",
          "| L1-wavelet CS iterations | λ | PSNR (dB) | s |", "| ---: | ---: | ---: | ---: |"]
    md += [f"| {r['iterations']} | {r['lambda']} | {r['psnr']:.2f} | {r['seconds']:.0f} |"
           for r in sorted(cs_rows, key=lambda r: r["iterations"])]
    md += ["", "| shrink-DC threshold | DC λ | PSNR per iteration (dB) |", "| ---: | ---: | --- |"]
    md += [f"| {r['threshold']} | {r['lambda']} | {', '.join(f'{p:.2f}' for p in r['psnr'])} |" for r in shrink_rows]
    md += ["", f"| stage features | channels | crop PSNR | after DC λ = {', '.join(map(str, lams))} | status | s |",
           "| --- | ---: | ---: | --- | --- | ---: |"]
    md += [f"| {r['features']} | {r['channels']} | {r['crop_psnr']:.2f} | "
           f"{', '.join(f'{v:.2f}' for v in r['after_dc'].values())} | {r['status']} | {r['seconds']:.0f} |"
           for r in feature_rows]
    if args.chain:
        md += ["", (f"Greedy chains of {args.chain} stages (DC λ {args.chain_lambda} fixed, β {args.beta_ratio} β_max), "
               "validation PSNR from the chain's input through each stage (dB):"), "",
               "| stage features | per stage | status |", "| --- | --- | --- |"]
        md += [f"| {r['features']} | {', '.join(f'{p:.2f}' for p in r['chain_psnr'])} | "
               f"{', '.join(r['chain_status'])} |" for r in feature_rows]
    write_results(out, {"command": command("probe_stage.py", argv), "machine": machine(), "date": utc_now(),
                        "config": args.config, "mask": args.mask, **results}, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
