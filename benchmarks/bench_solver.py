"""Time the torch block solver against cvxpy (Clarabel, SCS) on the same problems.

Each problem is a two-layer block fit on random 2-channel images with a planted
ReLU conv net plus noise (n = N * H * W patches, P gates, k x k kernels). The
torch solver runs ``fit_layer`` to a certified relative gap of ``--tol``; the
references get the same problem (same gates) through
``solvers.reference.solve_arrangement_program`` with their own tolerances set
to ``--tol``, and each reference solution is certified with the same duality
gap. cvxpy is skipped above ``--max-cvxpy-n`` patches (it needs the explicit
patch matrix). Every solver gets torch's thread count (set it with
``OMP_NUM_THREADS``): also the BLAS threads of numpy/scipy (threadpoolctl) and
Clarabel's ``max_threads``, so that no solver runs on more cores than torch.

    python -m benchmarks.bench_solver                # default grid (~10 min on 2 cores)
    python -m benchmarks.bench_solver --full         # n up to 1e6, P up to 256, k up to 7

Writes ``benchmarks/results/solver/results.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import torch
from threadpoolctl import threadpool_limits

import convexrecon as cr  # noqa: E402
from convexrecon.block.arrangements import arrangement_masks, draw_gates, patch_problem  # noqa: E402
from benchmarks.kit.runinfo import write_results  # noqa: E402
from solvers.reference import solve_arrangement_program  # noqa: E402
from solvers.report import SolverError  # noqa: E402

DEFAULT_GRID = [  # (n patches, P, k, activation)
    (1_000, 8, 3, "gated"), (10_000, 8, 3, "gated"), (100_000, 8, 3, "gated"),
    (10_000, 32, 5, "gated"), (10_000, 8, 7, "gated"),
    (1_000, 8, 3, "relu"), (10_000, 8, 3, "relu"),
]
FULL_GRID = DEFAULT_GRID + [
    (1_000_000, 8, 3, "gated"), (100_000, 64, 5, "gated"), (100_000, 256, 7, "gated"),
    (100_000, 8, 3, "relu"), (10_000, 32, 5, "relu"),
]


def make_problem(n: int, P: int, k: int, seed: int = 0, channels: int = 2, size: tuple[int, int] = (40, 25)):
    """Images of ``size`` pixels (default 40 x 25, not square), as many as give ``n`` patches."""
    h, w = size
    num = max(1, round(n / (h * w)))
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num, channels, h, w, generator=gen)
    teacher = torch.randn(8, channels, k, k, generator=gen) / (k * (channels / 2) ** 0.5)
    hidden = torch.relu(torch.nn.functional.conv2d(x, teacher, padding=k // 2))
    y = torch.nn.functional.conv2d(hidden, torch.randn(2, 8, 1, 1, generator=gen) / 3)
    y = y + 0.1 * y.std() * torch.randn(y.shape, generator=gen)
    gates = draw_gates(P, channels, k, seed=seed + 1, dtype=torch.float32)
    return x, y, gates


def run_case(n, P, k, activation, args, channels: int = 2, size: tuple[int, int] = (40, 25)):
    x, y, gates = make_problem(n, P, k, channels=channels, size=size)
    op = cr.ArrangementConv(x.double(), arrangement_masks(x, gates), k, 2, relu=False)
    beta = args.beta_ratio * cr.beta_max(op, y.double())
    row = {"n": x.shape[0] * x.shape[2] * x.shape[3], "P": P, "k": k, "activation": activation, "beta": beta,
           "C_in": channels, "image": f"{size[0]}x{size[1]}",
           "relu_method": args.relu_method if activation == "relu" else None,
           "gated_method": args.gated_method if activation == "gated" else None}
    dtype = _dtype(args.dtype, activation, args.gated_method)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        for _ in range(args.repeat):  # best of a few runs: the solves are deterministic, only the timing varies
            start = time.perf_counter()
            block = cr.fit_layer(x.to(dtype), y.to(dtype), kernel_size=k, gates=gates, beta=beta,
                                 activation=activation, tol=args.tol, dtype=dtype, max_iter=args.max_iter,
                                 relu_method=args.relu_method, gated_method=args.gated_method)
            times.append(time.perf_counter() - start)
    row["torch_seconds"] = min(times)
    rep = block.report
    row.update(torch_dtype=str(dtype).removeprefix("torch."), torch_status=rep.status.value, torch_primal=rep.primal, torch_relative_gap=rep.relative_gap,
               torch_violation=rep.max_violation, torch_iterations=rep.iterations)
    threads = torch.get_num_threads()
    for name, options in (("clarabel", {"tol_gap_rel": args.tol, "tol_gap_abs": 1e-12, "max_threads": threads}),
                          ("scs", {"eps_abs": 1e-9, "eps_rel": args.tol})):
        if row["n"] > args.max_cvxpy_n or name not in args.references:
            row[f"{name}_seconds"] = None
            continue
        X, D, Y = patch_problem(x.double(), arrangement_masks(x, gates), y.double(), k)
        try:
            start = time.perf_counter()
            with threadpool_limits(limits=threads):
                ref = solve_arrangement_program(X, D, Y, beta, activation, solver=name.upper(), fallback=None,
                                                solver_options=options)
            row[f"{name}_seconds"] = time.perf_counter() - start
            row[f"{name}_primal"] = ref.report.primal
            row[f"{name}_relative_gap"] = ref.report.relative_gap
            row[f"{name}_status"] = ref.report.status.value
            row[f"{name}_speedup"] = row[f"{name}_seconds"] / row["torch_seconds"]
        except SolverError as exc:
            row[f"{name}_seconds"] = None
            row[f"{name}_error"] = str(exc)[:200]
    return row


def _dtype(choice: str, activation: str, gated_method: str = "fista") -> torch.dtype:
    """``auto``: float32 for gated FISTA; float64 for relu, whose cone multipliers carry
    float32 noise that keeps the certificate near 1e-3 (see README), and for the gated
    interior point (float64 inside whatever the input)."""
    if choice == "auto":
        return torch.float64 if activation == "relu" or gated_method == "interior_point" else torch.float32
    return {"float32": torch.float32, "float64": torch.float64}[choice]


def _method(row) -> str:
    method = row.get("relu_method") or row.get("gated_method")
    return f" ({method})" if method else ""


def markdown(rows, meta) -> str:
    lines = [
        f"Solver benchmark — {meta['date']}, {meta['machine']}, torch {meta['torch']} ({meta['threads']} threads), "
        f"target relative gap {meta['tol']:g}; torch iterates in the dtype shown, certificate always in float64; "
        f"torch time = best of {meta['repeat']} solves; cvxpy times include problem compilation.",
        "",
        "| n | P | k | activation | dtype | torch s | torch status | torch rel. gap | Clarabel s | Clarabel rel. gap | × vs Clarabel | SCS s | SCS rel. gap | × vs SCS |",
        "|---:|---:|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['P']} | {r['k']} | {r['activation']}{_method(r)} | {r['torch_dtype']} | {r['torch_seconds']:.2f} | {r['torch_status']} | "
            f"{r['torch_relative_gap']:.1e} | {f(r.get('clarabel_seconds'), '.2f')} | {f(r.get('clarabel_relative_gap'), '.1e')} | "
            f"{f(r.get('clarabel_speedup'), '.1f')} | {f(r.get('scs_seconds'), '.2f')} | {f(r.get('scs_relative_gap'), '.1e')} | "
            f"{f(r.get('scs_speedup'), '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="run the full grid (n up to 1e6; hours on 2 cores)")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--dtype", choices=["auto", "float32", "float64"], default="auto",
                        help="torch iterate precision (auto: float32 gated, float64 relu)")
    parser.add_argument("--beta-ratio", type=float, default=1e-2, help="beta = ratio * beta_max")
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="torch timing: best of this many solves")
    parser.add_argument("--max-cvxpy-n", type=int, default=10_000)
    parser.add_argument("--references", nargs="*", default=["clarabel", "scs"])
    parser.add_argument("--only", type=int, nargs="*", help="indices of grid rows to run")
    parser.add_argument("--relu-method", choices=["pdhg", "interior_point"], default="pdhg",
                        help="convexrecon's exact-ReLU solver (fit_layer's relu_method)")
    parser.add_argument("--gated-method", choices=["fista", "interior_point"], default="fista",
                        help="convexrecon's gated solver (fit_layer's gated_method)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "solver")
    parser.add_argument("--wide", action="store_true",
                        help="instead of the grid: gated blocks with C_in in {2, 64} on 64x64 to 320x320 images "
                             "(cvxpy only where its patch matrix is small)")
    parser.add_argument("--scaling", action="store_true",
                        help="instead of the grid: torch-only gated k=3 solves over n and P, with log-log slopes")
    args = parser.parse_args(argv)
    if args.tol <= 0:
        parser.error(f"--tol must be > 0; got {args.tol}")
    grid = FULL_GRID if args.full else DEFAULT_GRID
    if args.only:
        grid = [grid[i] for i in args.only]
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{'cuda' if torch.cuda.is_available() else 'cpu'}", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "clarabel_threads": torch.get_num_threads(), "tol": args.tol,
            "beta_ratio": args.beta_ratio, "repeat": args.repeat}
    if args.scaling:
        return run_scaling(args, meta)
    if args.wide:
        return run_wide(args, meta)
    rows = []
    for case in grid:
        row = run_case(*case, args)
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = markdown(rows, meta)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, {"meta": meta, "rows": rows}, table)
    return 0


WIDE_GRID = [  # (n patches, P, k, C_in, image size)
    (4 * 64 * 64, 16, 3, 2, (64, 64)), (4 * 64 * 64, 16, 7, 2, (64, 64)),
    (4 * 64 * 64, 16, 3, 64, (64, 64)), (4 * 64 * 64, 16, 7, 64, (64, 64)),
    (2 * 320 * 320, 16, 7, 2, (320, 320)), (2 * 320 * 320, 8, 7, 64, (320, 320)),
]


def run_wide(args, meta) -> int:
    """Gated blocks of realistic widths: C_in in {2, 64}, k in {3, 7}, 64x64 and 320x320 images."""
    rows = []
    for n, P, k, channels, size in WIDE_GRID:
        saved = args.references
        if n * channels * k * k > 2e7:  # the explicit patch matrix of cvxpy would not be small
            args.references = []
        row = run_case(n, P, k, "gated", args, channels=channels, size=size)
        args.references = saved
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [f"Wide conv blocks (gated, float32, target gap {args.tol:g}) — {meta['date']}, {meta['machine']}, torch "
             f"{meta['torch']} ({meta['threads']} threads)", "",
             "| image | C_in | k | P | n | torch s | iterations | status | rel. gap | Clarabel s | × vs Clarabel |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        clar = r.get("clarabel_seconds")
        lines.append(f"| {r['image']} | {r['C_in']} | {r['k']} | {r['P']} | {r['n']:,} | {r['torch_seconds']:.2f} | "
                     f"{r['torch_iterations']} | {r['torch_status']} | {r['torch_relative_gap']:.1e} | "
                     f"{'—' if clar is None else f'{clar:.2f}'} | "
                     f"{'—' if clar is None else format(r['clarabel_speedup'], '.1f')} |")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, {"meta": meta, "rows": rows}, table, "wide")
    return 0


SCALING_N = (10_000, 30_000, 100_000, 300_000)
SCALING_P = (8, 32, 128)


def run_scaling(args, meta) -> int:
    """Time vs n (P = 8) and vs P (n = 1e4), gated k = 3, torch only; slope of log(time) vs log(size)."""
    import numpy as np

    args.references = []
    rows = [run_case(n, 8, 3, "gated", args) for n in SCALING_N]
    rows += [run_case(10_000, P, 3, "gated", args) for P in SCALING_P[1:]]
    for r in rows:
        r["seconds_per_iteration"] = r["torch_seconds"] / max(r["torch_iterations"], 1)
        print(json.dumps(r), flush=True)

    def slope(sizes, key):
        sel = [r for r in rows if (r["P"] == 8 if sizes is SCALING_N else r["n"] == rows[0]["n"])]
        xs = np.log([r["n"] if sizes is SCALING_N else r["P"] for r in sel])
        return float(np.polyfit(xs, np.log([r[key] for r in sel]), 1)[0])

    summary = {"slope_time_vs_n": slope(SCALING_N, "torch_seconds"),
               "slope_time_per_iteration_vs_n": slope(SCALING_N, "seconds_per_iteration"),
               "slope_time_vs_P": slope(SCALING_P, "torch_seconds"),
               "slope_time_per_iteration_vs_P": slope(SCALING_P, "seconds_per_iteration")}
    lines = [f"Scaling (gated, k = 3, float32, target gap {args.tol:g}) — {meta['date']}, {meta['machine']}, "
             f"torch {meta['torch']} ({meta['threads']} threads)", "",
             "| n | P | seconds | iterations | ms / iteration | status |", "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['n']:,} | {r['P']} | {r['torch_seconds']:.2f} | {r['torch_iterations']} | "
              f"{1e3 * r['seconds_per_iteration']:.1f} | {r['torch_status']} |" for r in rows]
    lines += ["", "log-log slopes: " + ", ".join(f"{k} = {v:.2f}" for k, v in summary.items()), ""]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, {"meta": meta, "rows": rows, "slopes": summary}, table, "scaling")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
