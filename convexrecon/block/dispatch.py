"""Which solver runs a block's program, and the rule that backs the interior point up by ADMM.

As in sigpy's ``LinearLeastSquares._get_alg``, the choice is a short function of the options and the
program's size (:func:`choose_solver`), kept apart from running it (:class:`BlockSolver`, one runner per
solver) and from the one fallback rule of ``relu_method="auto"`` (:func:`keep_better_certified`):

=====================  ===========================================================================
solver                 runs
=====================  ===========================================================================
``"interior_point"``   :mod:`solvers.interior` on the explicit patch matrix (relu or gated)
``"admm"``             :func:`solvers.admm.solve_relu_program_admm` (relu)
``"pdhg"``             :func:`solvers.pdhg.solve_cone_group_lasso_pdhg` (relu)
``"fista"``            :func:`solvers.group_lasso.solve_group_lasso` (gated)
=====================  ===========================================================================
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import torch
from torch import Tensor

from solvers.admm import solve_relu_program_admm
from solvers.group_lasso import solve_group_lasso
from solvers import interior
from solvers.interior import (fits_gated_interior_point, fits_interior_point, newton_memory_bytes, newton_system_size,
                              solve_gated_program_ipm, solve_relu_program_ipm)
from solvers.pdhg import solve_cone_group_lasso_pdhg
from solvers.report import ConvergenceWarning, SolveReport, Status

from convexrecon.block import guard, relu_split
from convexrecon.block.arrangements import ArrangementConv, patch_problem
from convexrecon.block.options import FitOptions
from convexrecon.block.problem import BlockProgram, beta_max
from convexrecon.block.streaming import StreamingArrangementConv
from convexrecon.block.warm_start import WarmStart, split_gated, with_warm_start

DEFAULT_MAX_ITER = {"interior_point": 200, "admm": 20_000, "pdhg": 50_000, "fista": 10_000}
"""Iteration budget of each solver when ``FitOptions.max_iter`` is None (interior point: per output)."""

# exact-ReLU blocks with at least this many cone rows (N H W C_out 2P) warn when auto must use ADMM:
# benchmarks/bench_relu.py's default block has 640,000, where ADMM took 157 s for 6,000 iterations without
# reaching a relative gap of 1e-3
_SLOW_EXACT_ROWS = 2**20


def choose_solver(o: FitOptions, program: BlockProgram) -> str:
    """The solver of the block: the method the options name, and for ``relu_method="auto"`` the interior
    point where it fits (:func:`interior_fits`), ADMM otherwise."""
    if not o.relu:
        return o.gated_method
    if o.relu_method != "auto":
        return o.relu_method
    return "interior_point" if interior_fits(program) else "admm"


def interior_fits(program: BlockProgram) -> bool:
    """The interior point needs in-memory data, one process and a small Newton system (:func:`newton_limit`)."""
    if program.streamed or program.comm.world_size > 1:
        return False
    return fits_interior_point(*_sizes(program), max_system=newton_limit(program))


# share of the available memory the interior point's dense matrices may take on a block above MAX_NEWTON_UNKNOWNS
# (the rest holds the patches, masks, per-row arrays and the ADMM fallback)
_NEWTON_MEMORY_SHARE = 0.5


def newton_limit(program: BlockProgram) -> int:
    """The largest relu Newton system the interior point takes on this block: ``solvers.interior``'s
    ``STRETCH_NEWTON_UNKNOWNS`` where its dense matrices (:func:`solvers.interior.newton_memory_bytes`) fit in
    half the memory available (:func:`convexrecon.block.guard.available_bytes`), else ``MAX_NEWTON_UNKNOWNS``:
    the Newton system is the known-good method, and ADMM on such blocks may take far longer without certifying."""
    if program.streamed:
        return interior.MAX_NEWTON_UNKNOWNS
    available, _ = guard.available_bytes(program.inputs.device)
    if available is None or newton_memory_bytes(*_sizes(program)) > _NEWTON_MEMORY_SHARE * available:
        return interior.MAX_NEWTON_UNKNOWNS
    return max(interior.MAX_NEWTON_UNKNOWNS, interior.STRETCH_NEWTON_UNKNOWNS)


def check_interior(program: BlockProgram, relu: bool) -> None:
    """Raise ``ValueError`` naming the setting when the interior point named by the options cannot take the block:
    streamed or sharded data, or a program beyond the limits of :mod:`solvers.interior`."""
    name, other = ("relu_method", "pdhg") if relu else ("gated_method", "fista")
    if program.streamed:
        raise ValueError(f"{name}='interior_point' needs in-memory inputs (a tensor). Got "
                         f"chunked/streamed inputs instead: use {name}='{other}'.")
    if program.comm.world_size > 1:
        raise ValueError(f"{name}='interior_point' runs in one process. Got a sharded solve over "
                         f"{program.comm.world_size} ranks instead: use {name}='{other}'.")
    n, P, d = _sizes(program)
    if not relu:
        if not fits_gated_interior_point(n, P, d):
            raise ValueError(f"gated_method='interior_point' solves a dense Newton system of P*C_in*k^d = {P * d} "
                             f"unknowns on an explicit patch matrix of N*H*W x C_in*k^d = {n} x {d}; its limits are "
                             f"{interior.MAX_NEWTON_UNKNOWNS} unknowns and {_power(interior.MAX_ARRAY_NUMBERS)} "
                             "numbers in the patch matrix and in the masks (N*H*W x P): use gated_method='fista'")
        return
    limit = newton_limit(program)
    if not fits_interior_point(n, P, d, max_system=limit):
        raise ValueError(f"relu_method='interior_point' solves a dense Newton system of min(N*H*W, P*C_in*k^d) = "
                         f"min({n}, {P * d}) = {newton_system_size(n, P, d)} unknowns (N*H*W * 2*P = "
                         f"{n * 2 * P} cone rows), above its limits ({limit} unknowns; "
                         f"{_power(interior.MAX_ARRAY_NUMBERS)} numbers in the Woodbury factor N*H*W * P*C_in*k^d; "
                         f"{_power(interior.MAX_CONE_ROWS)} cone rows): use relu_method='pdhg'")


def slow_admm_message(o: FitOptions, program: BlockProgram, solver: str) -> str | None:
    """The warning for ``relu_method="auto"`` that must use ADMM on a large block (None when there is none)."""
    rows = 2 * program.gates.shape[0] * program.targets.numel()
    if not (o.relu and o.relu_method == "auto" and solver == "admm" and rows >= _SLOW_EXACT_ROWS):
        return None
    return (f"fit_layer: activation='relu' (the default) with relu_method='auto' solves this block by ADMM, since "
            f"the interior point does not fit it (streamed or sharded data, or beyond its size limits): on "
            f"{rows:,} cone rows expect minutes to hours on a CPU (docs/benchmarks.md, 'Exact-ReLU blocks at "
            f"training scale'). activation='gated' solves the relaxation far faster.")


class BlockSolver:
    """Runs the chosen solver on one program for one ``beta`` after another (:meth:`solve`).

    Each solve starts from the ``v`` it is given (the previous block of a path); the interior point starts
    from its own point. With ``relu_start="gated"`` an exact-ReLU solve starts instead from the gated optimum
    of the same ``beta`` (:meth:`_gated_start`; the gated solves of a path warm-start each other), the interior
    point too where the split keeps a group (from a zero split it starts from its own point). The solvers'
    own ``ConvergenceWarning`` is dropped: ``fit_layer`` warns once per block, for the block it returns. The
    ADMM patch structure is built at its first use and kept for the next betas.
    """

    def __init__(self, program: BlockProgram, o: FitOptions, solver: str) -> None:
        self.program, self.options, self.solver = program, o, solver
        self.auto = o.relu and o.relu_method == "auto"
        op = program.operator
        self.certify_operator = op.to(torch.float64) if o.dtype != torch.float64 else None
        self._admm_parts: tuple | None = None
        self.warm = o.relu and o.relu_start == "gated"
        self._gated: tuple[BlockSolver, Tensor] | None = None  # the gated runner and its last solution

    def solve(self, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        """``(v, report)`` of the block at ``beta``, warm-started from ``v`` (or from the gated optimum)."""
        if not self.warm:
            return self._solve(beta, v, callback)
        v, warm = self._gated_start(beta)
        v, report = self._solve(beta, v, callback)
        return v, with_warm_start(report, warm)

    def _gated_start(self, beta: float) -> tuple[Tensor, WarmStart]:
        """The exact program's start from the gated optimum at ``beta`` (:func:`split_gated`) and what it took."""
        start = time.perf_counter()
        p, o = self.program, self.options
        if self._gated is None:
            if isinstance(p.operator, StreamingArrangementConv):
                op = p.operator
                gated_op = StreamingArrangementConv(op.source, op.gates, op.k, op.num_outputs, relu=False,
                                                    mask_cache_bytes=op.mask_cache_bytes, _masks=op._masks)
            else:
                op = p.operator
                gated_op = ArrangementConv(op.x, op.masks, op.k, op.num_outputs, relu=False,
                                           chunk_size=o.chunk_size, gate_chunk=o.gate_chunk, dtype=op.dtype)
            program = dataclasses.replace(p, operator=gated_op)
            # the gated solve runs to tol within its own budget: max_iter is the exact solver's
            gated_o = dataclasses.replace(o, activation="gated", max_iter=None, progress=False)
            method = o.gated_method
            if method == "interior_point" and (program.streamed or program.comm.world_size > 1
                                               or not fits_gated_interior_point(*_sizes(program))):
                method = "fista"  # the warm start is a means, not the block asked for: take the solver that fits
            self._gated = (BlockSolver(program, gated_o, method), gated_op.zeros())
        runner, previous = self._gated
        u, report = runner.solve(beta, previous, None)
        if not bool(torch.isfinite(u).all()):  # never start from a non-finite point
            u = torch.zeros_like(previous)
        self._gated = (runner, u)
        v, shifted, dropped, scale, objective, found = split_gated(p.operator, p.gates, u, p.targets, beta, p.comm)
        return v, WarmStart(report.solver, report.status.value, report.iterations, report.seconds,
                            report.relative_gap, shifted, dropped, scale, objective, time.perf_counter() - start, *found)

    def _solve(self, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        solver = self.solver
        if self.auto and solver == "interior_point" and beta >= beta_max(self.program.sharded_operator,
                                                                           self.program.targets):
            solver = "admm"  # the zero block is optimal: ADMM certifies it at its first check
        solved = self._run(solver, beta, v, callback)
        if self.auto and solver == "interior_point" and solved[1].status is not Status.OPTIMAL:
            # the interior point diverges on some small over-parameterised programs (P C_in k^2 >> N H W: e.g.
            # 25 patches, 1152 unknowns per output ended 63x above cvxpy's optimum); ADMM solves them from ADMM's
            # own start (from the interior point's best iterate it took 2-45x longer)
            return keep_better_certified(solved, self._run("admm", beta, v, callback))
        return solved

    def _run(self, solver: str, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        run = {"interior_point": self._interior, "admm": self._admm, "pdhg": self._pdhg, "fista": self._fista}
        return run[solver](beta, v, callback)

    def _interior(self, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        p, o = self.program, self.options
        return _quietly(_solve_interior, p.inputs, p.targets, p.operator, p.gates, o.kernel_size, beta, o.tol,
                        o.max_iter, callback, o.relu, newton_limit(p) if o.relu else None,
                        v if self.warm and bool(v.any()) else None)  # a zero split carries nothing: own start

    def _admm(self, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        p, o = self.program, self.options
        if self._admm_parts is None:
            self._admm_parts = relu_split.admm_structure(p.operator, p.inputs, o.kernel_size, p.comm) + (
                relu_split.relu_prediction(p.operator),)
        gram, pick, spread, realised = self._admm_parts
        v, _, report = _quietly(
            solve_relu_program_admm, p.operator, p.targets, beta, v, gram=gram, pick=pick, spread=spread,
            realised=realised, tol=o.tol, max_iter=o.max_iter or DEFAULT_MAX_ITER["admm"],
            certify_operator=self.certify_operator, callback=callback, comm=p.comm,
        )
        return v, report

    def _pdhg(self, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        p, o = self.program, self.options
        v, _, report = _quietly(
            solve_cone_group_lasso_pdhg, p.operator, p.targets, beta, v, tol=o.tol,
            max_iter=o.max_iter or DEFAULT_MAX_ITER["pdhg"], certify_operator=self.certify_operator,
            callback=callback, comm=p.comm,
        )
        return v, report

    def _fista(self, beta: float, v: Tensor, callback) -> tuple[Tensor, SolveReport]:
        p, o = self.program, self.options
        return _quietly(
            solve_group_lasso, p.operator, p.targets, beta, v, tol=o.tol,
            max_iter=o.max_iter or DEFAULT_MAX_ITER["fista"], certify_operator=self.certify_operator,
            callback=callback, comm=p.comm,
        )


def keep_better_certified(interior: tuple[Tensor, SolveReport],
                          admm: tuple[Tensor, SolveReport]) -> tuple[Tensor, SolveReport]:
    """The fallback rule of ``relu_method="auto"``: after an interior point that ended short of ``tol``, ADMM
    solves the block too and the better certified of the two blocks is returned.

    ADMM's block is kept unless the interior point's certifies at least as well (:func:`_better`) with finite
    weights: an interior point that stopped 'inaccurate' just above ``tol`` is usually far better than an ADMM
    run out of iterations. The report counts the seconds of both solves and says in its message what happened;
    ``report.solver`` says whose block it is.
    """
    (v_interior, first), (v, report) = interior, admm
    if _better(first, report) and bool(torch.isfinite(v_interior).all()):
        return v_interior, dataclasses.replace(
            first, seconds=report.seconds + first.seconds,
            message=(f"relu_method='auto': the interior point ended {first.status.value}; ADMM, tried "
                     f"next, ended {report.status.value} at relative gap {report.relative_gap:.3g}, so "
                     f"the interior point's block is kept; {first.message}"))
    return v, dataclasses.replace(
        report, seconds=report.seconds + first.seconds,
        message=(f"relu_method='auto': the interior point ended {first.status.value} after "
                 f"{first.iterations} iterations (relative gap {first.relative_gap:.3g}), so "
                 f"ADMM solved the block instead; {report.message}"))


def _better(first: SolveReport, second: SolveReport) -> bool:
    """Whether ``first`` certifies at least as well as ``second``: the smaller relative gap, a diverged run never."""
    if first.status is Status.DIVERGED or not math.isfinite(first.relative_gap):
        return False
    if second.status is Status.DIVERGED or not math.isfinite(second.relative_gap):
        return True
    return first.relative_gap <= second.relative_gap


def _quietly(solve, *args, **kwargs):
    """``solve(*args, **kwargs)`` with its :class:`ConvergenceWarning` dropped (``fit_layer`` warns once per block,
    for the block it returns, pointing at the line that called it); any other warning is passed on."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = solve(*args, **kwargs)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _solve_interior(x: Tensor, y: Tensor, operator: ArrangementConv, gates: Tensor, kernel_size: int, beta: float,
                    tol: float, max_iter: int | None, callback, relu: bool = True,
                    max_system: int | None = None, start: Tensor | None = None) -> tuple[Tensor, SolveReport]:
    """Interior-point solve on the explicit patch problem (exact ReLU, or gated by the barrier Newton method);
    ``v`` in the operator's layout. ``start`` (relu only, the operator's layout): a feasible exact-ReLU point
    the interior point starts from (a little inside the cones)."""
    X, D, Y = patch_problem(x, operator.masks, y, kernel_size)
    X, D, Y = torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(Y)
    budget = max_iter or DEFAULT_MAX_ITER["interior_point"]
    if relu:
        if start is not None:
            start = start.detach().double().cpu().reshape(2, gates.shape[0], Y.shape[1], -1)
        U, _, report = solve_relu_program_ipm(X, D, Y, beta, gates=gates.double().reshape(gates.shape[0], -1).cpu(),
                                              tol=tol, max_iter=budget, max_system=max_system, callback=callback,
                                              start=start)
    else:
        U, report = solve_gated_program_ipm(X, D, Y, beta, tol=tol, max_iter=budget, callback=callback)
    # U is (2, P, C_out, d) for relu, (P, C_out, d) gated: the operator's group order
    v = U.reshape(operator.var_shape).to(device=x.device, dtype=x.dtype)
    return v, report


def _sizes(program: BlockProgram) -> tuple[int, int, int]:
    """``n = N H W`` (voxels for volumes), ``P`` and ``d = C_in k^2`` (``C_in k^3``) of an in-memory program."""
    x, gates = program.inputs, program.gates
    n = int(x.shape[0]) * int(torch.tensor(x.shape[2:]).prod())
    return n, gates.shape[0], int(gates[0].numel())


def _power(n: int) -> str:
    """``2^k`` for a power of two, else the number."""
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)
