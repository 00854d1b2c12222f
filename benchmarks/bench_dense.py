"""Dense two-layer problems side by side: convexrecon, scnn and cvxpy on the same data and gates.

The problem is scnn's home ground: ``n`` Gaussian samples in ``d = 50``
dimensions, targets from a planted 10-unit ReLU network plus 10 % noise,
``P = 100`` gates, scnn's ``lambda = 1e-4``. scnn minimises
``1/(2n) ||.||^2 + lambda sum ||.||``, i.e. our objective divided by ``n``
with ``beta = n * lambda`` (one output). scnn runs with ``unitize_data=False``
so that every solver sees the same matrix.

Every solution, whoever produced it, is scored with the same float64
objective (and, for relu, its constraint violation relative to ``max|y|``);
its *certified* suboptimality is ``(objective - L) / objective`` where ``L``
is the best dual lower bound any solver certified (ours, or cvxpy's with its
multipliers). Times include each solver's own setup (scnn's data
processing; cvxpy's problem compilation). Every solver gets ``--threads``
threads: torch's, the BLAS threads of numpy/scipy (which scnn's solvers use;
limited by threadpoolctl) and Clarabel's ``max_threads``, so that no solver
runs on more cores than convexrecon.

    python -m benchmarks.bench_dense                      # n = 2000 without cvxpy (~3 min)
    python -m benchmarks.bench_dense --n 2000 20000 200000 --cvxpy 2000

Writes ``benchmarks/results/dense/results.{json,md}``.
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

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import convexrecon as cr  # noqa: E402
from benchmarks.kit.runinfo import write_results  # noqa: E402
from solvers.reference import solve_arrangement_program  # noqa: E402


def problem(n: int, d: int = 50, P: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    hidden = np.maximum(X @ (rng.standard_normal((d, 10)) / np.sqrt(d)), 0)
    y = hidden @ rng.standard_normal(10)
    y = y + 0.1 * y.std() * rng.standard_normal(n)
    G = np.random.default_rng(seed + 1).standard_normal((d, P))
    return X, y, G


def score(X, y, G, beta, U, W=None) -> tuple[float, float]:
    """Objective ``1/2 ||sum_i D_i X (u_i - w_i) - y||^2 + beta sum (||u_i|| + ||w_i||)`` and relu violation."""
    D = X @ G >= 0
    pred = np.sum(D * (X @ U.T), axis=1)
    penalty = np.linalg.norm(U, axis=1).sum()
    violation = 0.0
    if W is not None:
        pred -= np.sum(D * (X @ W.T), axis=1)
        penalty += np.linalg.norm(W, axis=1).sum()
        signs = 2.0 * D - 1.0
        violation = max(np.maximum(-signs * (X @ U.T), 0).max(), np.maximum(-signs * (X @ W.T), 0).max()) / np.abs(y).max()
    return 0.5 * float(np.sum((pred - y) ** 2)) + beta * float(penalty), float(violation)


def run_ours(X, y, G, beta, activation, tol, max_iter, relu_method="pdhg"):
    n, d = X.shape
    x = torch.from_numpy(X).reshape(n, d, 1, 1)
    t = torch.from_numpy(y).reshape(n, 1, 1, 1)
    gates = torch.from_numpy(G.T.copy()).reshape(G.shape[1], d, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        start = time.perf_counter()
        block = cr.fit_layer(x, t, kernel_size=1, gates=gates, beta=beta, activation=activation, tol=tol,
                             dtype=torch.float64, max_iter=max_iter if relu_method == "pdhg" else None,
                             relu_method=relu_method)
        seconds = time.perf_counter() - start
    rep = block.report
    name = {"pdhg": "PDHG", "interior_point": "interior point"}[relu_method] if activation == "relu" else "FISTA+Newton-CG"
    return {"solver": f"convexrecon {name} tol={tol:g}", "seconds": seconds,
            "status": rep.status.value, "objective": rep.primal, "violation": rep.max_violation,
            "lower_bound": rep.dual, "iterations": rep.iterations}


def run_scnn(X, y, G, lam, activation, tol=None):
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU, ConvexReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import AL, RFISTA

    model = ConvexGatedReLU(G, c=1) if activation == "gated" else ConvexReLU(G, c=1)
    kwargs = {} if tol is None else {"tol": tol}
    solver = RFISTA(model, **kwargs) if activation == "gated" else AL(model, **kwargs)
    start = time.perf_counter()
    convex, _ = optimize_model(model, solver, Metrics(), X, y, regularizer=NeuronGL1(lam), return_convex=True,
                               unitize_data=False, dtype="float64")
    seconds = time.perf_counter() - start
    weights = [np.asarray(w) for w in convex.parameters]
    # scnn sorts the arrangements (np.unique) and drops duplicates: score with the gates of its model
    gates = np.asarray(convex.G)
    P, d = gates.shape[1], X.shape[1]
    if activation == "gated":
        objective, violation = score(X, y, gates, lam * X.shape[0], weights[0].reshape(P, d))
    else:
        objective, violation = score(X, y, gates, lam * X.shape[0], weights[0].reshape(P, d), weights[1].reshape(P, d))
    name = f"scnn {'R-FISTA' if activation == 'gated' else 'AL'} " + ("default tol" if tol is None else f"tol={tol:g}")
    return {"solver": name, "seconds": seconds, "status": "-", "objective": objective, "violation": violation}


def run_cvxpy(X, y, G, beta, activation, solver, tol, threads=1):
    D = (X @ G >= 0).astype(float)
    options = ({"tol_gap_rel": tol, "tol_gap_abs": 1e-12, "max_threads": threads} if solver == "CLARABEL"
               else {"eps_abs": 1e-9, "eps_rel": tol})
    start = time.perf_counter()
    ref = solve_arrangement_program(X, D, y[:, None], beta, activation, solver=solver, fallback=None,
                                    solver_options=options)
    seconds = time.perf_counter() - start
    rep = ref.report
    return {"solver": f"cvxpy {solver.title()}", "seconds": seconds, "status": rep.status.value,
            "objective": rep.primal, "violation": rep.max_violation, "lower_bound": rep.dual}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--activation", nargs="+", default=["gated", "relu"], choices=["gated", "relu"])
    parser.add_argument("--lam", type=float, default=1e-4, help="scnn's lambda; beta = n * lambda")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=100_000)
    parser.add_argument("--cvxpy", type=int, nargs="*", default=[], help="values of n also solved by cvxpy")
    parser.add_argument("--no-scnn", action="store_true")
    parser.add_argument("--relu-methods", nargs="+", default=["pdhg", "interior_point"],
                        choices=["pdhg", "interior_point"], help="exact-ReLU solvers of convexrecon to time")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "dense")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
            f"{'cuda' if torch.cuda.is_available() else 'cpu'}", "torch": torch.__version__, "threads": args.threads,
            "tol": args.tol, "lam": args.lam, "d": 50, "P": 100, "blas_threads": args.threads,
            "clarabel_threads": args.threads}
    rows = []
    with threadpool_limits(limits=args.threads):
        for n in args.n:
            rows += run_size(n, args)
    table = markdown(rows, meta)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, {"meta": meta, "rows": rows}, table)
    return 0


def run_size(n: int, args) -> list[dict]:
    """Every solver on the problem of size ``n``, scored against the best certified lower bound."""
    rows = []
    X, y, G = problem(n)
    beta = args.lam * n
    for activation in args.activation:
        methods = args.relu_methods if activation == "relu" else ["pdhg"]
        runs = [run_ours(X, y, G, beta, activation, args.tol, args.max_iter, m) for m in methods]
        if not args.no_scnn:
            runs.append(run_scnn(X, y, G, args.lam, activation))
            if activation == "gated":
                runs.append(run_scnn(X, y, G, args.lam, activation, tol=1e-10))
        if n in args.cvxpy:
            runs.append(run_cvxpy(X, y, G, beta, activation, "CLARABEL", args.tol, args.threads))
        lower = max(r.get("lower_bound", -np.inf) for r in runs)
        for r in runs:
            r.update(n=n, activation=activation, beta=beta, best_lower_bound=lower,
                     certified_suboptimality=(r["objective"] - lower) / abs(r["objective"]))
            rows.append(r)
            print(json.dumps(r), flush=True)
    return rows

def markdown(rows, meta) -> str:
    lines = [
        f"Dense problems (d = {meta['d']}, P = {meta['P']}, scnn lambda = {meta['lam']:g}, beta = n lambda) — "
        f"{meta['date']}, {meta['machine']}, torch {meta['torch']} ({meta['threads']} threads); convexrecon in float64 "
        f"to a certified relative gap of {meta['tol']:g}. Suboptimality is certified: (objective − best dual bound) / objective.",
        "",
        "| n | activation | solver | seconds | status | objective | certified subopt. | violation |",
        "|---:|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['activation']} | {r['solver']} | {r['seconds']:.2f} | {r['status']} | "
                     f"{r['objective']:.6g} | {r['certified_suboptimality']:.1e} | {r['violation']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
