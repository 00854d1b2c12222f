"""What ``train`` prints after training: the solver of the unrolled stages, every block's certificate with advice
that certifies it, and the model against its input on the validation volumes.

* :func:`stage_solver` — the gated solver of the unrolled stages for ``--stage-solver``: the interior point where
  the stage program fits :func:`solvers.interior.fits_gated_interior_point` (a few dozen Newton steps to a tight
  certificate), on a centre window of every training slice where whole crops do not fit, FISTA otherwise. FISTA ended at its 400-iteration budget with relative gaps 0.54 and 0.71 on the
  README's unrolled command (3 synthetic volumes, crop 64), where the interior point certifies both stages.
* :func:`block_summary` — per block status, gap and PSNR, and for blocks short of ``--tol`` the flags to rerun with.
* :func:`marking_selection_warnings` — a block solve's ``ConvergenceWarning`` from a β/λ candidate solve (which
  only scores a candidate on the held-out volumes) says so, so that it is never read as a warning about the
  model's blocks.
* :func:`comparison` — the model and its input per validation volume.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from solvers.interior import MAX_ARRAY_NUMBERS, MAX_NEWTON_UNKNOWNS, fits_gated_interior_point
from solvers.report import ConvergenceWarning

from convexrecon.block.dispatch import DEFAULT_MAX_ITER
from convexrecon.cli.common import REFERENCE_TEXT, markdown_table
from convexrecon.data.splits import Split
from convexrecon.metrics import evaluate, to_physical

STAGE_SOLVERS = ("auto", "interior-point", "fista")
"""``--stage-solver`` values; ``interior-point`` is ``FitOptions.gated_method="interior_point"``."""


MIN_WINDOW = 16
"""The smallest centre window on which ``auto`` poses a stage program for the interior point; below it, FISTA."""


@dataclass(frozen=True)
class StageSolver:
    """The gated solver of the unrolled stages and why: ``method`` is a ``FitOptions.gated_method``."""

    method: str
    fits: bool  # whether the stage program of whole crops fits the interior point's limits
    pixels: int  # N H W of the stage program of whole crops (training slices x crop^2)
    features: int  # d = C_in k^2
    gates: int  # P
    window: int | None = None  # side of the centre window the programs are posed on (None: the whole crop)
    crop: int = 0

    def line(self) -> str:
        """One line saying which solver solves the stages and why."""
        size = (f"patch matrix {self.pixels:,} x {self.features} (N*H*W x C_in*k^2), Newton system "
                f"{self.gates * self.features:,} unknowns (P*C_in*k^2)")
        if self.method == "interior_point" and self.window is not None:
            return (f"stage solver: interior point on the centre {self.window}x{self.window} window of every training "
                    f"slice: the whole {self.crop}x{self.crop} crop gives a {size}, beyond its limit of "
                    f"{MAX_ARRAY_NUMBERS:,} numbers; the blocks are convolutional, so the window poses the same "
                    f"program on fewer pixels (--stage-solver fista solves whole crops, uncertified if it does not "
                    f"converge within --max-iter)")
        if self.method == "interior_point":
            return f"stage solver: interior point ({size}: within its limits)"
        if self.fits:
            return f"stage solver: FISTA (--stage-solver fista; the interior point would fit the {size})"
        return (f"stage solver: FISTA: the interior point does not fit the {size} (limits "
                f"{MAX_ARRAY_NUMBERS:,} numbers, {MAX_NEWTON_UNKNOWNS:,} unknowns), nor a centre window of at least "
                f"{MIN_WINDOW} pixels")


def stage_solver(choice: str, slices: int, crop: int, channels: int, kernel_size: int, gates: int) -> StageSolver:
    """The solver of the unrolled stages: ``choice`` (``--stage-solver``), ``auto`` read as the interior point where
    the program of ``slices`` training slices of ``crop`` x ``crop`` pixels and ``channels`` block inputs fits
    :func:`solvers.interior.fits_gated_interior_point`, else the interior point on the largest centre window that
    fits (at least :data:`MIN_WINDOW` and the kernel), else FISTA. ``interior-point`` takes the window too. Raises
    ``ValueError`` naming ``--stage-solver`` when ``interior-point`` is asked and no window fits."""
    n, d = slices * crop * crop, channels * kernel_size ** 2
    fits = fits_gated_interior_point(n, gates, d)
    if choice == "fista":
        return StageSolver("fista", fits, n, d, gates, crop=crop)
    if fits:
        return StageSolver("interior_point", fits, n, d, gates, crop=crop)
    side = largest_fitting_crop(StageSolver("fista", fits, n, d, gates, crop=crop), crop)
    if side >= max(MIN_WINDOW, kernel_size):
        return StageSolver("interior_point", fits, n, d, gates, window=side, crop=crop)
    if choice == "auto":
        return StageSolver("fista", fits, n, d, gates, crop=crop)
    raise ValueError(f"argument --stage-solver: the interior point takes at most {MAX_ARRAY_NUMBERS:,} numbers in "
                     f"the patch matrix and {MAX_NEWTON_UNKNOWNS:,} Newton unknowns. Got a {n:,} x {d} patch "
                     f"matrix and {gates * d:,} unknowns, and no centre window of at least {MIN_WINDOW} pixels fits: "
                     f"use --stage-solver fista or auto, or fewer --arrangements or a smaller --kernel-size.")


def largest_fitting_crop(solver: StageSolver, crop: int) -> int:
    """The largest crop (even, at most ``crop``) whose stage program fits the interior point; 0 when none does."""
    slices = solver.pixels // (crop * crop)
    side = crop
    while side > 0 and not fits_gated_interior_point(slices * side * side, solver.gates, solver.features):
        side -= 2
    return side


def advice(records: list[dict], tol: float, max_iter: int, solver: StageSolver | None, crop: int) -> str:
    """The flags that certify the blocks ``records`` left short of ``tol``: ``run the same command with ...``.

    * The interior point stopped at ``--max-iter``: its own budget (``DEFAULT_MAX_ITER``, 200 Newton steps per
      output), or twice the given one; it certifies the stages in a few dozen steps.
    * FISTA on unrolled stages the interior point fits: ``--stage-solver auto`` (and that budget where
      ``--max-iter`` is below it).
    * Otherwise (FISTA where the interior point does not fit, or a solve that stalled): ``--tol`` at the largest
      gap reached accepts the certificates these solves reach, and, for unrolled stages, the largest ``--crop``
      that the interior point fits.
    """
    failed = [r for r in records if r["status"] != "optimal"]
    ipm = [r for r in failed if r.get("solver") == "interior_point"]
    newton = DEFAULT_MAX_ITER["interior_point"]
    if ipm and len(ipm) == len(failed) and all(r["status"] == "max_iter" for r in ipm):
        return (f"To certify them: run the same command with --max-iter {max(newton, 2 * max_iter)} and a new --out "
                f"(the checkpoints hold this run's settings); the interior point stopped at --max-iter {max_iter} "
                "Newton steps per output.")
    if solver is not None and solver.fits and not ipm:
        flags = "--stage-solver auto" + (f" --max-iter {newton}" if max_iter < newton else "")
        return (f"To certify them: run the same command with {flags} and a new --out (the interior point fits these "
                "stages and certifies them in a few dozen Newton steps).")
    gaps = [r["relative_gap"] for r in failed if r.get("relative_gap") is not None and math.isfinite(r["relative_gap"])]
    if not gaps:
        return "No finite duality gap was reached: see the warnings above."
    worst = max(gaps)
    scale = 10.0 ** math.floor(math.log10(worst)) if worst > 0 else tol
    loose = float(f"{math.ceil(worst / scale) * scale:.1g}")  # the largest gap reached, rounded up to one digit
    options = []  # (flags, what they do)
    if loose <= 0.1:  # a looser certificate is still one; a gap above 10 % certifies little
        options.append((f"--tol {loose:g}", "certifies them to that looser tolerance"))
    if solver is not None:
        side = largest_fitting_crop(solver, crop)
        if side >= 16:
            options.append((f"--crop {side}", "the interior point fits the stages at that crop, or with fewer "
                                              "training slices; it certified every stage it solved in measured runs"))
    else:
        options.append((f"--max-iter {4 * max_iter}", f"FISTA goes on; not measured to reach --tol {tol:g}"))
    text = f"These solves reached a relative gap of {worst:.2g}"
    if not options:
        return text + (": the stages are too large for the interior point at any crop of at least 16; raise "
                       "--beta-ratio (a larger weight converges faster) or lower --arrangements or --kernel-size.")
    text += ": run the same command with " + "; or with ".join(f"{flags} and a new --out ({why})"
                                                             for flags, why in options)
    return text + "."


def block_summary(records: list[dict], kept: int, tol: float, *, max_iter: int = 400,
                  solver: StageSolver | None = None, crop: int = 0, selection_failures: int = 0) -> str:
    """Per block: solver status, relative gap vs ``tol``, validation PSNR; which blocks were kept; a loud
    note on every block whose solve is not certified to ``tol``, with the flags that certify it (:func:`advice`);
    and how many β/λ candidate solves did not certify (they only score candidates)."""
    rows = [[str(r["block"]), "identity" if r.get("identity") else str(r["status"]),
             f"{r['relative_gap']:.2e}" if r.get("relative_gap") is not None
             else "–", f"{tol:g}", str(r.get("iterations")), str(r.get("solver") or "–"), str(r["width"]),
             f"{r['psnr']:.2f}" if r.get("psnr") is not None else "–",
             "kept" if r["block"] <= kept else "dropped"] for r in records]
    lines = ["", "Blocks (validation: slice-wise PSNR against the fully sampled SENSE target):", "",
             markdown_table(["block", "status", "relative gap", "tol", "iterations", "solver", "width",
                             "val PSNR (dB)", "model"], rows), ""]
    if kept < len(records):
        lines.append(f"Kept {kept} of {len(records)} blocks: validation PSNR peaked after block {kept} "
                     f"({records[kept - 1]['psnr']:.2f} dB; {records[-1]['psnr']:.2f} dB with all {len(records)}). "
                     f"The validation numbers chose the depth, so they are optimistic; --keep-all-blocks keeps all.")
    else:
        lines.append(f"Kept all {len(records)} blocks.")
    identity = [r["block"] for r in records if r.get("identity")]
    if identity:
        lines.append(f"Stage(s) {', '.join(map(str, identity))}: the identity (a zero block, no data-consistency "
                     "step): every candidate scored below the stage's input on the held-out training volumes, so the "
                     "stage returns its input; it has no program to certify.")
    failed = [r for r in records if r["status"] != "optimal" and not r.get("identity")]
    if failed:
        gaps = ", ".join(f"block {r['block']}: {r['status']}, gap {r['relative_gap']:.1e}"
                         if r.get("relative_gap") is not None else f"block {r['block']}: {r['status']}"
                         for r in failed)
        lines.append(f"WARNING: {len(failed)} of {len(records)} block solves did NOT reach the relative duality gap "
                     f"tol {tol:g} ({gaps}); those blocks are not certified optima. "
                     + advice(records, tol, max_iter, solver, crop))
    else:
        lines.append(f"Every block the model keeps is certified: relative duality gap <= tol {tol:g}.")
    if selection_failures:
        lines.append(f"{selection_failures} candidate solve(s) of the β/λ selection did not reach tol (the warnings "
                     "marked 'selection' above): those candidates only scored β/λ on the held-out volumes; no block "
                     "of the model comes from them.")
    return "\n".join(lines)


@contextlib.contextmanager
def marking_selection_warnings() -> Iterator[list[int]]:
    """Within: a ``ConvergenceWarning`` raised by ``fit_layer_path`` (the candidate solves that choose β or λ) is
    shown prefixed ``selection (a β/λ candidate on the fit slices, not a block of the model):``; the yielded
    one-item list counts them. Other warnings pass unchanged."""
    count = [0]
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        show = warnings.showwarning

        def marked(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, ConvergenceWarning) and _inside("fit_layer_path"):
                count[0] += 1
                message = f"selection (a β/λ candidate on the fit slices, not a block of the model): {message}"
            show(message, category, filename, lineno, file, line)

        warnings.showwarning = marked
        yield count


def _inside(function: str) -> bool:
    """Whether a frame of the current call stack runs ``function`` of :mod:`convexrecon.block.fit`."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == function and frame.f_globals.get("__name__") == "convexrecon.block.fit":
            return True
        frame = frame.f_back
    return False


