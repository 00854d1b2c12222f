r"""Restarted primal-dual hybrid gradient for the cone-constrained group lasso.

Solves

.. math:: \min_v \tfrac12\|A v - y\|_2^2 + \beta \sum_g \|v_g\|_2
          \quad\text{s.t.}\quad C v \ge 0

as the saddle point :math:`\min_v \max_{p, q \le 0}\ \langle A v, p\rangle +
\kappa\langle C v, q\rangle - f^*(p) + \beta\sum_g\|v_g\|` with
:math:`f^*(p) = \tfrac12\|p\|^2 + p^\top y`, by Chambolle & Pock's iteration
(J. Math. Imaging Vis. 2011): a group soft-threshold step in ``v``, a closed
form step in ``p`` and a clamp in ``q``. Each iteration costs one ``forward``
and one ``adjoint``, like FISTA, but there is no inner subproblem and no
penalty to tune. The constraint block is scaled by
:math:`\kappa = \|A\|/\|C\|` so both blocks have the same norm. Restarts to the
average iterate and primal-weight updates follow PDLP (Applegate et al.,
NeurIPS 2021), with the duality gap and violation as the restart score.

The multipliers of ``C v >= 0`` are :math:`\lambda = -\kappa q \ge 0`; the
certificate is the same as the augmented Lagrangian's (:mod:`solvers.groups`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .certificate import Certificate, Monitor, certify, status_of
from .comm import Local, sharded
from .fista import sq_norm
from .groups import group_soft_threshold
from .operators import ConstrainedOperator, operator_norm_sq
from .report import IterationRecord, SolveReport

# restart rule (PDLP's defaults): sufficient decay, necessary decay + no progress, artificial
_SUFFICIENT, _NECESSARY, _ARTIFICIAL = 0.2, 0.8, 0.36
_WEIGHT_SMOOTHING = 0.5


def solve_cone_group_lasso_pdhg(
    operator: ConstrainedOperator,
    y: Tensor,
    beta: float,
    v0: Tensor,
    *,
    tol: float = 1e-6,
    feas_tol: float | None = None,
    max_iter: int = 50_000,
    check_every: int = 50,
    primal_weight: float = 1.0,
    certify_operator: ConstrainedOperator | None = None,
    callback: Callable[[IterationRecord], None] | None = None,
    comm: Local | None = None,
) -> tuple[Tensor, Tensor, SolveReport]:
    r"""Minimise ``1/2 ||A v - y||^2 + beta sum_g ||v_g||`` s.t. ``C v >= 0`` with a certified gap.

    Parameters
    ----------
    operator
        ``forward(v) = (A v, C v)``, ``adjoint(r, mu) = A^T r + C^T mu``.
    tol, feas_tol
        Relative duality-gap tolerance and tolerance on
        ``max((-C v)_+) / max|y|`` (default ``tol``).
    max_iter
        Iteration budget (one forward and one adjoint each).
    check_every
        Iterations between certificates (and restart decisions).
    primal_weight
        Initial ratio of dual to primal step; adapted at every restart.
    certify_operator
        The same operator in float64 for the final certificate.
    comm
        Reductions over data shards (:mod:`solvers.comm`).

    Returns
    -------
    v, multipliers, report
        ``multipliers`` are ``lambda >= 0`` shaped like ``C v``.
    """
    feas_tol = tol if feas_tol is None else feas_tol
    comm = comm or Local()
    operator, certify_operator = sharded(operator, comm), sharded(certify_operator, comm)
    monitor = Monitor("pdhg", tol, feas_tol, v0.dtype, callback)
    y_scale = max(comm.max(float(y.abs().max()) if y.numel() else 0.0), 1e-300)
    z, c = operator.forward(v0)
    zero_r, zero_q = torch.zeros_like(y), torch.zeros_like(c)
    lip_data = operator_norm_sq(lambda u: operator.forward(u)[0], lambda r: operator.adjoint(r, zero_q), v0)
    lip_cone = operator_norm_sq(lambda u: operator.forward(u)[1], lambda m: operator.adjoint(zero_r, m), v0)
    lip_data, lip_cone = max(lip_data, 1e-30), max(lip_cone, 1e-30)
    kappa = math.sqrt(lip_data / lip_cone)
    step = 0.99 / math.sqrt(2.1 * lip_data)  # ||[A; kappa C]||^2 = 2 ||A||^2, plus the power iteration's margin
    omega = float(primal_weight)

    def certificate(v: Tensor, parts: tuple[Tensor, Tensor], lam: Tensor, op=operator, target=y) -> Certificate:
        zz, cc = parts
        residual = target - zz
        violation = comm.max(float(torch.clamp(-cc, min=0.0).max()) if cc.numel() else 0.0) / y_scale
        return certify(v, residual, target, op.adjoint(residual, lam), beta, violation, comm)

    def score(cert: Certificate) -> float:
        return max(cert.relative_gap, cert.max_violation * tol / feas_tol)

    v, p, q = v0.clone(), torch.zeros_like(y), zero_q.clone()
    sums = [torch.zeros_like(v), torch.zeros_like(p), torch.zeros_like(q)]
    anchor = (v.clone(), p.clone(), q.clone())  # last restart point, for the primal weight
    count, last_restart_score, best_since = 0, math.inf, math.inf
    best = None  # (score, v, lam, cert)
    reason, k = "max_iter", 0
    for k in range(1, max_iter + 1):
        tau, sigma = step / omega, step * omega
        v_new = group_soft_threshold(v - tau * operator.adjoint(p, kappa * q), tau * beta)
        z_new, c_new = operator.forward(v_new)
        p = (p + sigma * (2 * z_new - z - y)) / (1 + sigma)
        q = torch.clamp(q + (sigma * kappa) * (2 * c_new - c), max=0.0)
        v, z, c = v_new, z_new, c_new
        for total, now in zip(sums, (v, p, q)):
            total += now
        count += 1
        if k % check_every and k != max_iter:
            continue
        cert = certificate(v, (z, c), -kappa * q)
        monitor.record(k, cert)
        v_avg, p_avg, q_avg = (t / count for t in sums)
        parts_avg = operator.forward(v_avg)
        cert_avg = certificate(v_avg, parts_avg, -kappa * q_avg)
        for s_, v_, q_, cert_ in ((score(cert), v, q, cert), (score(cert_avg), v_avg, q_avg, cert_avg)):
            if best is None or s_ < best[0]:
                best = (s_, v_.clone(), (-kappa * q_).clone(), cert_)
        if not (math.isfinite(cert.primal) and math.isfinite(cert.dual)):
            reason = "diverged"
            break
        if monitor.converged(best[3]):
            reason = "converged"
            break
        if monitor.stalled(cert):
            reason = "stalled"
            break
        candidate = min(score(cert), score(cert_avg))
        restart = (candidate <= _SUFFICIENT * last_restart_score
                   or (candidate <= _NECESSARY * last_restart_score and candidate > best_since)
                   or count >= _ARTIFICIAL * k)
        best_since = min(best_since, candidate)
        if not restart:
            continue
        if score(cert_avg) < score(cert):
            v, p, q = v_avg, p_avg, q_avg
            z, c = parts_avg
        omega = _new_primal_weight(omega, v, p, q, anchor, comm)
        anchor = (v.clone(), p.clone(), q.clone())
        last_restart_score, best_since, count = candidate, math.inf, 0
        for total in sums:
            total.zero_()
    _, v, lam, cert = best if best is not None else (None, v, -kappa * q, certificate(v, (z, c), -kappa * q))
    if certify_operator is not None:
        v_hi, lam_hi = v.double(), lam.double()
        cert = certificate(v_hi, certify_operator.forward(v_hi), lam_hi, certify_operator, y.double())
    status = status_of("checked" if reason in ("stalled", "converged") else reason, monitor, cert)
    message = f"stopped: {reason}; primal weight {omega:.3g}, kappa {kappa:.3g}."
    return v, lam, monitor.report(cert, k, status, message)


def _new_primal_weight(omega: float, v: Tensor, p: Tensor, q: Tensor, anchor, comm: Local) -> float:
    """PDLP's update: move ``log omega`` halfway to ``log(||dual move|| / ||primal move||)``."""
    dv = math.sqrt(sq_norm(v - anchor[0]))
    dd = math.sqrt(comm.sum(sq_norm(p - anchor[1]) + sq_norm(q - anchor[2])))
    if dv < 1e-12 or dd < 1e-12 or not (math.isfinite(dv) and math.isfinite(dd)):
        return omega
    return math.exp(_WEIGHT_SMOOTHING * math.log(dd / dv) + (1 - _WEIGHT_SMOOTHING) * math.log(omega))
