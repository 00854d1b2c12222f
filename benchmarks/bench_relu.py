"""Exact-ReLU block solvers against the gated solve on the same training-size conv block.

One problem, every solver side by side in one run: a k x k conv block on smooth
random images (white noise low-passed by a 7 x 7 box filter per channel, unit
variance), targets from a planted two-layer ReLU conv net (16 hidden channels)
plus 10 % noise, P i.i.d. N(0, I) gates, beta = ``--beta-ratio`` x beta_max.
Every solve is ``fit_layer`` with the same gates and beta:

* ``gated``: the relaxation (FISTA + Newton-CG), the time to beat;
* ``relu admm``: the exact program by ADMM on the cone values (:mod:`solvers.admm`);
* ``relu pdhg``: the exact program by restarted PDHG, capped at ``--pdhg-max-iter``;
* ``relu interior_point``: the exact program on the explicit patch matrix, where it fits
  (``--no-interior`` skips it; it is what ``relu_method="auto"`` runs at this size);
* ``relu alm`` (with ``--alm-max-iter N``): the augmented Lagrangian with FISTA subproblems
  (:func:`solvers.group_lasso.solve_cone_group_lasso`, scnn's method), capped at ``N`` FISTA iterations.

Each ``relu admm`` and ``relu auto`` row runs twice: cold (the solver's own start) and warm
(``relu_start="gated"``: the gated program solved first in the same call, its optimum split into a feasible
exact point, :mod:`convexrecon.block.warm_start`; its seconds count the gated solve). A second table puts
gated, cold and warm side by side (``--no-warm`` skips the warm rows).

Two blocks: ``--block smooth`` (default, below) and ``--block relu-features``: ReLU features of a random 3 x 3
conv of 2-channel white noise, targets from a planted two-layer net (16 hidden channels, one output) plus 10 %
noise scaled to largest |target| 1.1 (``tests/test_relu_robust.py``'s training-like block); ``--beta`` sets
beta itself instead of ``--beta-ratio``.

Below the table: how degenerate the exact optimum is (cone rows each nonzero neuron of the interior
point's block holds at equality, against ``d = C_in k^2``), and the time to form the data Gram matrix
``B^T B`` once, the fixed cost of any direct Newton method on the block.

The target: exact ReLU certified to ``--tol`` in at most 10x the gated solve's
time. Every row states the threads and the device; the certificate is always
evaluated in float64.

    python -m benchmarks.bench_relu --threads 1        # n = 10,000, C_in 8, k 5, P 16 (about 5 min)
    python -m benchmarks.bench_relu --threads 1 --block relu-features --images 8 --size 45 --width 41 \
        --channels 16 --gates 32 --beta 20 --no-interior --no-pdhg --admm-max-iter 3000 --name relu-block-planted
    python -m benchmarks.bench_relu --threads 1 --no-admm --no-pdhg --no-interior --newton-sizes 4000,8000,12000,16000

Writes ``benchmarks/results/<--name>/results.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

import convexrecon as cr  # noqa: E402
from convexrecon.block.arrangements import arrangement_masks, draw_gates, patch_problem  # noqa: E402
from benchmarks.kit.runinfo import write_results  # noqa: E402
from convexrecon.io import write_text  # noqa: E402
from convexrecon.block.dispatch import interior_fits  # noqa: E402
from convexrecon.block.problem import block_program  # noqa: E402
from solvers.interior import data_gram  # noqa: E402


def make_problem(num: int, channels: int, size: int, k: int, P: int, seed: int = 0):
    """Smooth random images, planted ReLU-net targets plus noise, and ``P`` gates."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num, channels, size, size, generator=gen)
    box = torch.ones(1, 1, 7, 7) / 49
    x = F.conv2d(x.reshape(-1, 1, size, size), box, padding=3).reshape(num, channels, size, size)
    x = x / x.std()
    teacher = torch.randn(16, channels, k, k, generator=gen) / (k * channels**0.5)
    y = F.conv2d(torch.relu(F.conv2d(x, teacher, padding=k // 2)), torch.randn(2, 16, 1, 1, generator=gen) / 4)
    y = y + 0.1 * y.std() * torch.randn(y.shape, generator=gen)
    gates = draw_gates(P, channels, k, seed=seed + 1, dtype=torch.float32)
    return x, y, gates


def make_relu_feature_problem(num: int, channels: int, height: int, width: int, k: int, P: int, seed: int = 0):
    """ReLU features of a random 3 x 3 conv of white noise, planted-net targets (one output) + 10 % noise, largest
    |target| 1.1, and ``P`` gates (the training-like block of ``tests/test_relu_robust.py``)."""
    gen = torch.Generator().manual_seed(seed)
    raw = torch.randn(num, 2, height, width, generator=gen)
    x = torch.relu(F.conv2d(raw, torch.randn(channels, 2, 3, 3, generator=gen) / (3 * 2**0.5), padding=1))
    teacher = torch.randn(16, channels, k, k, generator=gen) / (k * channels**0.5)
    y = F.conv2d(torch.relu(F.conv2d(x, teacher, padding=k // 2)), torch.randn(1, 16, 1, 1, generator=gen) / 4)
    y = y + 0.1 * y.std() * torch.randn(y.shape, generator=gen)
    y = y * (1.1 / y.abs().max())
    return x, y, draw_gates(P, channels, k, seed=seed + 1, dtype=torch.float32)


def run(label: str, x, y, gates, beta, k, args, tol: float | None = None, **kw) -> dict:
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    tol = args.tol if tol is None else tol
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        start = time.perf_counter()
        block = cr.fit_layer(x, y, kernel_size=k, gates=gates, beta=beta, tol=tol, dtype=dtype, **kw)
        seconds = time.perf_counter() - start
    rep = block.report
    # rows at equality are only told apart from nearly active ones at a tight solve (the interior point's iterates
    # are strictly inside every cone)
    tight = rep.solver == "interior_point" and rep.relative_gap <= 1e-5
    row = {"active_constraints": active_constraints(block, x)} if tight else {}
    row |= {"solver": label, "method": rep.solver, "seconds": seconds, "status": rep.status.value,
           "primal": rep.primal, "dual": rep.dual, "relative_gap": rep.relative_gap,
           "violation": rep.max_violation, "iterations": rep.iterations, "width": block.width,
           "threads": torch.get_num_threads(), "device": "cpu", "dtype": args.dtype, "tol": tol,
           "start": kw.get("relu_start", "cold") if kw.get("activation") == "relu" else "-"}
    if args.screening:
        row["screening"] = safe_screening(block, x, y, gates, k)
    warm = getattr(rep, "warm_start", None)
    if warm is not None:
        row["warm_start"] = dataclasses.asdict(warm)
    print(json.dumps(row), flush=True)
    return row


def run_alm(x, y, gates, beta, k, args) -> dict:
    """The package's augmented Lagrangian with FISTA subproblems (:func:`solvers.group_lasso.solve_cone_group_lasso`,
    scnn's method; not a ``relu_method`` of ``fit_layer``) on the same program, float64 certificate."""
    from solvers.group_lasso import solve_cone_group_lasso

    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    program = block_program(x, y, gates=gates, kernel_size=k, activation="relu", dtype=dtype)
    target, operator = program.targets, program.operator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        start = time.perf_counter()
        _, _, rep = solve_cone_group_lasso(operator, target, beta, operator.zeros(), tol=args.tol,
                                           feas_tol=args.tol / 100, max_iter=args.alm_max_iter,
                                           certify_operator=operator.to(torch.float64))
        seconds = time.perf_counter() - start
    row = {"solver": "relu alm", "method": rep.solver, "seconds": seconds, "status": rep.status.value,
           "primal": rep.primal, "dual": rep.dual, "relative_gap": rep.relative_gap, "violation": rep.max_violation,
           "iterations": rep.iterations, "width": None, "threads": torch.get_num_threads(), "device": "cpu",
           "dtype": args.dtype, "tol": args.tol}
    print(json.dumps(row), flush=True)
    return row


def active_constraints(block, x) -> dict:
    """How degenerate the exact optimum is: per nonzero neuron ``u`` of a ReLU block, the cone rows it holds at
    equality, ``|(X u)_j| <= 1e-5 max_j |(X u)_j|`` (the same counts at 1e-6 and from float32 weights), out of
    ``d = C_in k^2``. Neurons below 1e-2 of the largest norm (the interior point's zeros, 1e-4 of it and less on the
    benchmark block, and its stragglers) are left out."""
    w = block.first.weight.detach().double()
    norms = w.reshape(w.shape[0], -1).norm(dim=1)
    keep = norms > 1e-2 * float(norms.max()) if w.numel() else norms > 0
    w = w[keep]
    if not len(w):
        return {"neurons": 0, "d": int(block.first.weight[0].numel())}
    z = F.conv2d(x.double(), w, padding=block.first.padding).transpose(0, 1).reshape(len(w), -1)
    counts = (z.abs() <= 1e-5 * z.abs().max(dim=1, keepdim=True).values).sum(dim=1).double()
    return {"neurons": len(w), "d": int(w[0].numel()), "min": int(counts.min()),
            "p10": float(torch.quantile(counts, 0.1)), "median": float(counts.median()), "max": int(counts.max())}


@torch.no_grad()
def safe_screening(block, x, y, gates, k: int) -> dict:
    """How many arrangements a gap-safe rule (Ndiaye, Fercoq, Gramfort & Salmon, JMLR 2017) drops at ``block``:
    a measurement only, nothing is screened in any solve.

    From the block's residual ``r = y - block(x)`` the dual point ``theta = s r`` with multipliers zero, ``s`` the
    largest scale with ``s ||X^T D_i r_c|| <= beta`` for every arrangement ``i`` and output ``c`` (feasible for the
    gated dual and, with zero cone multipliers, for the exact one), gives the gap ``G`` = the block's objective
    minus the dual value; the dual is 1-strongly concave in ``theta``, so ``||theta - theta*|| <= sqrt(2 G)``. A
    group is zero at every optimum when ``s ||X^T D_i r_c|| + ||X||_2 sqrt(2 G) < beta`` (for the exact program
    the sup of ``<X^T D_i theta*, z>`` over unit ``z`` in its cone is at most the norm with zero multipliers, and
    ``||D_i X||_2 <= ||X||_2``); an arrangement is dropped when its groups for every output are. ``active``: the
    arrangements with a neuron above 1e-6 of the block's largest (the interior point's zeros are tiny, not 0)."""
    X, D, Y = (torch.from_numpy(a) for a in patch_problem(x.double(), arrangement_masks(x, gates), y, k))
    r = Y - block.double()(x.double()).movedim(1, -1).reshape(Y.shape)
    norms = torch.linalg.vector_norm(torch.einsum("nd,np,nc->pcd", X, D, r), dim=-1)  # (P, C)
    beta = block.beta
    r_y, r_r = float((r * Y).sum()), float((r * r).sum())
    s = min(max(r_y / max(r_r, 1e-300), 0.0), beta / max(float(norms.max()), 1e-300))
    gap = max(block.objective(x.double(), y.double()) - (s * r_y - 0.5 * s * s * r_r), 0.0)
    x_norm = float(torch.linalg.eigvalsh(X.T @ X).max()) ** 0.5
    dropped = (s * norms + x_norm * (2 * gap) ** 0.5 < beta).all(dim=1)
    w = block.first.weight.detach().double()
    neuron = w.reshape(w.shape[0], -1).norm(dim=1) * block.second.weight.detach().double().reshape(
        block.second.weight.shape[0], -1).abs().sum(dim=0)
    big = neuron > 1e-6 * float(neuron.max()) if neuron.numel() else neuron > 0
    active = len(set(block.neuron_arrangement[big].tolist()))
    return {"dropped": int(dropped.sum()), "active": active, "P": int(gates.shape[0]), "gap": gap,
            "radius": (2 * gap) ** 0.5, "dual_scale": s, "x_norm": x_norm}


def data_gram_seconds(x, gates, k: int) -> float:
    """Seconds to form the data term's Gram matrix ``B^T B = [X^T D_i D_j X]`` (``P d x P d``, float64) once:
    the fixed cost of a direct Newton method on this block (the interior point forms it once per solve)."""
    X, D, _ = patch_problem(x, arrangement_masks(x, gates), x[:, :1], k)
    X, D = torch.from_numpy(X), torch.from_numpy(D)
    start = time.perf_counter()
    data_gram(X, D)
    return time.perf_counter() - start


def newton_seconds(sizes: list[int]) -> list[dict]:
    """Seconds of one interior-point Newton factorisation at ``m`` unknowns (copy of an ``m x m`` matrix to the
    working precision, Cholesky, one solve), float64 and float32, in the threads set; with the estimated peak
    bytes of a relu solve (``NEWTON_MATRIX_COPIES`` float64 squares) that decide whether ``auto`` tries it."""
    from solvers.interior import NEWTON_MATRIX_COPIES

    rows = []
    for m in sizes:
        gram = torch.rand(m, m, dtype=torch.float64, generator=torch.Generator().manual_seed(m))
        gram = gram + gram.T
        gram.diagonal().add_(2.0 * m)
        row = {"unknowns": m, "matrix_bytes": 8 * NEWTON_MATRIX_COPIES * m * m}
        for dtype in (torch.float64, torch.float32):
            start = time.perf_counter()
            factor, _ = torch.linalg.cholesky_ex(gram.to(dtype, copy=True))
            torch.cholesky_solve(torch.ones(m, 1, dtype=dtype), factor)
            row[f"{str(dtype).split('.')[-1]}_seconds"] = time.perf_counter() - start
            del factor
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


SIDE_BY_SIDE = ("solver", "start", "seconds", "× gated", "iterations", "rel. gap", "violation", "status",
                "gated start: s / its", "safe-screened / active / P")
"""Columns of the table of gated, exact cold and exact warm rows."""


def side_by_side(rows) -> list[str]:
    """Gated, then each exact solver cold and warm: seconds (a warm row's include its gated solve), the ratio to
    the gated row's seconds, iterations (of the exact solver), gap, violation, status."""
    gated = next(r for r in rows if r["solver"] == "gated")
    order = [gated] + [r for r in rows if r.get("start") in ("cold", "gated") and r["solver"] != "relu alm"]
    lines = ["| " + " | ".join(SIDE_BY_SIDE) + " |", "|---|---|" + "---:|" * 5 + "---|---:|---:|"]
    for r in order:
        w, screen = r.get("warm_start"), r.get("screening")
        part = f"{w['gated_seconds']:.1f} / {w['gated_iterations']}" if w else ""
        screened = f"{screen['dropped']} / {screen['active']} / {screen['P']}" if screen else ""
        lines.append(f"| {r['solver']} | {r.get('start', '-')} | {r['seconds']:.1f} | "
                     f"{r['seconds'] / gated['seconds']:.1f} | {r['iterations']} | {r['relative_gap']:.1e} | "
                     f"{r['violation']:.1e} | {r['status']} | {part} | {screened} |")
    return lines


def markdown(rows, meta) -> str:
    gated = next(r for r in rows if r["solver"] == "gated")
    beta_text = (f"beta = {meta['beta']:.4g} ({meta['beta'] / meta['beta_max']:.2g} beta_max)" if meta.get("beta_given")
                 else f"beta = {meta['beta_ratio']:g} beta_max = {meta['beta']:.4g}")
    lines = [
        f"Exact-ReLU block benchmark — {meta['date']}, {meta['machine']}, torch {meta['torch']}; "
        f"{meta.get('block', 'smooth')} block, "
        f"n = {meta['n']:,} patches ({meta['images']}), C_in {meta['C_in']}, k {meta['k']}, P {meta['P']}, "
        f"{beta_text}; target relative gap {meta['tol']:g}; "
        f"iterates in {meta['dtype']}, certificate in float64; one run, solvers one after the other.",
        "",
        "| solver | method | threads | device | tol | seconds | × gated | status | primal | dual | rel. gap | violation | iterations |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['solver']} | {r['method']} | {r['threads']} | {r['device']} | {r.get('tol', meta['tol']):g} | "
            f"{r['seconds']:.1f} | "
            f"{r['seconds'] / gated['seconds']:.1f} | {r['status']} | {r['primal']:.6g} | {r['dual']:.6g} | "
            f"{r['relative_gap']:.1e} | {r['violation']:.1e} | {r['iterations']} |")
    if any(r.get("start") == "gated" for r in rows):
        lines += ["", "Gated, exact cold and exact warm side by side (a warm row's seconds include its gated solve, "
                  "given in its own column; iterations are the exact solver's; with --screening, the arrangements "
                  "a gap-safe rule drops at the returned block, those the block uses, and P):", ""] + side_by_side(rows)
        warm = next((r["warm_start"] for r in rows if r.get("warm_start")), None)
        if warm is not None and warm.get("violated_rows") is not None:
            lines += ["", f"The warm start's split of the gated optimum: its nonzero groups violate a median "
                      f"{warm['violated_rows']:.0%} of their cone rows; the smallest feasible gate shift t ||g|| "
                      f"is a median {warm['shift_ratio']:.3g} times the group's norm; after the per-group scaling "
                      f"{warm['shifted']} shifted groups are kept, {warm['dropped']} set to zero (exact objective at the "
                      f"start {warm['objective']:.6g})."]
    reference = [r for r in rows if r["method"] == "interior_point" and r["status"] == "optimal"
                 and r["relative_gap"] <= 1e-5 and r["violation"] == 0.0]
    if reference:  # p* known to 1e-5: how far each exact row really is
        p_star = reference[0]["primal"]
        lines += ["", f"Against the interior point's optimum p* = {p_star:.6g} (strictly feasible, relative gap "
                  f"{reference[0]['relative_gap']:.1e}): the primal of an exact row is the returned ReLU block's own "
                  "objective (below p* when its iterate still violates the cone constraints), the dual a lower bound "
                  "on p*.", "",
                  "| solver | (primal − p*) / p* | (p* − dual) / p* |", "|---|---:|---:|"]
        for r in rows:
            if r["solver"] != "gated":
                lines.append(f"| {r['solver']} | {(r['primal'] - p_star) / p_star:.1e} | "
                             f"{(p_star - r['dual']) / p_star:.1e} |")
    for r in rows:
        a = r.get("active_constraints")
        if a and a.get("neurons") and r["relative_gap"] <= 1e-5:
            lines += ["", f"Degeneracy of the exact optimum ({r['solver']}): each of its {a['neurons']} nonzero neurons "
                      f"holds {a['min']}–{a['max']} (10 % quantile {a.get('p10', a['min']):g}, median {a['median']:g}) "
                      f"of the n = {meta['n']:,} cone rows at equality, against d = {a['d']} weights per neuron: "
                      f"the solution lies on faces of dimension {a['d'] - a['max']}–{a['d'] - a['min']} (median "
                      f"{a['d'] - a['median']:g}) of the neurons' cones, a highly degenerate point for splitting "
                      "methods."]
    if meta.get("newton"):
        lines += ["", f"One Newton factorisation ({meta['threads']} thread(s)): unknowns, seconds in float64 / float32, "
                  "estimated peak GiB of a relu solve (solvers.interior.newton_memory_bytes):", "",
                  "| unknowns | float64 s | float32 s | estimated peak GiB |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['unknowns']:,} | {r['float64_seconds']:.2f} | {r['float32_seconds']:.2f} | "
                  f"{r['matrix_bytes'] / 2**30:.2f} |" for r in meta["newton"]]
    if meta.get("data_gram_seconds") is not None:
        lines += ["", f"Forming the data Gram matrix B^T B ({meta['P'] * meta['C_in'] * meta['k'] ** 2} × "
                  f"{meta['P'] * meta['C_in'] * meta['k'] ** 2}, float64, {meta['threads']} thread(s)), the fixed "
                  f"cost of a direct Newton method here: {meta['data_gram_seconds']:.2f} s "
                  f"({meta['data_gram_seconds'] / gated['seconds']:.1f} × the gated solve)."]
    exact = [r for r in rows if r["solver"] != "gated"]
    lower = max((r["dual"] for r in exact), default=None)
    if lower is not None and lower > 0:  # each exact row's dual is a certified lower bound on the exact optimum
        lines += ["", f"Relaxation gap: the exact optimum is at least {lower:.6g} (the best exact-ReLU dual bound), "
                  f"{(lower - gated['primal']) / lower:.1%} above the gated optimum (at most {gated['primal']:.6g}, "
                  "the gated primal), so the gated bound cannot certify the exact program here; every exact row is "
                  "certified by its own cone multipliers."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--block", choices=["smooth", "relu-features"], default="smooth",
                        help="smooth random images (default) or ReLU features of a random conv layer")
    parser.add_argument("--size", type=int, default=50, help="image height (and width unless --width)")
    parser.add_argument("--width", type=int, default=0, help="image width (default: --size)")
    parser.add_argument("--beta", type=float, default=0.0, help="beta itself (default: --beta-ratio x beta_max)")
    parser.add_argument("--no-warm", action="store_true", help="skip the warm-started (relu_start='gated') rows")
    parser.add_argument("--screening", action="store_true",
                        help="count the arrangements a gap-safe rule drops at each returned block (a measurement)")
    parser.add_argument("--channels", type=int, default=8, help="C_in")
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("--gates", type=int, default=16, help="P")
    parser.add_argument("--beta-ratio", type=float, default=3e-3)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--admm-max-iter", type=int, default=20_000)
    parser.add_argument("--pdhg-max-iter", type=int, default=3_000)
    parser.add_argument("--no-interior", action="store_true", help="skip the interior-point row")
    parser.add_argument("--auto-tol", type=float, default=1e-6,
                        help="tolerance of the auto (interior-point) row, which also serves as the reference p*")
    parser.add_argument("--no-pdhg", action="store_true", help="skip the PDHG row")
    parser.add_argument("--no-admm", action="store_true", help="skip the ADMM row")
    parser.add_argument("--alm-max-iter", type=int, default=0,
                        help="add a row for the augmented Lagrangian with FISTA subproblems, capped at this many "
                             "FISTA iterations (default 0: no row)")
    parser.add_argument("--newton-sizes", default="",
                        help="comma-separated Newton system sizes (unknowns) to time one factorisation at, e.g. "
                             "4000,8000,12000,16000 (default: none)")
    parser.add_argument("--name", default="relu-block")
    parser.add_argument("--from-json", type=Path, help="only rebuild results.md from this results.json")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        table = markdown(saved["rows"], saved["meta"])
        print(table)
        write_text(args.from_json.parent / "results.md", table)
        return 0
    for name in ("threads", "images", "size", "channels", "gates", "admm_max_iter", "pdhg_max_iter"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    if args.alm_max_iter < 0:
        parser.error(f"--alm-max-iter must be >= 0; got {args.alm_max_iter}")
    if args.kernel < 1 or args.kernel % 2 == 0:
        parser.error(f"--kernel must be an odd integer >= 1; got {args.kernel}")
    if not (args.tol > 0 and args.beta_ratio > 0):
        parser.error(f"--tol and --beta-ratio must be > 0; got {args.tol} and {args.beta_ratio}")
    if args.beta < 0 or args.width < 0:
        parser.error(f"--beta and --width must be >= 0 (0: the default); got {args.beta} and {args.width}")
    width = args.width or args.size
    try:
        newton_sizes = [int(m) for m in args.newton_sizes.split(",") if m.strip()]
    except ValueError:
        parser.error(f"--newton-sizes must be comma-separated integers; got {args.newton_sizes!r}")
    if any(m < 1 for m in newton_sizes):
        parser.error(f"--newton-sizes must be >= 1; got {args.newton_sizes!r}")
    torch.set_num_threads(args.threads)
    if args.block == "smooth":
        if width != args.size:
            parser.error("--width needs --block relu-features (the smooth block's images are square)")
        x, y, gates = make_problem(args.images, args.channels, args.size, args.kernel, args.gates)
    else:
        x, y, gates = make_relu_feature_problem(args.images, args.channels, args.size, width, args.kernel, args.gates)
    k = args.kernel
    largest = cr.beta_max(cr.ArrangementConv(x.double(), arrangement_masks(x, gates), k, y.shape[1], relu=False),
                          y.double())
    beta = args.beta or args.beta_ratio * largest
    n = args.images * args.size * width
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, cpu",
            "torch": torch.__version__, "threads": args.threads, "n": n, "block": args.block,
            "images": f"{args.images} x {args.size}x{width}", "C_in": args.channels, "k": k, "P": args.gates,
            "beta_ratio": args.beta_ratio, "beta": beta, "beta_max": largest, "beta_given": bool(args.beta),
            "tol": args.tol, "dtype": args.dtype,
            "command": "python -m benchmarks.bench_relu " + " ".join(sys.argv[1:] if argv is None else argv)}
    meta["newton"] = newton_seconds(newton_sizes)
    rows = [run("gated", x, y, gates, beta, k, args, activation="gated")]
    meta["data_gram_seconds"] = data_gram_seconds(x, gates, k)
    starts = ["cold"] if args.no_warm else ["cold", "gated"]
    if not args.no_admm:
        for start in starts:
            rows.append(run("relu admm" + (" warm" if start == "gated" else ""), x, y, gates, beta, k, args,
                            activation="relu", relu_method="admm", max_iter=args.admm_max_iter, relu_start=start))
    if args.alm_max_iter:
        rows.append(run_alm(x, y, gates, beta, k, args))
    if not args.no_pdhg:
        rows.append(run("relu pdhg", x, y, gates, beta, k, args, activation="relu", relu_method="pdhg",
                        max_iter=args.pdhg_max_iter))
    # the rule relu_method='auto' follows: the interior point where its Newton system fits (above
    # MAX_NEWTON_UNKNOWNS where memory allows, convexrecon.block.dispatch.newton_limit)
    if not args.no_interior and interior_fits(block_program(x, y, gates=gates, kernel_size=k, activation="relu")):
        for start in starts:
            rows.append(run("relu auto" + (" warm" if start == "gated" else ""), x, y, gates, beta, k, args,
                            tol=args.auto_tol, activation="relu", relu_method="auto", relu_start=start))
    table = markdown(rows, meta)
    print(table)
    out = Path(__file__).resolve().parent / "results" / args.name
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, {"meta": meta, "rows": rows}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
