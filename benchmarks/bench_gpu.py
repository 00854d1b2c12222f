"""A block at the paper's scale on one device: time, iterations, certified gap and memory of ``fit_layer``.

The problem is block 2 of the paper's network (``docs/design.md`` §9): the inputs are the
frozen ReLU features of a random first layer (2 -> C_in channels, k x k) on
complex-valued random images, the targets a planted ReLU conv net of those
features plus 10% noise. Default: 320 x 320 images, C_in = 256, 7 x 7 kernels,
P = 64 gates, C_out = 2 — the paper's width.

For each row the script reports the solve's wall time (device synchronized),
its iterations, status and certified relative gap (certificate in float64),
the peak device memory against ``convexrecon.block.guard``'s estimate, and the time
of one forward + adjoint pair of the arrangement operator with the conv rate
it achieves (``4 n C_in k^2 P' C_out`` operations per pair, P' = P gated,
2P relu).

    python -m benchmarks.bench_gpu                          # the rows at the paper's scale, on CUDA if present
    python -m benchmarks.bench_gpu --images 1 --size 64 64 --channels 16 --device cpu   # a small smoke run

Writes ``<out>/results.{json,md}`` after every row (default
``benchmarks/results/gpu-seed``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

import convexrecon as cr  # noqa: E402
from convexrecon.block import guard  # noqa: E402
from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates  # noqa: E402
from benchmarks.kit.runinfo import write_results  # noqa: E402


def make_problem(images: int, size: tuple[int, int], channels: int, k: int, outputs: int, device, seed: int = 0):
    """Block-2 data: ReLU features of a random first layer, planted two-layer targets plus noise (float32)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn(images, 2, *size, generator=gen, device=device)
    first = torch.randn(channels, 2, k, k, generator=gen, device=device) / (k * 2 ** 0.5)
    x = torch.relu(F.conv2d(z, first, padding=k // 2))
    teacher = torch.randn(16, channels, k, k, generator=gen, device=device) / (k * channels ** 0.5)
    hidden = torch.relu(F.conv2d(x, teacher, padding=k // 2))
    y = F.conv2d(hidden, torch.randn(outputs, 16, 1, 1, generator=gen, device=device) / 4)
    y = y + 0.1 * y.std() * torch.randn(y.shape, generator=gen, device=device)
    return x, y


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(op: ArrangementConv, y: torch.Tensor, device: torch.device, repeat: int) -> float:
    """Median seconds of one adjoint + forward pair (the work of one FISTA / PDHG iteration)."""
    v = op.adjoint(y)
    op.forward(v)
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        op.forward(op.adjoint(y))
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def run_row(x, y, gates, activation: str, args, device: torch.device, allow_tf32: bool) -> dict:
    k, P, outputs = args.k, gates.shape[0], y.shape[1]
    n = x.shape[0] * x.shape[2] * x.shape[3]
    relu = activation == "relu"
    signs = 2 if relu else 1
    row = {"activation": activation, "images": x.shape[0], "image": f"{x.shape[2]}x{x.shape[3]}", "n": n,
           "C_in": x.shape[1], "k": k, "P": P, "C_out": outputs, "allow_tf32": allow_tf32, "device": str(device)}
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        op = ArrangementConv(x, arrangement_masks(x, gates), k, outputs, relu=relu)
        pair = time_pair(op, y, device, args.repeat)
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    del op
    ops = 4.0 * n * x.shape[1] * k * k * signs * P * outputs
    row.update(pair_seconds=pair, pair_tflops=ops / pair / 1e12)
    terms = guard.fit_memory_terms(tuple(x.shape), outputs, P, k, relu=relu, chunk_size=None,
                                   dtype=torch.float32, device=device)  # fit_layer itself refuses what won't fit
    row["memory_estimate_gib"] = sum(terms.values()) / 2 ** 30
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    max_iter = args.relu_max_iter if relu else args.max_iter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        sync(device)
        start = time.perf_counter()
        block = cr.fit_layer(x, y, kernel_size=k, gates=gates, beta=args.beta, activation=activation,
                             tol=args.tol, max_iter=max_iter, device=device, allow_tf32=allow_tf32)
        sync(device)
        row["seconds"] = time.perf_counter() - start
    rep = block.report
    row.update(solver=rep.solver, status=rep.status.value, iterations=rep.iterations, relative_gap=rep.relative_gap,
               primal=rep.primal, violation=rep.max_violation, beta=args.beta,
               nonzero_groups=int((block.second.weight.abs().sum(dim=(0, 2, 3)) > 0).sum()),
               seconds_per_iteration=row["seconds"] / max(rep.iterations, 1))
    if device.type == "cuda":
        row["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) - base) / 2 ** 30
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"Block at the paper's scale — {meta['date']}, {meta['device_name']}, torch {meta['torch']}; target relative gap "
             f"{meta['tol']:g}, beta = {meta['beta_ratio']:g} beta_max; float32 iterates, float64 certificate", "",
             "| activation | solver | TF32 | images | n | C_in | k | P | C_out | seconds | iterations | s / iter | "
             "status | rel. gap | pair ms | pair TFLOP/s | peak GiB | estimate GiB |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        peak = r.get("peak_memory_gib")
        lines.append(f"| {r['activation']} | {r.get('solver', '—')} | {'on' if r['allow_tf32'] else 'off'} | "
                     f"{r['images']} | {r['n']:,} | "
                     f"{r['C_in']} | {r['k']} | {r['P']} | {r['C_out']} | {r['seconds']:.2f} | {r['iterations']} | "
                     f"{r['seconds_per_iteration']:.3f} | {r['status']} | {r['relative_gap']:.1e} | "
                     f"{1e3 * r['pair_seconds']:.1f} | {r['pair_tflops']:.1f} | "
                     f"{'—' if peak is None else f'{peak:.2f}'} | {r['memory_estimate_gib']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1, 4], help="image counts, one row each")
    parser.add_argument("--size", type=int, nargs=2, default=[320, 320])
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--k", type=int, default=7)
    parser.add_argument("--P", type=int, default=64)
    parser.add_argument("--outputs", type=int, default=2)
    parser.add_argument("--activations", nargs="+", choices=["gated", "relu"], default=["gated"])
    parser.add_argument("--tf32", choices=["off", "on", "both"], default="off",
                        help="TF32 convolutions in the float32 iterations")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--beta-ratio", type=float, default=1e-2, help="beta = ratio * beta_max of each problem")
    parser.add_argument("--max-iter", type=int, default=10_000)
    parser.add_argument("--relu-max-iter", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5, help="operator pair timing: median of this many")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "gpu-seed")
    args = parser.parse_args(argv)
    if args.tol <= 0 or args.beta_ratio <= 0 or min(args.images) < 1:
        parser.error("--tol and --beta-ratio must be > 0 and --images >= 1")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.machine()} CPU"
    meta = {"date": date.today().isoformat(), "device_name": name, "torch": torch.__version__, "tol": args.tol,
            "beta_ratio": args.beta_ratio, "threads": torch.get_num_threads()}
    tf32 = {"off": [False], "on": [True], "both": [False, True]}[args.tf32]
    gates = draw_gates(args.P, args.channels, args.k, seed=1, dtype=torch.float32, device=device)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for images in args.images:
        x, y = make_problem(images, tuple(args.size), args.channels, args.k, args.outputs, device)
        for activation in args.activations:
            op = ArrangementConv(x, arrangement_masks(x, gates), args.k, args.outputs, relu=False)
            args.beta = args.beta_ratio * cr.beta_max(op, y)
            del op
            for allow in tf32:
                row = run_row(x, y, gates, activation, args, device, allow)
                rows.append(row)
                print(json.dumps(row), flush=True)
                write_results(args.out, {"meta": meta, "rows": rows}, markdown(rows, meta))
        del x, y
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