def comparison(net, val: Split, measured=None, initial=None, references=None, reference: str = "sense") -> dict:
    """Print model and zero-filled metrics per validation volume and overall; return the overall numbers.

    ``measured``: the validation slices' measurements, for an unrolled network; ``initial``: its start images of
    them (:meth:`~convexrecon.stack.unrolled.UnrolledNet.predict`), computed once by the caller. ``references``:
    one physical ``(crop, crop)`` magnitude image per validation slice to score against (``reference`` names it:
    ``"rss"``, :func:`~convexrecon.cli.references.rss_references`); None: the SENSE targets."""
    dtype = next(net.parameters()).dtype
    with torch.no_grad():
        pred = (net.predict(val.inputs.to(dtype)) if measured is None else
                net.predict(measured, initial=initial)).float().cpu()
    if references is None:
        targets = list(to_physical(val.targets, val.scales))
    else:
        targets = [np.asarray(r) for r in references]
        if len(targets) != len(val.volumes):
            raise ValueError(f"The 'references' parameter must hold one image per validation slice "
                             f"({len(val.volumes)}). Got {len(targets)} instead.")
    images = {"model": list(to_physical(pred, val.scales)), "zero-filled": list(to_physical(val.inputs, val.scales))}

    def scores(keep: list[int], convention: str) -> list[dict]:
        return [evaluate([targets[i] for i in keep], [x[i] for i in keep], [val.volumes[i] for i in keep], convention)
                for x in images.values()]

    rows = []
    for name in sorted(set(val.volumes)):
        keep = [i for i, v in enumerate(val.volumes) if v == name]
        got = scores(keep, "volume")
        rows.append([name, str(len(keep)), *(f"{s['psnr'].mean:.2f}" for s in got),
                     *(f"{s['ssim'].mean:.4f}" for s in got)])
    everything = list(range(len(val.volumes)))
    overall = {c: scores(everything, c) for c in ("volume", "slice")}
    for convention, label in (("volume", f"mean over {len(rows)} volume(s)"),
                              ("slice", "slice-wise mean (data range per slice)")):
        m, z = overall[convention]
        rows.append([label, str(len(val.volumes)), f"{m['psnr'].mean:.2f}", f"{z['psnr'].mean:.2f}",
                     f"{m['ssim'].mean:.4f}", f"{z['ssim'].mean:.4f}"])
    cs = int(getattr(net, "cs_iterations", 0) or 0)
    start = (f" (the network starts from {cs} FISTA steps of L1-wavelet CS, not from this image)" if cs else
             " (the network's input)")
    print(f"\nValidation volumes, model vs the zero-filled SENSE image{start}; reference: {reference} = "
          f"{REFERENCE_TEXT[reference]}; per volume volume-wise (data range = the volume's maximum):\n")
    print(markdown_table(["volume", "slices", "model PSNR (dB)", "zero-filled PSNR (dB)", "model SSIM",
                          "zero-filled SSIM"], rows))
    m, z = overall["slice"]
    if m["psnr"].mean < z["psnr"].mean:
        print(f"WARNING: the model ({m['psnr'].mean:.2f} dB) is worse than the zero-filled image "
              f"({z['psnr'].mean:.2f} dB) on the validation slices.")
    print()
    mv = overall["volume"][0]
    return {"val_psnr": m["psnr"].mean, "val_ssim": m["ssim"].mean, "zero_filled_psnr": z["psnr"].mean,
            "zero_filled_ssim": z["ssim"].mean, "val_psnr_volume": mv["psnr"].mean, "val_ssim_volume": mv["ssim"].mean,
            "reference": reference}


def add_stage_solver(parser: argparse.ArgumentParser) -> None:
    """``--stage-solver``: the gated solver of the unrolled stages (:func:`stage_solver`)."""
    parser.add_argument("--stage-solver", default="auto", choices=STAGE_SOLVERS,
                        help="unrolled: solver of the stages' gated programs. auto (default): the interior point "
                             "where the program (training slices x crop^2 pixels, C_in*k^2 features) fits its limits "
                             "(it certifies in a few dozen Newton steps), FISTA otherwise")
