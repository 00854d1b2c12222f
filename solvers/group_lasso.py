r"""Certified solvers for (cone-constrained) group-lasso programs.

:func:`solve_group_lasso` solves

.. math:: \min_v \tfrac12\|A v - y\|_2^2 + \beta \sum_g \|v_g\|_2

by FISTA with backtracking and restarts. :func:`solve_cone_group_lasso` adds
the constraint :math:`C v \ge 0` and solves it by an augmented Lagrangian
(Hestenes-Powell-Rockafellar for inequalities) whose subproblems

.. math:: \min_v \tfrac12\|A v - y\|^2 + \tfrac{1}{2\rho}\left(\|(\lambda - \rho C v)_+\|^2
          - \|\lambda\|^2\right) + \beta \sum_g \|v_g\|

are solved by the same FISTA engine, with ``lambda <- (lambda - rho C v)_+``
between them (as in the ``scnn`` library; Mishkin, Sahiner & Pilanci, ICML 2022).
Both stop on a duality gap (:mod:`solvers.groups`), never on a fixed count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .certificate import Certificate, Monitor, certify, status_of
from .comm import Local, sharded
from .fista import fista, sq_norm
from .groups import group_norms
from .newton import newton_step
from .operators import ConstrainedOperator, LinearOperator, operator_norm_sq
from .report import IterationRecord, SolveReport


def solve_group_lasso(
    operator: LinearOperator,
    y: Tensor,
    beta: float,
    v0: Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 10_000,
    check_every: int = 10,
    lipschitz: float | None = None,
    certify_operator: LinearOperator | None = None,
    callback: Callable[[IterationRecord], None] | None = None,
    comm: Local | None = None,
    newton: bool = True,
    newton_gap: float = 1.0,
) -> tuple[Tensor, SolveReport]:
    """Minimise ``1/2 ||A v - y||^2 + beta sum_g ||v_g||`` with a certified gap.

    FISTA finds the active groups; once the relative gap is below
    ``newton_gap`` and the active groups have not changed for three checks,
    Newton-CG steps on them (:mod:`solvers.newton`) alternate with FISTA
    segments (which add or drop groups) until the gap certifies ``tol``.

    Parameters
    ----------
    operator
        ``A`` (``forward``/``adjoint``); ``v0`` fixes the variable's shape,
        dtype and device.
    tol
        Stop when ``(primal - dual) / |primal| <= tol``.
    lipschitz
        ``||A||^2`` if known; otherwise estimated by power iteration (x1.05)
        and corrected by backtracking.
    certify_operator
        The same operator in higher precision: the final certificate is
        recomputed with it (e.g. float64 for float32 iterates).
    comm
        Reductions over data shards (:mod:`solvers.comm`): ``operator`` and
        ``y`` hold this process's shard; the objective is the sum over shards
        and every process returns the same ``v``. Default: one process.
    newton, newton_gap
        Whether to take Newton-CG steps, and below which relative gap.
        ``report.iterations`` counts FISTA iterations plus CG iterations (each
        one ``forward`` and one ``adjoint``).

    Returns
    -------
    v, report
    """
    comm = comm or Local()
    operator, certify_operator = sharded(operator, comm), sharded(certify_operator, comm)
    monitor = Monitor("fista", tol, 0.0, v0.dtype, callback)
    if lipschitz is None:
        lipschitz = 1.05 * operator_norm_sq(operator.forward, operator.adjoint, v0)
    lipschitz = max(lipschitz, 1e-30)

    def certificate(v: Tensor, z: Tensor, op: LinearOperator = operator, target: Tensor = y) -> Certificate:
        residual = target - z
        return certify(v, residual, target, op.adjoint(residual), beta, comm=comm)

    # Newton is tried once the active groups have been stable for `wait` checks; `wait` doubles after a step
    # that fails to halve the gap (the support is not settled yet) and resets after a good one
    state = {"done": 0, "newton": bool(newton), "ready": False, "support": None, "stable": 0, "wait": 2,
             "gap": math.inf}

    def on_check(k: int, v: Tensor, image: tuple[Tensor, ...]) -> bool:
        cert = certificate(v, image[0])
        monitor.record(state["done"] + k, cert)
        if monitor.converged(cert) or monitor.stalled(cert):
            return True
        if state["newton"] and cert.relative_gap <= newton_gap:
            support = group_norms(v) > 0
            same = state["support"] is not None and torch.equal(support, state["support"])
            state["support"], state["stable"] = support, (state["stable"] + 1 if same else 0)
            if state["stable"] >= state["wait"]:
                state["ready"], state["gap"] = True, cert.relative_gap
                return True
        return False

    def forward(u: Tensor) -> tuple[Tensor]:
        return (operator.forward(u),)

    def adjoint(parts: tuple[Tensor, ...]) -> Tensor:
        return operator.adjoint(parts[0])

    def value(parts: tuple[Tensor, ...]) -> float:
        return comm.sum(0.5 * sq_norm(parts[0] - y))

    def grad(parts: tuple[Tensor, ...]) -> tuple[Tensor]:
        return (parts[0] - y,)

    v, image, lip = v0, forward(v0), lipschitz
    value_scale = comm.sum(0.5 * sq_norm(y))
    used, reason, steps = 0, "max_iter", 0
    while used < max_iter:
        state.update(done=used, ready=False, support=None, stable=0)
        run = fista(forward, adjoint, value, grad, beta, v, image, lip, max_iter=max_iter - used,
                    check_every=check_every, on_check=on_check, value_scale=value_scale)
        used += run.iterations
        v, image, lip, reason = run.v, run.image, run.lipschitz, run.reason
        if not state["ready"]:
            break
        reason = "max_iter"  # FISTA paused for a Newton step, not converged
        if max_iter - used < 3:  # a Newton step costs at least 3 operator calls
            break
        step = newton_step(forward, adjoint, value, grad, lambda at, d: d, beta, v, image,
                           max_cg=min(200, max_iter - used - 2))
        if step is None:  # no decrease along the Newton direction: finish with FISTA alone
            state["newton"] = False
            continue
        used, steps = used + step.operator_calls, steps + 1
        v, image = step.v, step.image
        cert = certificate(v, image[0])
        monitor.record(used, cert)
        if monitor.converged(cert) or monitor.stalled(cert):
            reason = "checked"
            break
        state["wait"] = 2 if cert.relative_gap <= 0.5 * state["gap"] else min(2 * state["wait"], 256)
    cert = certificate(v, operator.forward(v))  # a fresh image: the iterates' images are updated incrementally
    if certify_operator is not None:
        v_hi = v.double()
        y_hi = y.double()
        cert = certificate(v_hi, certify_operator.forward(v_hi), certify_operator, y_hi)
    status = status_of(reason, monitor, cert)
    message = _message(reason, lip) + (f" {steps} Newton-CG steps." if steps else "")
    return v, monitor.report(cert, used, status, message)


def solve_cone_group_lasso(
    operator: ConstrainedOperator,
    y: Tensor,
    beta: float,
    v0: Tensor,
    *,
    tol: float = 1e-6,
    feas_tol: float | None = None,
    max_iter: int = 50_000,
    check_every: int = 10,
    rho: float | None = None,
    certify_operator: ConstrainedOperator | None = None,
    callback: Callable[[IterationRecord], None] | None = None,
    comm: Local | None = None,
) -> tuple[Tensor, Tensor, SolveReport]:
    r"""Minimise ``1/2 ||A v - y||^2 + beta sum_g ||v_g||`` s.t. ``C v >= 0``.

    Parameters
    ----------
    operator
        ``forward(v) = (A v, C v)``, ``adjoint(r, mu) = A^T r + C^T mu``.
    tol
        Relative duality-gap tolerance.
    feas_tol
        Tolerance on ``max((-C v)_+) / max|y|`` (default ``tol``).
    max_iter
        Budget of FISTA iterations over all subproblems.
    rho
        Initial penalty; default ``10 ||A||^2 / ||C||^2``. Doubled whenever
        an outer step fails to divide the violation by 4. Each subproblem
        restarts from a step constant 10x smaller than the last one and
        backtracks.

    Returns
    -------
    v, multipliers, report
        ``multipliers`` are ``lambda >= 0`` (shaped like ``C v``); the dual
        point of the certificate is ``s * (y - A v, lambda)``.
    """
    feas_tol = tol if feas_tol is None else feas_tol
    comm = comm or Local()
    operator, certify_operator = sharded(operator, comm), sharded(certify_operator, comm)
    monitor = Monitor("augmented_lagrangian", tol, feas_tol, v0.dtype, callback)
    y_scale = max(comm.max(float(y.abs().max()) if y.numel() else 0.0), 1e-300)
    zero_r = torch.zeros_like(y)
    z0, c0 = operator.forward(v0)
    zero_mu = torch.zeros_like(c0)
    lip_data = operator_norm_sq(lambda v: operator.forward(v)[0], lambda r: operator.adjoint(r, zero_mu), v0)
    lip_cone = operator_norm_sq(lambda v: operator.forward(v)[1], lambda m: operator.adjoint(zero_r, m), v0)
    lip_data, lip_cone = max(lip_data, 1e-30), max(lip_cone, 1e-30)
    rho = _RHO_FACTOR * lip_data / lip_cone if rho is None else float(rho)
    lam = zero_mu.clone()

    def certificate(v: Tensor, parts: tuple[Tensor, Tensor], lam_: Tensor, op: ConstrainedOperator = operator,
                    target: Tensor = y, step: bool = True) -> tuple[Certificate, Tensor]:
        """Certificate at ``v``; ``step``: take one multiplier step ``(lam - rho C v)_+`` first."""
        z, c = parts
        residual = target - z
        lam_trial = torch.clamp(lam_ - rho * c, min=0.0) if step else lam_
        violation = comm.max(float(torch.clamp(-c, min=0.0).max()) if c.numel() else 0.0) / y_scale
        return certify(v, residual, target, op.adjoint(residual, lam_trial), beta, violation, comm), lam_trial

    state: dict = {}

    def on_check(k: int, v: Tensor, parts: tuple[Tensor, ...]) -> bool:
        cert, _ = certificate(v, parts, lam)
        monitor.record(state["done"] + k, cert)
        return monitor.converged(cert) or monitor.stalled(cert)

    v, parts = v0, (z0, c0)
    done, reason, lip = 0, "max_iter", 1.05 * (lip_data + rho * lip_cone)
    prev_violation = math.inf
    value_scale = comm.sum(0.5 * sq_norm(y))
    outer_best, outer_stalls = math.inf, 0
    stall_floor = 10 * math.sqrt(torch.finfo(v0.dtype).eps)  # only precision-limited runs count as stalled
    inner_tol = _INNER_TOL0 * beta
    # subproblem accuracy never asked beyond what the precision can give, and each
    # subproblem gets a bounded budget (an inexact step still updates the multipliers)
    inner_floor = beta * max(1e-3 * tol, 1e3 * torch.finfo(v0.dtype).eps)
    inner_max_iter = 5_000
    while done < max_iter:
        state["done"] = done
        lam_now, rho_now = lam, rho
        run = fista(
            operator.forward,
            lambda p: operator.adjoint(p[0], p[1]),
            lambda p: comm.sum(0.5 * sq_norm(p[0] - y) + (sq_norm(torch.clamp(lam_now - rho_now * p[1], min=0.0)) - sq_norm(lam_now)) / (2 * rho_now)),
            lambda p: (p[0] - y, -torch.clamp(lam_now - rho_now * p[1], min=0.0)),
            beta, v, parts, lip,
            max_iter=min(max_iter - done, inner_max_iter), check_every=check_every, on_check=on_check, inner_tol=inner_tol,
            value_scale=value_scale,
        )
        v, parts, done, lip = run.v, run.image, done + run.iterations, run.lipschitz
        if run.reason in ("checked", "diverged", "precision"):
            reason = run.reason
            break
        c = parts[1]
        violation = comm.max(float(torch.clamp(-c, min=0.0).max()) if c.numel() else 0.0) / y_scale
        lam = torch.clamp(lam - rho * c, min=0.0)  # the multipliers of the current v: no further step below
        if violation > max(0.25 * prev_violation, feas_tol):  # multipliers not converging fast enough
            lip = lip + rho * lip_cone
            rho *= 2.0
        # let backtracking find the (often much smaller) local curvature again
        lip = max(0.1 * lip, lip_data)
        prev_violation = violation
        # stalled: several subproblems in a row without improving the certificate
        outer_best, outer_stalls = (monitor.best, 0) if monitor.best < 0.99 * outer_best else (outer_best, outer_stalls + 1)
        if outer_stalls >= 4 and outer_best <= stall_floor:
            reason = "stalled"
            break
        inner_tol = max(_INNER_DECAY * inner_tol, inner_floor)
    step = reason in ("checked", "diverged", "precision")  # otherwise the loop ended right after a multiplier update
    cert, lam_out = certificate(v, parts, lam, step=step)
    if certify_operator is not None:
        v_hi = v.double()
        cert, lam_out = certificate(v_hi, certify_operator.forward(v_hi), lam.double(), certify_operator, y.double(),
                                    step=step)
    status = status_of(reason, monitor, cert)
    return v, lam_out, monitor.report(cert, done, status, _message(reason, lip) + f" rho={rho:.3g}")


# augmented-Lagrangian schedule (tuned on the small known-answer block problems of the tests)
_RHO_FACTOR = 10.0  # initial penalty, in units of ||A||^2 / ||C||^2
_INNER_TOL0 = 0.1  # first subproblem tolerance, in units of beta
_INNER_DECAY = 0.3  # subproblem tolerance shrinks by this factor per multiplier update


def _message(reason: str, lipschitz: float) -> str:
    return f"stopped: {reason}; final step constant L={lipschitz:.4g}."
