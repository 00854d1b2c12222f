r"""ADMM on the cone values for the exact convex ReLU program.

Solves

.. math:: \min_v \tfrac12\|A v - y\|_2^2 + \beta \sum_g \|v_g\|_2
          \quad\text{s.t.}\quad C v \ge 0

for operators with the structure of the convex ReLU program (DESIGN.md §2):

* every group's cone block has the same Gram matrix, :math:`C_g^\top C_g = K`
  (for the conv block :math:`C_g = (2D_i - I)X`, so :math:`K = X^\top X`, a
  ``d x d`` matrix with ``d = C_in k^2``);
* the data operator reads the cone values, :math:`A = M C` with a selection
  :math:`M` of entries in :math:`\{-1, 0, 1\}` that touches each data entry's
  own cone entries only (:math:`D_i X u = D_i (2D_i - I) X u`).

The splitting :math:`z = C v` gives

.. math:: \min_{v, z}\ \beta\sum_g\|v_g\| + \tfrac12\|M z - y\|^2 + \iota_{z \ge 0}(z)
          \quad\text{s.t.}\quad C v = z,

and both ADMM steps are closed-form: the ``v`` step decouples over groups into
:math:`\min \beta\|v_g\| + \tfrac\rho2 v_g^\top K v_g - \rho c_g^\top v_g`,
solved in the eigenbasis of ``K`` by a scalar root (one eigendecomposition per
solve); the ``z`` step decouples over data entries into a non-negative least
squares problem with a rank-one quadratic, solved exactly by a safeguarded
Newton search on one scalar. Each iteration costs one ``forward`` and one
cone ``adjoint``, like PDHG, but the ill-conditioning of ``X`` (smooth images)
is absorbed exactly by the ``v`` step. The multipliers of ``C v \ge 0`` come
from the scaled dual ``u`` of the splitting, :math:`\lambda = -\rho u - M^\top\theta`
clipped at zero, and certify the exact program (:mod:`solvers.groups`); an
external lower bound (for instance the gated relaxation's dual) can only raise
the dual value used. A check whose iterate is not finite, or whose objective has grown past a million times the
zero block's, restarts the splitting from the best certified iterate (at most a few times); the solve always
returns its best certified iterate, and says in its message what it found (the penalty's range, the largest
objective and cone value, the restarts). Alternating direction method of multipliers: Boyd et al.,
Found. Trends Mach. Learn. 2011; the splitting of the cone constraints follows
the idea of CRONOS (Feng, Frangella & Pilanci, NeurIPS 2024), whose least-squares
step is replaced here by the exact Gram eigenbasis.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor

from .certificate import Certificate, Monitor, status_of
from .comm import Local, sharded
from .groups import group_norms, group_penalty, scaled_dual_value
from .operators import ConstrainedOperator
from .report import IterationRecord, SolveReport

_OVER_RELAXATION = 1.6
_ACCELERATE = True  # measured: gap 6.6e-2 after 300 iterations with, 9.4e-2 without (n = 1e4 conv block)
_RESTART = 0.999
_RHO_BALANCE = 10.0  # rescale rho when the primal and dual residuals differ by more than this factor


def solve_relu_program_admm(
    operator: ConstrainedOperator,
    y: Tensor,
    beta: float,
    v0: Tensor,
    *,
    gram: Tensor,
    pick: Callable[[Tensor], Tensor],
    spread: Callable[[Tensor], Tensor],
    tol: float = 1e-6,
    feas_tol: float | None = None,
    max_iter: int = 20_000,
    check_every: int = 10,
    rho: float = 1.0,
    lower_bound: float = -math.inf,
    realised: Callable[[Tensor, Tensor], Tensor] | None = None,
    certify_operator: ConstrainedOperator | None = None,
    callback: Callable[[IterationRecord], None] | None = None,
    comm: Local | None = None,
) -> tuple[Tensor, Tensor, SolveReport]:
    r"""Minimise ``1/2 ||A v - y||^2 + beta sum_g ||v_g||`` s.t. ``C v >= 0`` by ADMM on ``z = C v``.

    .. math:: \min_v \tfrac12\|A v - y\|_2^2 + \beta \sum_g \|v_g\|_2
              \quad\text{s.t.}\quad C v \ge 0, \qquad A = M C,\ C_g^\top C_g = K

    Parameters
    ----------
    operator
        ``forward(v) = (A v, C v)``, ``adjoint(r, mu) = A^T r + C^T mu``; the
        variable's leading axis indexes the groups.
    y
        Targets, shaped like ``A v``.
    beta
        Weight of the group norms (> 0).
    v0
        Starting point (only its shape, dtype and device are used when zero).
    gram
        ``K = C_g^T C_g`` (the same for every group), ``(d, d)`` with ``d`` the
        number of entries of one group; summed over shards by the caller.
    pick, spread
        ``z -> M z`` (cone-shaped to data-shaped) and its adjoint
        ``theta -> M^T theta``; ``M`` has entries in ``{-1, 0, 1}`` and each
        cone entry feeds at most one data entry.
    tol, feas_tol
        Relative duality-gap tolerance and tolerance on
        ``max((-C v)_+) / max|y|`` (default ``tol / 100``: the iterates are
        not feasible, and a violation buys objective; measured on a conv
        block, a violation of 3.8e-4 left the block's objective 3.6e-3 below
        the optimum while the gap read 7.9e-5).
    max_iter
        Iteration budget (one ``forward`` and one cone ``adjoint`` each).
    check_every
        Iterations between certificates and penalty updates.
    rho
        Initial ADMM penalty; balanced against the residuals at every check.
    lower_bound
        A known lower bound on the optimum (e.g. the dual value of a
        relaxation); the reported dual is the larger of it and the certificate's.
    realised
        ``(v, C v) -> predictions`` of the model that ``v`` is turned into
        (for the convex ReLU program: the ReLU network, whose activation
        patterns follow the signs of ``C v``); equal to ``A v`` when
        ``C v >= 0``. When given, the reported primal is that model's
        objective, ``1/2 ||realised - y||^2 + beta sum_g ||v_g||``, and the
        gap bounds its suboptimality ``primal - p*`` whatever the remaining
        violation (the dual is a lower bound on ``p*``). Without it the
        primal is the program's objective at the (slightly infeasible) iterate,
        as PDHG reports it.
    certify_operator
        The same operator in float64 for the final certificate.
    comm
        Reductions over data shards (:mod:`solvers.comm`).

    Returns
    -------
    v, multipliers, report
        ``multipliers`` are ``lambda >= 0`` shaped like ``C v``.
    """
    if not (isinstance(beta, (int, float)) and beta > 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite float > 0; got {beta!r}")
    if not (isinstance(rho, (int, float)) and rho > 0 and math.isfinite(rho)):
        raise ValueError(f"rho must be a finite float > 0; got {rho!r}")
    size = v0[0].numel() if v0.ndim else 0
    if gram.ndim != 2 or tuple(gram.shape) != (size, size):
        raise ValueError(f"gram must have shape ({size}, {size}) (entries of one group of v0); "
                         f"got {tuple(gram.shape)}")
    feas_tol = tol / 100 if feas_tol is None else feas_tol
    comm = comm or Local()
    operator, certify_operator = sharded(operator, comm), sharded(certify_operator, comm)
    monitor = Monitor("admm", tol, feas_tol, v0.dtype, callback)
    y_scale = max(comm.max(float(y.abs().max()) if y.numel() else 0.0), 1e-300)
    basis = _GramBasis(gram, v0.dtype)
    zero_r = torch.zeros_like(y)

    v = v0.clone()
    pred, cone = operator.forward(v)
    z = torch.clamp(cone, min=0.0)
    u = torch.zeros_like(z)  # scaled dual of C v = z
    r = pick(z) - y  # the z step's scalar per data entry, warm-started
    best: _Best | None = None
    trace = _Trace(rho, 0.5 * comm.sum(float(torch.sum(y * y, dtype=torch.float64))))
    reason, k = "max_iter", 0

    def certificate(v_: Tensor, parts: tuple[Tensor, Tensor], u_: Tensor, rho_: float, op=operator,
                    target=y) -> tuple[Certificate, Certificate, Tensor]:
        return _certificate(v_, parts, u_, rho_, target, beta, op, pick, spread, y_scale, lower_bound, comm,
                            realised=realised)

    z_hat, u_hat, momentum, combined = z, u, 1.0, math.inf
    for k in range(1, max_iter + 1):
        c = operator.adjoint(zero_r, z_hat - u_hat)
        v = basis.group_prox(c, beta / rho)
        pred, cone = operator.forward(v)
        relaxed = _OVER_RELAXATION * cone + (1 - _OVER_RELAXATION) * z_hat
        z_old, u_old = z, u
        z, r = _cone_step(relaxed + u_hat, y, rho, pick, spread, r)
        u = u_hat + relaxed - z
        if _ACCELERATE:  # Goldstein et al. (SIAM J. Imaging Sci. 2014): momentum on (z, u), restarted
            now = comm.sum(float(torch.sum((u - u_hat) ** 2) + torch.sum((z - z_hat) ** 2)))
            if now < _RESTART * combined:
                following = 0.5 * (1 + math.sqrt(1 + 4 * momentum * momentum))
                weight = (momentum - 1) / following
                z_hat, u_hat = z + weight * (z - z_old), u + weight * (u - u_old)
                momentum, combined = following, now
            else:
                z_hat, u_hat, momentum, combined = z, u, 1.0, combined / _RESTART
        else:
            z_hat, u_hat = z, u
        if k % check_every and k != max_iter:
            continue
        finite = comm.max(0.0 if all(bool(torch.isfinite(t).all()) for t in (v, z, u)) else 1.0) == 0.0
        cert, judge, lam = certificate(v, (pred, cone), u, rho) if finite else (_NOT_FINITE,) * 2 + (u,)
        monitor.record(k, cert)
        trace.saw(cert, comm.max(float(z.abs().max()) if finite and z.numel() else 0.0))
        runaway = trace.runaway(k, cert, finite)
        if runaway is not None:  # restart from the best iterate seen, or stop and return it
            if best is None or len(trace.restarts) >= _MAX_RESTARTS:
                reason = "diverged" if best is None else f"no progress after {len(trace.restarts)} restarts"
                trace.restarts.append(runaway)
                break
            trace.restarts.append(runaway)
            z, u, rho = best.z.clone(), best.u.clone(), best.rho
            z_hat, u_hat, momentum, combined = z, u, 1.0, math.inf
            trace.rho = rho
            r = pick(z) - y
            continue
        score = max(judge.relative_gap, min(judge.max_violation, cert.max_violation + 1.0) * tol / feas_tol)
        if math.isfinite(score) and (best is None or score < best.score):
            best = _Best(score, v.clone(), lam, judge, z.clone(), u.clone(), rho)
        if best is not None and monitor.converged(best.judge):
            reason = "converged"
            break
        if monitor.stalled(cert):
            reason = "stalled"
            break
        # residual balancing (Boyd et al. §3.4.1), relative to the sizes of the iterates
        primal_res = math.sqrt(comm.sum(float(torch.sum((cone - z) ** 2))))
        dual_res = rho * math.sqrt(comm.sum(float(torch.sum((z - z_old) ** 2))))
        primal_rel = primal_res / max(math.sqrt(comm.sum(float(torch.sum(z * z)))), 1e-300)
        dual_rel = dual_res / max(rho * math.sqrt(comm.sum(float(torch.sum(u * u)))), 1e-300)
        if primal_rel > _RHO_BALANCE * dual_rel or dual_rel > _RHO_BALANCE * primal_rel:
            factor = min(max(math.sqrt(primal_rel / max(dual_rel, 1e-300)), 0.1), 10.0)
            rho *= factor
            u, u_hat = u / factor, u_hat / factor
            combined = math.inf
            trace.penalty(rho)
    if best is None:  # no finite iterate was ever certified: report the last one (diverged if it is not finite)
        _, judge, lam = certificate(v, (pred, cone), u, rho)
        best = _Best(0.0, v, lam, judge, z, u, rho)
    v, lam = best.v, best.lam
    final_op, v_final, y_final = ((certify_operator, v.double(), y.double()) if certify_operator is not None
                                  else (operator, v, y))
    cert, judge, _ = _certificate(v_final, final_op.forward(v_final), None, rho, y_final, beta, final_op, pick,
                                  spread, y_scale, lower_bound, comm, lam=lam.to(v_final.dtype), realised=realised)
    stop = "checked" if reason in ("stalled", "converged") or reason.startswith("no progress") else reason
    status = status_of(stop, monitor, judge)
    return v, lam, monitor.report(cert, k, status, f"stopped: {reason}; {trace.describe()}")


_NOT_FINITE = Certificate(math.nan, math.nan, math.inf)
_MAX_RESTARTS = 5
_GROWTH = 1e6  # an iterate whose objective exceeds this multiple of the zero block's has run away


@dataclasses.dataclass
class _Best:
    """The best certified iterate so far (by gap and violation), with the splitting state to restart from."""

    score: float
    v: Tensor
    lam: Tensor
    judge: Certificate
    z: Tensor
    u: Tensor
    rho: float


class _Trace:
    """What a solve found along the way: the penalty's range, the largest objective and cone step, the restarts.

    A check whose iterate is not finite, or whose objective exceeds ``_GROWTH`` times that of the zero block
    (``1/2 ||y||^2``), has run away (:meth:`runaway`); the solve then restarts from its best iterate.
    """

    def __init__(self, rho: float, zero_objective: float) -> None:
        self.rho_low = self.rho_high = self.rho = rho
        self.updates = 0
        self.zero_objective = zero_objective
        self.largest_primal = 0.0
        self.largest_step = 0.0
        self.restarts: list[str] = []

    def penalty(self, rho: float) -> None:
        self.rho, self.updates = rho, self.updates + 1
        self.rho_low, self.rho_high = min(self.rho_low, rho), max(self.rho_high, rho)

    def saw(self, cert: Certificate, step: float) -> None:
        if math.isfinite(cert.primal):
            self.largest_primal = max(self.largest_primal, cert.primal)
        self.largest_step = max(self.largest_step, step)

    def runaway(self, k: int, cert: Certificate, finite: bool) -> str | None:
        """A description of what ran away at check ``k`` (None when nothing did)."""
        if not finite:
            return f"non-finite iterate at iteration {k} (penalty rho {self.rho:.3g})"
        if cert.primal > _GROWTH * max(self.zero_objective, 1e-300):
            return (f"objective {cert.primal:.4g} at iteration {k}, over {_GROWTH:g} x the zero block's "
                    f"{self.zero_objective:.4g} (penalty rho {self.rho:.3g})")
        return None

    def describe(self) -> str:
        restarts = "; ".join(self.restarts) if self.restarts else "none"
        return (f"penalty rho {self.rho:.3g} ({self.updates} updates, range {self.rho_low:.3g} to "
                f"{self.rho_high:.3g}); largest objective {self.largest_primal:.4g} (zero block "
                f"{self.zero_objective:.4g}); largest cone value |z| {self.largest_step:.3g}; restarts from the "
                f"best iterate: {restarts}.")


def _certificate(v: Tensor, parts: tuple[Tensor, Tensor], u: Tensor | None, rho: float, y: Tensor, beta: float,
                 operator, pick, spread, y_scale: float, lower_bound: float, comm: Local,
                 lam: Tensor | None = None, realised=None) -> tuple[Certificate, Certificate, Tensor]:
    """Primal value at ``v`` and the dual value of ``(theta, lambda)`` with ``theta = y - A v``.

    ``lambda = (-rho u - M^T theta)_+`` (the splitting's multiplier of ``z >= 0``,
    which equals that of ``C v >= 0`` at a fixed point) unless ``lam`` is given.
    With ``realised``, the primal is the realised model's objective. The second
    certificate, used to decide convergence, has the gap ``max |value - dual|``
    over that and the program's objective at ``v``, plus once more the amount
    by which either lies below the dual bound; a value below the dual bound
    (an infeasible iterate that beats every feasible point) also counts as
    an infinite violation, so that it is never reported ``optimal``.
    """
    pred, cone = parts
    theta = y - pred
    if lam is None:
        lam = torch.clamp(-rho * u - spread(theta), min=0.0)
    direction = operator.adjoint(theta, lam)
    theta_sq = comm.sum(float(torch.sum(theta * theta, dtype=torch.float64)))
    theta_dot_y = comm.sum(float(torch.sum(theta * y, dtype=torch.float64)))
    max_norm = float(group_norms(direction.double()).max()) if direction.numel() else 0.0
    fit_sq = theta_sq
    if realised is not None:
        miss = y - realised(v, cone)
        fit_sq = comm.sum(float(torch.sum(miss * miss, dtype=torch.float64)))
    penalty = beta * float(group_penalty(v))
    primal = 0.5 * fit_sq + penalty
    dual, _ = scaled_dual_value(theta_dot_y, theta_sq, max_norm, beta)  # -inf for a non-finite multiplier
    dual = max(dual, lower_bound)
    violation = comm.max(float(torch.clamp(-cone, min=0.0).max()) if cone.numel() else 0.0) / y_scale
    # judged on both the realised model's and the program's value at v: each must lie within the gap of the
    # dual bound; a value below the dual bound (bought by the remaining violation) counts twice
    values = (primal, 0.5 * theta_sq + penalty)
    deficit = max(dual - min(values), 0.0)
    judge = Certificate(dual + max(max(values) - dual, deficit) + deficit, dual, violation)
    if deficit > 1e-12 * abs(dual):  # below a lower bound on the optimum: the violation still pays; not certified
        judge = Certificate(judge.primal, dual, max(violation, math.inf))
    return Certificate(primal, dual, violation), judge, lam


class _GramBasis:
    r"""Eigenbasis of the shared Gram matrix ``K`` and the group step it solves.

    For each group, :math:`\min_x \tau\|x\| + \tfrac12 x^\top K x - c^\top x`
    is zero when :math:`\|c\| \le \tau` (``c`` lies in the range of ``K``) and
    otherwise, with :math:`t = \|x\| > 0`, :math:`(K + \tfrac{\tau}{t} I) x = c`, i.e.
    :math:`\hat x = t\hat c / (t\Lambda + \tau)` in the eigenbasis, where ``t`` is the root of
    :math:`h(t) = \|\hat c / (t\Lambda + \tau)\|^{-1} - 1`. ``h(t) + 1`` is ``t`` times
    ``1/||p(tau/t)||`` with :math:`p(\kappa) = \hat c/(\Lambda + \kappa)`, the perspective of a concave
    function (the trust-region secular equation, Moré & Sorensen 1983), so ``h`` is concave and
    increasing, with :math:`h(0) = \tau/\|c\| - 1 < 0`: Newton's method started at ``t = 0``
    increases monotonically to the root. Unlike the root in :math:`\kappa = \tau / t`, this stays
    well-conditioned when :math:`\|c\|` is within rounding of ``tau`` (``t`` near 0): there the
    ``kappa`` form divides 0 by 0 (measured: in float32, :math:`\|c\| = \tau (1 + 10^{-7})` gave
    a NaN step on an ordinary conv block after 4,169 ADMM iterations). The root is found in
    float64 whatever the working precision (``groups x d`` numbers, small next to the operator).
    """

    _NEWTON_STEPS = 60

    def __init__(self, gram: Tensor, dtype: torch.dtype) -> None:
        gram = gram.double()
        values, vectors = torch.linalg.eigh(0.5 * (gram + gram.T))
        top = float(values.max()) if values.numel() else 0.0
        if not math.isfinite(top) or top <= 0:
            raise ValueError(f"gram must be a non-zero positive semidefinite matrix; its largest eigenvalue is {top}")
        self.values = torch.clamp(values, min=1e-12 * top)  # float64: the secular root
        self.vectors = vectors.to(dtype)

    def group_prox(self, c: Tensor, tau: float) -> Tensor:
        flat = c.reshape(c.shape[0], -1)
        hat = (flat @ self.vectors).double()
        norms = torch.linalg.vector_norm(hat, dim=1)
        active = norms > tau
        x_hat = torch.zeros_like(hat)
        if bool(active.any()):
            h2, lam = hat[active] ** 2, self.values.to(hat.device)
            t = torch.zeros(h2.shape[0], 1, dtype=hat.dtype, device=hat.device)
            for _ in range(self._NEWTON_STEPS):
                den = t * lam + tau
                phi = (h2 / (den * den)).sum(dim=1, keepdim=True)  # ||c_hat / (t Lambda + tau)||^2, decreasing
                root = phi.rsqrt()
                slope = root / phi * (h2 * lam / (den * den * den)).sum(dim=1, keepdim=True)  # h'(t) > 0
                new = t - (root - 1.0) / slope
                new = torch.where(torch.isfinite(new) & (new > t), new, t)  # monotone from the left; guards rounding
                done = bool(((new - t) <= 1e-14 * new).all())
                t = new
                if done:
                    break
            x_hat[active] = t * hat[active] / (t * lam + tau)
        x_hat[~torch.isfinite(norms)] = math.nan  # a non-finite c gives a non-finite step, never a zero group
        return (x_hat.to(flat.dtype) @ self.vectors.T).reshape(c.shape)


def _cone_step(q: Tensor, y: Tensor, rho: float, pick, spread, r0: Tensor, max_steps: int = 60) -> tuple[Tensor, Tensor]:
    r"""``argmin_{z >= 0} 1/2 ||M z - y||^2 + rho/2 ||z - q||^2``, entry by entry of ``y``.

    With ``r = M z - y`` the minimiser is ``z = (q - M^T r / rho)_+``, and ``r``
    is the root of the increasing piecewise-linear
    :math:`\phi(r) = r + y - M(q - M^\top r/\rho)_+` (slope at least 1),
    bracketed by ``0`` and ``M q_+ - y``; safeguarded Newton steps find it
    exactly once the active set settles.
    """
    ends = pick(torch.clamp(q, min=0.0)) - y
    lo, hi = torch.minimum(ends, torch.zeros_like(ends)), torch.maximum(ends, torch.zeros_like(ends))
    r = torch.where((r0 >= lo) & (r0 <= hi), r0, 0.5 * (lo + hi))
    settle = 16 * torch.finfo(q.dtype).eps * (float(y.abs().max()) + float(ends.abs().max()) + 1e-300)
    previous, settled = None, False
    for step_count in range(max_steps):
        inner = q - spread(r) / rho
        positive = inner > 0
        if settled and torch.equal(positive, previous):
            break  # the last Newton step solved the linear piece that contains the root: r is exact
        phi = r + y - pick(torch.where(positive, inner, torch.zeros_like(inner)))
        if float(phi.abs().max()) <= settle:
            break
        slope = 1.0 + pick(spread(torch.ones_like(r)) * positive) / rho
        lo = torch.where(phi < 0, r, lo)
        hi = torch.where(phi > 0, r, hi)
        step = r - phi / slope
        # Newton may cycle between linear pieces: after a few steps, bisect every other step
        inside = (step >= lo) & (step <= hi) & (step_count < 6 or step_count % 2 == 0)
        settled = bool(inside.all())
        r = torch.where(inside, step, 0.5 * (lo + hi))
        previous = positive
    z = torch.clamp(q - spread(r) / rho, min=0.0)
    return z, r
