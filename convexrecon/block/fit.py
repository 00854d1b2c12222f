r"""``fit_layer``: train one two-layer block by solving its convex program.

.. math::
    \min_{v,w}\ \tfrac12\sum_c\Big\|\sum_i D_i X (v_{ic} - w_{ic}) - y_c\Big\|^2
    + \beta\sum_{i,c}(\|v_{ic}\| + \|w_{ic}\|)
    \quad\text{s.t.}\quad (2D_i - I)Xv_{ic} \ge 0,\ (2D_i - I)Xw_{ic} \ge 0

(exact ReLU; the gated program drops ``w`` and the constraints). Pilanci &
Ergen, ICML 2020; Sahiner et al., ICLR 2021; the mathematics in ``docs/design.md`` §2-§7.

The program is posed by :mod:`convexrecon.block.problem`, its solver chosen and run by
:mod:`convexrecon.block.dispatch`; this module runs the solves for each ``beta``, checks and wraps
their answers, and holds the fresh-gate :func:`global_check`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from solvers.report import ConvergenceWarning, IterationRecord, SolverError, Status

from convexrecon import checks
from convexrecon.block.arrangements import arrangement_masks, conv_functions, draw_gates
from convexrecon.block.dispatch import BlockSolver, check_interior, choose_solver, slow_admm_message
from convexrecon.block.module import ConvexBlock, block_from_solution
from convexrecon.block.options import FitOptions
from convexrecon.block.precision import tf32_mode
from convexrecon.block.problem import beta_max, block_program
from convexrecon.errors import PerformanceWarning

# beta_max lives with the program (convexrecon.block.problem) and is imported from here too
__all__ = ["GlobalCheck", "beta_max", "fit_layer", "fit_layer_path", "global_check", "problem_beta_max"]


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
        Default: ``beta_ratio * beta_max`` where ``beta_max = max_{i,c} ||X^T D_i y_c||``
        is the smallest weight for which the gated solution is zero; the value
        used is stored in ``block.beta``.
    gates
        ``(P, C_in, k, k)`` (volumes: ``(P, C_in, k, k, k)``) gate filters; default
        drawn from ``seed`` as ``gate_sampling`` says.
    options
        A :class:`~convexrecon.block.options.FitOptions`: kernel size, number of gates,
        activation, solver (``relu_method``, ``gated_method``), tolerance, iteration budget,
        device and precision, chunking and sharding. Its docstring describes every setting
        and its default.
    **settings
        Any field of :class:`~convexrecon.block.options.FitOptions`, overriding ``options``
        (``fit_layer(x, y, kernel_size=5, tol=1e-4)``).

    Returns
    -------
    ConvexBlock
        With ``.report`` holding status, primal, dual, gap and history. A
        solve that does not reach ``tol`` warns with ``ConvergenceWarning``.
        With ``relu_start="gated"`` (exact ReLU) the report is a
        :class:`~convexrecon.block.warm_start.WarmStartedReport`: its seconds
        count the gated solve it started from, its ``warm_start`` records it.

    Raises
    ------
    ValueError, TypeError
        For invalid arguments (the message names the parameter).
    convexrecon.errors.MemoryBudgetError
        When the solve's buffers are estimated not to fit in memory.
    convexrecon.errors.SolverError
        When the solve produces no finite iterate to return (non-finite data or
        iterates from the start); never a block with non-finite weights. A solve
        that cannot certify returns its best certified block with status
        ``max_iter`` or ``inaccurate`` and warns.
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


def problem_beta_max(inputs: Any, targets: Any, *, gates: Any = None, options: FitOptions | None = None,
                     **settings: Any) -> float:
    """``beta_max`` of the block problem :func:`fit_layer` would solve with these arguments."""
    program = block_program(inputs, targets, gates=gates, options=options, **settings)
    return beta_max(program.sharded_operator, program.targets)


def _fit_blocks(inputs: Any, targets: Any, gates: Any, o: FitOptions, betas: list[float] | None,
                ratios: list[float] | None) -> list[ConvexBlock]:
    """Pose the program once, choose its solver once, then solve, check and wrap one block per ``beta``."""
    program = block_program(inputs, targets, gates=gates, options=o)
    solver = choose_solver(o, program)
    slow = slow_admm_message(o, program, solver)
    if slow is not None:  # stacklevel 4: the line that called fit_layer / fit_layer_path
        warnings.warn(slow, PerformanceWarning, stacklevel=4)
    if solver == "interior_point":
        check_interior(program, o.relu)
    runner = BlockSolver(program, o, solver)
    y, tol = program.targets, o.tol
    if betas is None:
        scale = beta_max(program.sharded_operator, y)
        if scale == 0.0:
            raise ValueError("targets are zero on every arrangement: beta cannot be chosen from beta_max; pass beta")
        betas = [r * scale for r in ratios]
    blocks, v = [], program.operator.zeros()
    for beta in betas:
        beta = checks.positive_float("beta", beta)
        callback, bar = _progress(o.progress, tol)
        try:
            v, report = runner.solve(beta, v, callback)
        finally:
            if bar is not None:
                bar.close()
        if report.status is not Status.OPTIMAL:  # one warning per block, for the block returned, at the caller's line
            warnings.warn(f"fit_layer: the block's {report.solver} solve stopped with status "
                          f"'{report.status.value}' after {report.iterations} iterations: relative gap "
                          f"{report.relative_gap:.3g} (tol {tol:.3g}), relative violation {report.max_violation:.3g}. "
                          f"{report.message}", ConvergenceWarning, stacklevel=4)
        if report.status is Status.DIVERGED or not bool(torch.isfinite(v).all()):
            raise SolverError(_diverged_message(report, program.inputs, y, o.dtype))
        blocks.append(block_from_solution(v, program.gates, y.shape[1], o.activation, beta, report))
    return blocks


def _diverged_message(report, x: Any, y: Tensor, dtype: torch.dtype) -> str:
    """What a solve that produced no finite certified block found, in the solver's own words; the precision hint
    only where the squares of the data come within a factor 1e6 of the largest number ``dtype`` holds."""
    message = (f"fit_layer: the {report.solver} solve diverged after {report.iterations} iterations: it found no "
               f"finite certified block (last objective {report.primal:.4g}); no block is returned. {report.message}")
    largest = max(float(t.abs().max()) if isinstance(t, Tensor) and t.numel() else 0.0 for t in (x, y))
    if largest ** 2 > 1e-6 * torch.finfo(dtype).max:
        message += (f" The largest |input| or |target| is {largest:.3g}: its square is near the range of {dtype}; "
                    "rescale the data or use torch.float64.")
    return message


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




def _progress(enabled: bool, tol: float):
    if not enabled:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(desc="fit_layer", unit="check")

    def callback(rec: IterationRecord) -> None:
        bar.set_postfix(rel_gap=f"{rec.relative_gap:.2e}", violation=f"{rec.max_violation:.1e}", tol=f"{tol:.0e}")
        bar.update(1)

    return callback, bar
