r"""Reference solutions by cvxpy (Clarabel by default, SCS as fallback).

For small problems only: the matrices are explicit. Two entry points:

* :func:`solve_group_lasso_cvxpy` -- the generic program
  :math:`\min \tfrac12\|A x - y\|^2 + \beta\sum_g\|x_g\|` s.t. :math:`C x \ge 0`
  with ``x`` of shape ``(G, d)`` flattened row-major;
* :func:`solve_arrangement_program` -- the convex reformulation of a two-layer
  ReLU network (Pilanci & Ergen, ICML 2020; Sahiner et al., ICLR 2021) given
  the patch matrix ``X (n, d)``, the arrangement masks ``D (n, P)`` and the
  targets ``Y (n, c)``: one-vs-all output channels sharing the arrangements,

  .. math:: \min \tfrac12 \sum_c \|\sum_i D_i X (v_{ic} - w_{ic}) - y_c\|^2
            + \beta \sum_{i,c} (\|v_{ic}\| + \|w_{ic}\|)
            \ \text{s.t.}\ (2D_i - I) X v_{ic} \ge 0,\ (2D_i - I) X w_{ic} \ge 0

  (``gated``: no ``w`` and no constraints).

Both return the solution and a :class:`~solvers.report.SolveReport` whose
dual value is computed from cvxpy's residual and constraint multipliers with
the same certificate as the torch solvers, so the reference is itself
certified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .certificate import certify
from .report import SolveReport, SolverError, Status, relative

_STATUS = {
    "optimal": Status.OPTIMAL,
    "optimal_inaccurate": Status.INACCURATE,
    "user_limit": Status.MAX_ITER,
}


@dataclass(frozen=True)
class ReferenceSolution:
    """Solution of a reference solve: ``x`` with shape ``(G, d)``, multipliers, report."""

    x: np.ndarray
    multipliers: np.ndarray | None
    report: SolveReport


def solve_group_lasso_cvxpy(
    A, y: np.ndarray, beta: float, var_shape: tuple[int, int], C=None, *,
    solver: str = "CLARABEL", fallback: str | None = "SCS", verbose: bool = False,
    solver_options: dict | None = None,
) -> ReferenceSolution:
    """Solve the (cone-constrained) group lasso with cvxpy.

    Parameters
    ----------
    A, C
        Dense arrays or scipy sparse matrices, ``(m, G*d)`` and ``(q, G*d)``.
    y
        ``(m,)`` targets.
    var_shape
        ``(G, d)``: groups are the rows of ``x``.
    solver, fallback
        cvxpy solver names; the fallback is tried if the first raises or does
        not reach an optimal status.
    solver_options
        Keyword options for the first solver (e.g. ``tol_gap_rel`` for
        Clarabel, ``eps_rel`` for SCS).
    """
    import cvxpy as cp

    if beta <= 0 or not np.isfinite(beta):
        raise ValueError(f"The 'beta' parameter must be a finite float > 0. Got {beta!r} instead.")
    G, d = var_shape
    A = sp.csr_matrix(A)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if A.shape != (y.size, G * d):
        raise ValueError(f"The 'A' parameter must have shape ({y.size}, {G * d}). Got {A.shape} instead.")
    x = cp.Variable(G * d)
    objective = 0.5 * cp.sum_squares(A @ x - y) + beta * cp.sum(cp.norm(cp.reshape(x, (G, d), order="C"), 2, axis=1))
    constraints = []
    if C is not None:
        C = sp.csr_matrix(C)
        if C.shape[1] != G * d:
            raise ValueError(f"The 'C' parameter must have {G * d} columns. Got {C.shape} instead.")
        constraints = [C @ x >= 0]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    start = time.perf_counter()
    used, errors = None, []
    for name in [solver] + ([fallback] if fallback else []):
        try:
            options = (solver_options or {}) if name == solver else {}
            problem.solve(solver=name, verbose=verbose, **options)
        except (cp.error.SolverError, ValueError) as exc:  # solver missing or failed
            errors.append(f"{name}: {exc}")
            continue
        used = name
        if problem.status in ("optimal", "optimal_inaccurate"):
            break
    if used is None or x.value is None:
        raise SolverError(f"cvxpy reference failed ({'; '.join(errors) or problem.status})")
    seconds = time.perf_counter() - start
    xv = np.asarray(x.value, dtype=np.float64)
    lam = None
    residual = y - A @ xv
    direction = A.T @ residual
    violation = 0.0
    if C is not None:
        lam = np.maximum(np.asarray(constraints[0].dual_value, dtype=np.float64).reshape(-1), 0.0)
        direction = direction + C.T @ lam
        cx = C @ xv
        violation = float(np.maximum(-cx, 0).max()) / max(float(np.abs(y).max()), 1e-300) if cx.size else 0.0
    t = torch.from_numpy
    cert = certify(t(xv.reshape(G, d)), t(residual), t(y), t(direction.reshape(G, d)), beta, violation)
    status = _STATUS.get(problem.status, Status.INACCURATE)
    report = SolveReport(
        solver=f"cvxpy:{used}", status=status, primal=cert.primal, dual=cert.dual, gap=cert.gap,
        relative_gap=relative(cert.gap, cert.primal), max_violation=violation,
        iterations=int(problem.solver_stats.num_iters or 0), seconds=seconds,
        message=f"cvxpy status {problem.status}; cvxpy objective {problem.value:.12g}",
    )
    return ReferenceSolution(xv.reshape(G, d), lam, report)


def arrangement_matrices(X: np.ndarray, D: np.ndarray, num_outputs: int, activation: str = "relu"):
    """Explicit ``A`` and ``C`` of the convex two-layer program.

    The variable has ``G = S * P * c`` groups of size ``d`` ordered
    ``(sign s, arrangement i, output c)`` with ``S = 2`` for ``relu``
    (``v`` then ``w``) and ``S = 1`` for ``gated``. The rows of ``A`` are
    ordered ``(output c, sample n)``; ``C`` has one row per (group, sample).

    Returns
    -------
    A, C, var_shape
        ``C`` is None for ``gated``.
    """
    X = np.asarray(X, dtype=np.float64)
    D = np.asarray(D, dtype=bool)
    n, d = X.shape
    if D.ndim != 2 or D.shape[0] != n:
        raise ValueError(f"The 'D' parameter must have shape ({n}, P). Got {D.shape} instead.")
    P = D.shape[1]
    signs = (1.0, -1.0) if activation == "relu" else (1.0,)
    masked = [sp.csr_matrix(D[:, i : i + 1] * X) for i in range(P)]
    rows = []
    for c in range(num_outputs):
        blocks = []
        for s in signs:
            for i in range(P):
                for c2 in range(num_outputs):
                    blocks.append(s * masked[i] if c2 == c else sp.csr_matrix((n, d)))
        rows.append(blocks)
    A = sp.bmat(rows, format="csr")
    var_shape = (len(signs) * P * num_outputs, d)
    if activation != "relu":
        return A, None, var_shape
    cone = [sp.csr_matrix((2.0 * D[:, i : i + 1] - 1.0) * X) for i in range(P)]
    C = sp.block_diag([cone[i] for _ in signs for i in range(P) for _ in range(num_outputs)], format="csr")
    return A, C, var_shape


def solve_arrangement_program(
    X: np.ndarray, D: np.ndarray, Y: np.ndarray, beta: float, activation: str = "relu", **kwargs
) -> ReferenceSolution:
    """Reference solve of the convex two-layer program (see module docstring).

    ``Y`` is ``(n, c)``. The solution's rows follow :func:`arrangement_matrices`.
    """
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] != np.asarray(X).shape[0]:
        raise ValueError(f"The 'Y' parameter must have shape ({np.asarray(X).shape[0]}, c). Got {Y.shape} instead.")
    if activation not in ("relu", "gated"):
        raise ValueError(f"The 'activation' parameter must be 'relu' or 'gated'. Got {activation!r} instead.")
    A, C, var_shape = arrangement_matrices(X, D, Y.shape[1], activation)
    return solve_group_lasso_cvxpy(A, Y.T.reshape(-1), beta, var_shape, C, **kwargs)
