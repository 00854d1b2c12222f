r"""``fit_layer``: train one two-layer block by solving its convex program.

.. math::
    \min_{v,w}\ \tfrac12\sum_c\Big\|\sum_i D_i X (v_{ic} - w_{ic}) - y_c\Big\|^2
    + \beta\sum_{i,c}(\|v_{ic}\| + \|w_{ic}\|)
    \quad\text{s.t.}\quad (2D_i - I)Xv_{ic} \ge 0,\ (2D_i - I)Xw_{ic} \ge 0

(exact ReLU; the gated program drops ``w`` and the constraints). Pilanci &
Ergen, ICML 2020; Sahiner et al., ICLR 2021; the mathematics in ``docs/design.md`` §2-§7.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from solvers.admm import solve_relu_program_admm
from solvers.comm import Local, ShardedOperator, TorchDistributed
from solvers.group_lasso import solve_group_lasso
from solvers.interior import (fits_gated_interior_point, fits_interior_point, newton_system_size,
                              solve_gated_program_ipm, solve_relu_program_ipm)
from solvers.pdhg import solve_cone_group_lasso_pdhg
from solvers.report import ConvergenceWarning, IterationRecord, SolveReport, SolverError, Status

from convexrecon import checks
from convexrecon.block import guard, relu_split, streaming
from convexrecon.block.arrangements import (ArrangementConv, arrangement_masks, conv_functions, draw_gates,
                           patch_problem)
from convexrecon.block.module import ConvexBlock, block_from_solution
from convexrecon.block.options import FitOptions
from convexrecon.block.precision import tf32_mode
from convexrecon.errors import PerformanceWarning



def fit_layer(
    inputs: Any,
    targets: Any,
    *,
    beta: float | None = None,
    gates: Any = None,
    options: FitOptions | None = None,
    **settings: Any,
) -> ConvexBlock:
    """Fit a two-layer block ``k x k conv -> ReLU -> 1 x 1 conv`` to its global optimum.

    Parameters
    ----------
    inputs, targets
        ``(N, C_in, H, W)`` and ``(N, C_out, H, W)`` real tensors or arrays; or
        volumes ``(N, C_in, D, H, W)`` and ``(N, C_out, D, H, W)``, for which
        the block is ``Conv3d`` with ``k x k x k`` kernels (same operator and
        solver, see :mod:`convexrecon.block.arrangements`);
        or, for data sets larger than memory, ``inputs`` as a list/tuple of
        chunks ``(N_i, C_in, H, W)`` or an ``h5py.Dataset``, streamed chunk by
        chunk at every iteration (:mod:`convexrecon.block.streaming`, which states
        the memory needed); ``targets`` then may be chunked the same way and
        are gathered in memory.
    beta
        Weight on the group norms (= weight decay of the non-convex block).
        Default: ``beta_ratio * beta_max`` (``beta_ratio`` 1e-3 unless set) where
        ``beta_max = max_{i,c} ||X^T D_i y_c||`` is the smallest weight for which
        the gated solution is zero; the value used is stored in ``block.beta``.
    gates
        ``(P, C_in, k, k)`` (volumes: ``(P, C_in, k, k, k)``) gate filters; default drawn N(0, I) from ``seed``.
    options
        A :class:`~convexrecon.block.options.FitOptions` holding the settings
        below; keyword ``settings`` given as well override its fields.
    **settings
        Any field of :class:`~convexrecon.block.options.FitOptions` (defaults
        there, one home for each):

    kernel_size
        Odd ``k`` of the first layer (zero padding ``k // 2``).
    num_arrangements
        ``P``, number of sampled gates (ignored when ``gates`` is given).
        The hidden width is at most ``2 P C_out`` (relu) or ``P C_out`` (gated).
    activation
        ``"relu"`` (exact, cone-constrained) or ``"gated"`` (the relaxation).
    seed
        Seed of the default gates.
    beta_ratio
        ``beta = beta_ratio * beta_max`` when ``beta`` is None (default 1e-3).
    gate_sampling
        How the default gates are drawn: ``"gaussian"`` (i.i.d.) or ``"antithetic"``
        (complementary pairs ``g, -g``; see :func:`~convexrecon.block.arrangements.draw_gates`).
    device, dtype
        Where and in which precision to solve (float32 or float64). The final
        certificate is always evaluated in float64.
    tol
        Relative duality-gap tolerance (and relative violation tolerance for
        relu).
    max_iter
        Iteration budget (default 10,000 gated, 20,000 relu ADMM, 50,000 relu PDHG; 200 Newton steps
        per output for the interior-point methods); for gated FISTA blocks
        the conjugate-gradient iterations of the Newton steps count too (each
        is one forward and one adjoint, like a FISTA iteration).
    progress
        Show a progress bar with the relative gap.
    chunk_size
        Images per chunk inside the operator (bounds temporary memory; default
        about 2 MiB of conv intermediate per chunk, see
        :func:`convexrecon.block.arrangements.default_chunk_size`); for an
        ``h5py.Dataset`` input, images read per chunk (default 8).
    gate_chunk
        Arrangements per convolution (in-memory inputs): bounds the conv
        intermediate to ``S * gate_chunk * C_out`` channels and keeps the masks
        as booleans only — for one large volume, where ``chunk_size`` cannot
        help. Default: all gates at once.
    shard
        Treat ``inputs``/``targets`` as this process's shard of one data set
        spread over a ``torch.distributed`` process group: the objective is
        the sum over all ranks, every reduction (objective, gradient, dual
        certificate) is all-reduced, and every rank returns the same block,
        equal up to rounding to a single-process solve on all the data.
        Default: True when ``torch.distributed`` is initialized with more than
        one rank. Every rank must call ``fit_layer`` with the same settings;
        shards may hold different numbers and sizes of images. Gates come
        from ``seed`` (or rank 0's ``gates``).
    relu_method
        Solver of the exact-ReLU program. ``"auto"`` (default): the interior
        point where it fits (in-memory data in one process and
        :func:`solvers.interior.fits_interior_point`), ``"admm"`` otherwise
        and for ``beta >= beta_max`` (zero block); when the interior point ends
        without certifying (it stalls on some small over-parameterised blocks,
        ``P C_in k^2`` far above ``N H W``), ADMM solves the block too and the
        better certified of the two is returned (``report.message`` says so,
        ``report.solver`` says whose block it is; one ``ConvergenceWarning``
        when neither reached ``tol``). ``"admm"``: ADMM on the cone values
        ``z = C v`` (:mod:`solvers.admm`): matrix-free with the masked conv,
        streaming (with cached masks), sharding and on a GPU like the gated
        path, plus the ``C_in k^2``-square Gram matrix of the patches and
        about eight cone-sized buffers ``(N, 2, P, C_out, H, W)``; its
        ``report.primal`` is the returned block's own objective and its dual
        comes from the cone multipliers, so ``primal - p* <= gap`` always; it
        is ``optimal`` only with both the block's and the program's value
        within ``tol`` above the dual bound and violations within ``tol / 100``.
        ``"pdhg"``: matrix-free restarted PDHG (:mod:`solvers.pdhg`; slower
        than ADMM on conv blocks, kept for comparison). ``"interior_point"``
        (:mod:`solvers.interior`: a primal-dual
        interior-point method on the explicit patch matrix, float64, for
        in-memory problems whose Newton system ``min(N H W, P C_in k^2)``
        has at most 12,000 unknowns, with at most 2^25 cone rows ``N H W x 2 P``
        and, when ``N H W`` is the smaller side, a Woodbury factor
        ``N H W x P C_in k^2`` of at most 2^27 numbers; far fewer iterations to a tight
        certificate, strictly feasible iterates). Ignored for gated blocks.
    gated_method
        Solver of the gated program: ``"fista"`` (matrix-free FISTA with a
        Newton-CG tail, :mod:`solvers.group_lasso`; any size, streaming and
        sharding) or ``"interior_point"`` (a barrier Newton method on the
        explicit patch matrix, float64, :func:`solvers.interior.solve_gated_program_ipm`,
        for in-memory problems with ``P C_in k^2 <= 12,000`` unknowns: a few
        dozen small factorisations to a tight certificate). Ignored for relu
        blocks.
    allow_tf32
        On CUDA, let float32 convolutions and matrix products run in TF32
        (10-bit mantissa; about 3e-4 relative error per product). Default
        False: TF32 is switched off for the duration of the solve and the
        previous settings are restored after, so GPU iterates carry float32
        rounding only, as on the CPU. With True the solve is faster on
        Ampere/Hopper GPUs but its gradient no longer matches the float64
        certificate to float32 accuracy: the certificate stays honest, yet may
        stall above a tight ``tol``. No effect on the CPU or in float64.

    Returns
    -------
    ConvexBlock
        With ``.report`` holding status, primal, dual, gap and history. A
        solve that does not reach ``tol`` warns with ``ConvergenceWarning``.

    Raises
    ------
    ValueError, TypeError
        For invalid arguments (the message names the parameter).
    convexrecon.errors.MemoryBudgetError
        When the solve's buffers are estimated not to fit in memory.
    convexrecon.errors.SolverError
        When the solve diverges (non-finite iterates); never a block with
        non-finite weights.
    """
    options = FitOptions.of(options, **settings)
    betas = None if beta is None else [beta]
    return _fit(inputs, targets, gates, options, betas=betas, ratios=None if betas else [options.beta_ratio])[0]


def fit_layer_path(inputs: Any, targets: Any, betas: Sequence[float] | None = None, *,
                   beta_ratios: Sequence[float] | None = None, gates: Any = None, options: FitOptions | None = None,
                   **settings: Any) -> list[ConvexBlock]:
    """Blocks for several ``beta`` on the same data and gates, each solve warm-started from the previous.

    Give either ``betas`` or ``beta_ratios`` (each times ``beta_max`` of the data, computed once on
    the block's operator). They are solved from the largest to the smallest (sparse to dense, where
    warm starts help most) and returned in the order given. The data, masks and operator are built
    once. ``gates``, ``options`` and ``settings`` are those of :func:`fit_layer`; every block carries
    its own certified report. Only the primal ``v`` is carried over: the gated FISTA path gains from
    it, the relu PDHG (whose dual variables restart at zero) hardly does.
    """
    if "beta" in settings:
        raise TypeError("fit_layer_path takes 'betas' (or 'beta_ratios'), not 'beta'")
    if (betas is None) == (beta_ratios is None):
        raise TypeError("fit_layer_path takes exactly one of 'betas' and 'beta_ratios'; "
                        f"got {'both' if betas is not None else 'neither'}")
    name, values = ("betas", betas) if betas is not None else ("beta_ratios", beta_ratios)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
        raise ValueError(f"The '{name}' parameter must be a non-empty sequence of positive floats. Got {values!r} instead.")
    values = [checks.positive_float(f"{name}[]", b) for b in values]
    order = sorted(range(len(values)), key=lambda j: -values[j])
    ordered = [values[j] for j in order]
    options = FitOptions.of(options, **settings)
    blocks = _fit(inputs, targets, gates, options, **{"betas" if betas is not None else "ratios": ordered})
    out: list[ConvexBlock | None] = [None] * len(values)
    for j, block in zip(order, blocks):
        out[j] = block
    return out


def _fit(inputs: Any, targets: Any, gates: Any, options: FitOptions, *, betas: list[float] | None = None,
         ratios: list[float] | None = None) -> list[ConvexBlock]:
    """``fit_layer`` for explicit ``betas``, or ``ratios`` of ``beta_max``, warm-starting each solve from the last."""
    with tf32_mode(options.allow_tf32):
        return _fit_blocks(inputs, targets, gates, options, betas, ratios)


def _problem(inputs: Any, targets: Any, gates: Any, o: FitOptions):
    """Validated data, gates, communicator and the masked-conv operator of a block's convex program."""
    device, dtype, kernel_size, chunk_size, gate_chunk = o.device, o.dtype, o.kernel_size, o.chunk_size, o.gate_chunk
    if streaming.is_chunked(inputs):
        x = streaming.ChunkSource("inputs", inputs, chunk_size=chunk_size, dtype=dtype, device=device)
        y = (streaming.ChunkSource("targets", targets, chunk_size=chunk_size, dtype=dtype, device=device).gather()
             if streaming.is_chunked(targets) else checks.as_batch("targets", targets, dtype=dtype, device=device))
        streaming.stream_shapes_match(x, y)
        channels, spatial_dims = x.channels, len(x.spatial)
    else:
        x = checks.as_batch("inputs", inputs, dtype=dtype, device=device)
        y = checks.as_batch("targets", targets, dtype=dtype, device=device)
        checks.check_pair(x, y)
        channels, spatial_dims = x.shape[1], x.ndim - 2
    if gates is None:
        gates = draw_gates(o.num_arrangements, channels, kernel_size, o.seed, spatial_dims=spatial_dims, dtype=dtype,
                           device=device, sampling=o.gate_sampling)
    else:
        gates = _check_gates(gates, (channels,) + (kernel_size,) * spatial_dims, dtype, device)
    comm = _communicator(o.shard, device)
    if comm.world_size > 1:
        _check_shards(comm, channels, y)
        gates = comm.broadcast(gates.contiguous())
    relu = o.relu
    if isinstance(x, streaming.ChunkSource):  # streamed: only the masks may be resident, within their own budget
        operator = streaming.StreamingArrangementConv(x, gates, kernel_size, y.shape[1], relu=relu)
    else:
        guard.check_fit_memory(tuple(x.shape), y.shape[1], gates.shape[0], kernel_size, relu=relu,
                               chunk_size=chunk_size, gate_chunk=gate_chunk, dtype=dtype, device=device)
        operator = ArrangementConv(x, arrangement_masks(x, gates, gate_chunk), kernel_size, y.shape[1], relu=relu,
                                   chunk_size=chunk_size, gate_chunk=gate_chunk)
    return x, y, gates, comm, operator


def problem_beta_max(inputs: Any, targets: Any, *, gates: Any = None, options: FitOptions | None = None,
                     **settings: Any) -> float:
    """``beta_max`` of the block problem :func:`fit_layer` would solve with these arguments."""
    options = FitOptions.of(options, **settings)
    _, y, _, comm, operator = _problem(inputs, targets, gates, options)
    return beta_max(ShardedOperator(operator, comm), y)


def _fit_blocks(inputs: Any, targets: Any, gates: Any, o: FitOptions, betas: list[float] | None,
                ratios: list[float] | None) -> list[ConvexBlock]:
    x, y, gates, comm, operator = _problem(inputs, targets, gates, o)
    relu, relu_method = o.relu, o.relu_method
    auto = relu and relu_method == "auto"
    if auto:  # the interior point where its Newton system fits, ADMM otherwise
        relu_method = "interior_point" if _interior_fits(x, gates, comm) else "admm"
        rows = 2 * gates.shape[0] * y.numel()
        if relu_method == "admm" and rows >= _SLOW_EXACT_ROWS:
            warnings.warn(
                f"fit_layer: activation='relu' (the default) with relu_method='auto' solves this block by ADMM, since "
                f"the interior point does not fit it (streamed or sharded data, or beyond its size limits): on "
                f"{rows:,} cone rows expect minutes to hours on a CPU (docs/benchmarks.md, 'Exact-ReLU blocks at "
                f"training scale'). activation='gated' solves the relaxation far faster.",
                PerformanceWarning, stacklevel=4)
    interior = relu_method == "interior_point" if relu else o.gated_method == "interior_point"
    if interior:
        _check_interior(x, y, gates, o.kernel_size, comm, relu)
    dtype = o.dtype
    certify_operator = operator.to(torch.float64) if dtype != torch.float64 else None
    if betas is None:
        scale = beta_max(ShardedOperator(operator, comm), y)
        if scale == 0.0:
            raise ValueError("targets are zero on every arrangement: beta cannot be chosen from beta_max; pass beta")
        betas = [r * scale for r in ratios]
    blocks, v, split = [], operator.zeros(), None
    tol, max_iter = o.tol, o.max_iter
    for beta in betas:
        beta = checks.positive_float("beta", beta)
        callback, bar = _progress(o.progress, tol)
        method = relu_method
        if auto and interior and beta >= beta_max(ShardedOperator(operator, comm), y):
            method = "admm"  # the zero block is optimal: ADMM certifies it at its first check
        try:
            fallback = None
            if interior and not (relu and method == "admm"):
                start = v
                v, report = _quietly(_solve_interior, x, y, operator, gates, o.kernel_size, beta, tol,
                                     max_iter, callback, relu)
                if auto and report.status is not Status.OPTIMAL:
                    # the interior point diverges on some small over-parameterised programs (P C_in k^2 >> N H W:
                    # e.g. 25 patches, 1152 unknowns per output ended 63x above cvxpy's optimum); ADMM solves them
                    # from ADMM's own start (from the interior point's best iterate it took 2-45x longer)
                    fallback, method, v_interior, v = report, "admm", v, start
            if relu and method == "admm":
                if split is None:
                    split = relu_split.admm_structure(operator, x, o.kernel_size, comm) + (
                        relu_split.relu_prediction(operator),)
                v, _, report = _quietly(
                    solve_relu_program_admm, operator, y, beta, v, gram=split[0],
                    pick=split[1], spread=split[2], realised=split[3], tol=tol, max_iter=max_iter or 20_000,
                    certify_operator=certify_operator, callback=callback, comm=comm,
                )
                if fallback is not None and _better(fallback, report) and bool(torch.isfinite(v_interior).all()):
                    # ADMM did not beat it (an interior point that stopped 'inaccurate' just above tol is usually
                    # far better than an ADMM run out of iterations): keep the interior point's block
                    v, report = v_interior, dataclasses.replace(
                        fallback, seconds=report.seconds + fallback.seconds,
                        message=(f"relu_method='auto': the interior point ended {fallback.status.value}; ADMM, tried "
                                 f"next, ended {report.status.value} at relative gap {report.relative_gap:.3g}, so "
                                 f"the interior point's block is kept; {fallback.message}"))
                elif fallback is not None:
                    report = dataclasses.replace(
                        report, seconds=report.seconds + fallback.seconds,
                        message=(f"relu_method='auto': the interior point ended {fallback.status.value} after "
                                 f"{fallback.iterations} iterations (relative gap {fallback.relative_gap:.3g}), so "
                                 f"ADMM solved the block instead; {report.message}"))
            elif relu and not interior:
                v, _, report = _quietly(
                    solve_cone_group_lasso_pdhg, operator, y, beta, v, tol=tol, max_iter=max_iter or 50_000,
                    certify_operator=certify_operator, callback=callback, comm=comm,
                )
            elif not interior:
                v, report = _quietly(
                    solve_group_lasso, operator, y, beta, v, tol=tol, max_iter=max_iter or 10_000,
                    certify_operator=certify_operator, callback=callback, comm=comm,
                )
        finally:
            if bar is not None:
                bar.close()
        if report.status is not Status.OPTIMAL:  # one warning per block, for the block returned, at the caller's line
            warnings.warn(f"fit_layer: the block's {report.solver} solve stopped with status "
                          f"'{report.status.value}' after {report.iterations} iterations: relative gap "
                          f"{report.relative_gap:.3g} (tol {tol:.3g}), relative violation {report.max_violation:.3g}. "
                          f"{report.message}", ConvergenceWarning, stacklevel=4)
        if report.status is Status.DIVERGED or not bool(torch.isfinite(v).all()):
            raise SolverError(
                f"fit_layer: the {report.solver} solve diverged after {report.iterations} iterations (primal "
                f"{report.primal:.4g}); no block is returned. The data may overflow {dtype} (largest |target| "
                f"{float(y.abs().max()):.3g}): rescale them or use torch.float64."
            )
        blocks.append(block_from_solution(v, gates, y.shape[1], o.activation, beta, report))
    return blocks


# exact-ReLU blocks with at least this many cone rows (N H W C_out 2P) warn when auto must use ADMM: the issue-18
# benchmark block has 640,000 and ADMM took 157 s there for 6,000 iterations without reaching 1e-3
_SLOW_EXACT_ROWS = 2**20


def _quietly(solve, *args, **kwargs):
    """``solve(*args, **kwargs)`` with its :class:`ConvergenceWarning` dropped (``_fit_blocks`` warns once per block,
    for the block it returns, pointing at the line that called ``fit_layer``); any other warning is passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = solve(*args, **kwargs)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _better(first: SolveReport, second: SolveReport) -> bool:
    """Whether ``first`` certifies at least as well as ``second``: the smaller relative gap, a diverged run never."""
    if first.status is Status.DIVERGED or not math.isfinite(first.relative_gap):
        return False
    if second.status is Status.DIVERGED or not math.isfinite(second.relative_gap):
        return True
    return first.relative_gap <= second.relative_gap


def _check_interior(x: Any, y: Tensor, gates: Tensor, kernel_size: int, comm: Local, relu: bool = True) -> None:
    """The interior-point methods need the whole data in memory, in one process, and a small Newton system."""
    name, other = ("relu_method", "pdhg") if relu else ("gated_method", "fista")
    if isinstance(x, streaming.ChunkSource):
        raise ValueError(f"{name}='interior_point' needs in-memory inputs (a tensor). Got "
                         f"chunked/streamed inputs instead: use {name}='{other}'.")
    if comm.world_size > 1:
        raise ValueError(f"{name}='interior_point' runs in one process. Got a sharded solve over "
                         f"{comm.world_size} ranks instead: use {name}='{other}'.")
    n = int(x.shape[0]) * int(torch.tensor(x.shape[2:]).prod())
    d = int(gates[0].numel())
    P = gates.shape[0]
    if not relu:
        if not fits_gated_interior_point(n, P, d):
            raise ValueError(f"gated_method='interior_point' solves a dense Newton system of P*C_in*k^d = {P * d} "
                             f"unknowns on an explicit patch matrix of N*H*W x C_in*k^d = {n} x {d}; its limits are "
                             "12000 unknowns and 2^27 numbers in the patch matrix and in the masks (N*H*W x P): use "
                             "gated_method='fista'")
        return
    if not fits_interior_point(n, P, d):
        raise ValueError(f"relu_method='interior_point' solves a dense Newton system of min(N*H*W, P*C_in*k^d) = "
                         f"min({n}, {P * d}) = {newton_system_size(n, P, d)} unknowns (N*H*W * 2*P = "
                         f"{n * 2 * P} cone rows), above its limits (12000 unknowns; 2^27 numbers in the "
                         "Woodbury factor N*H*W * P*C_in*k^d; 2^25 cone rows): use relu_method='pdhg'")


def _interior_fits(x: Any, gates: Tensor, comm: Local) -> bool:
    """``relu_method="auto"``: the interior point needs in-memory data, one process and a small Newton system."""
    if isinstance(x, streaming.ChunkSource) or comm.world_size > 1:
        return False
    n = int(x.shape[0]) * int(torch.tensor(x.shape[2:]).prod())
    return fits_interior_point(n, gates.shape[0], int(gates[0].numel()))


def _solve_interior(x: Tensor, y: Tensor, operator: ArrangementConv, gates: Tensor, kernel_size: int, beta: float,
                    tol: float, max_iter: int | None, callback, relu: bool = True):
    """Interior-point solve on the explicit patch problem (exact ReLU, or gated by the barrier Newton method);
    ``v`` in the operator's layout."""
    X, D, Y = patch_problem(x, operator.masks, y, kernel_size)
    X, D, Y = torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(Y)
    if relu:
        U, _, report = solve_relu_program_ipm(X, D, Y, beta, gates=gates.double().reshape(gates.shape[0], -1).cpu(),
                                              tol=tol, max_iter=max_iter or 200, callback=callback)
    else:
        U, report = solve_gated_program_ipm(X, D, Y, beta, tol=tol, max_iter=max_iter or 200, callback=callback)
    # U is (2, P, C_out, d) for relu, (P, C_out, d) gated: the operator's group order
    v = U.reshape(operator.var_shape).to(device=x.device, dtype=x.dtype)
    return v, report


def beta_max(operator: ArrangementConv, y: Tensor) -> float:
    """``max_{i,c} ||X^T D_i y_c||``: the gated solution is zero for ``beta >= beta_max``."""
    direction = operator.adjoint(y)  # for relu the w groups repeat the v groups with a sign flip
    return float(torch.linalg.vector_norm(direction.reshape(direction.shape[0], -1).double(), dim=1).max())


@dataclass(frozen=True)
class GlobalCheck:
    """Fresh-arrangement dual check of a solved block (``docs/design.md`` §5.5, The fresh-gate global check).

    ``score = max_{h,c} ||X^T D_h theta_c|| / beta - 1`` over fresh gates
    ``h``, with ``theta`` the block's residual on the data. ``score <= 0``
    certifies that no neuron with a fresh activation pattern would lower the
    objective (for the gated program exactly; for relu it is sufficient, since
    the cone multipliers can only shrink the dual norm). ``sampled_score`` is
    the same quantity over the block's own gates (about 0 at optimum).
    """

    score: float
    sampled_score: float
    scores: Tensor
    num_fresh: int


@torch.no_grad()
def global_check(block: ConvexBlock, inputs: Any, targets: Any, num_fresh: int = 256, seed: int = 1_000_003,
                 chunk: int = 64) -> GlobalCheck:
    """Draw ``num_fresh`` fresh gates and report how far the block is from dual feasibility."""
    num_fresh = checks.positive_int("num_fresh", num_fresh)
    dtype = torch.float64
    device = block.gates.device
    x = checks.as_batch("inputs", inputs, dtype=dtype, device=device)
    y = checks.as_batch("targets", targets, dtype=dtype, device=device)
    checks.check_pair(x, y)
    if x.shape[1] != block.gates.shape[1]:
        raise ValueError(f"The 'inputs' parameter must have {block.gates.shape[1]} channels for this block. Got {x.shape[1]} instead.")
    if y.shape[1] != block.second.out_channels:
        raise ValueError(f"The 'targets' parameter must have {block.second.out_channels} channels for this block. Got {y.shape[1]} instead.")
    theta = y - block.to(dtype)(x)
    if x.ndim != block.gates.ndim:
        raise ValueError(f"The 'inputs' parameter must have {block.gates.ndim} dimensions for this block. Got shape {tuple(x.shape)} instead.")
    fresh = draw_gates(num_fresh, x.shape[1], block.kernel_size, seed, spatial_dims=x.ndim - 2, dtype=dtype,
                       device=device)
    scores = torch.cat([_dual_norms(x, g, theta) for g in fresh.split(chunk)]) / block.beta - 1.0
    sampled = _dual_norms(x, block.gates.to(dtype), theta) / block.beta - 1.0
    return GlobalCheck(float(scores.max()), float(sampled.max()), scores, num_fresh)


def _dual_norms(x: Tensor, gates: Tensor, theta: Tensor) -> Tensor:
    """``||X^T D_h theta_c||`` for every gate ``h`` and output ``c``: ``(H, C_out)``."""
    k = gates.shape[-1]
    masks = arrangement_masks(x, gates).to(theta.dtype)
    n, c = theta.shape[:2]
    back = (masks[:, :, None] * theta[:, None]).reshape(n, -1, *theta.shape[2:])
    _, conv_weight = conv_functions(x.ndim - 2)
    grads = conv_weight(x, (gates.shape[0] * c,) + tuple(gates.shape[1:]), back, padding=k // 2)
    return torch.linalg.vector_norm(grads.reshape(gates.shape[0], c, -1), dim=-1)


def _communicator(shard: bool | None, device: torch.device) -> Local:
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if shard is None:
        shard = initialized and dist.get_world_size() > 1
    if not shard:
        return Local()
    if not initialized:
        raise ValueError("shard=True needs torch.distributed to be initialized (torch.distributed.init_process_group)")
    return TorchDistributed(device)


def _check_shards(comm: TorchDistributed, input_channels: int, y: Tensor) -> None:
    """Every rank must hold images with the same channel counts."""
    for name, channels in (("inputs", input_channels), ("targets", y.shape[1])):
        low, high = -comm.max(-float(channels)), comm.max(float(channels))
        if low != high:
            raise ValueError(f"{name} must have the same number of channels on every rank; "
                             f"rank {comm.rank} has {channels}, others range from {int(low)} to {int(high)}")


def _check_gates(gates: Any, filter_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``filter_shape`` is ``(C_in, k, k)`` or ``(C_in, k, k, k)``."""
    expected = "(P, " + ", ".join(str(n) for n in filter_shape) + ")"
    if not isinstance(gates, (Tensor,)) and not hasattr(gates, "__array__"):
        raise TypeError(f"The 'gates' parameter must be a tensor of shape {expected}. Got {type(gates).__name__} instead.")
    gates = torch.as_tensor(gates)
    if gates.ndim != 1 + len(filter_shape) or tuple(gates.shape[1:]) != filter_shape or gates.shape[0] < 1:
        raise ValueError(f"The 'gates' parameter must have shape {expected} with P >= 1. Got {tuple(gates.shape)} instead.")
    if not bool(torch.isfinite(gates).all()):
        raise ValueError("The 'gates' parameter must be finite. Found NaN/Inf values instead.")
    return gates.to(device=device, dtype=dtype)


def _progress(enabled: bool, tol: float):
    if not enabled:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(desc="fit_layer", unit="check")

    def callback(rec: IterationRecord) -> None:
        bar.set_postfix(rel_gap=f"{rec.relative_gap:.2e}", violation=f"{rec.max_violation:.1e}", tol=f"{tol:.0e}")
        bar.update(1)

    return callback, bar
