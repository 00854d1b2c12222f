r"""Interior-point solvers for the arrangement programs, with explicit data.

For one output (columns of ``Y`` are independent problems sharing ``X`` and ``D``) the exact-ReLU program is

.. math:: \min_{u}\ \tfrac12\Big\|\sum_{g} e_g D_{i(g)} X u_g - y\Big\|^2 + \beta\sum_g \|u_g\|_2
          \quad\text{s.t.}\quad (2D_{i(g)} - I) X u_g \ge 0,

with ``2P`` groups ``g = (s, i)``, ``e_g = +1`` for ``v`` (``s = 0``) and ``-1``
for ``w`` (``s = 1``); the gated program has the ``P`` groups ``v`` only and no
constraints. These are the programs of :mod:`solvers.pdhg` and
:mod:`solvers.group_lasso` written with the patch matrix ``X (n, d)`` and the
masks ``D (n, P)`` explicit, for problems where one side of the Newton system is
small.

* :func:`solve_relu_program_ipm`: Mehrotra predictor-corrector on the cone rows
  (:mod:`solvers.interior_relu`). The prediction sees ``v_i - w_i`` only, so ``v``
  and ``w`` are eliminated per gate down to ``P d`` unknowns, solved directly when
  ``P d <= n`` (``B^T B`` formed once), otherwise by the Woodbury identity on an
  ``n x n`` matrix: ``min(n, P d)`` unknowns (:func:`newton_system_size`). The
  iterates stay strictly feasible (``C u > 0``), so the answer has no violation.
* :func:`solve_gated_program_ipm`: a barrier (path-following) Newton method on
  the ``P d`` system.

Both smooth the group norms by the second-order-cone barrier with ``t``
eliminated (:mod:`solvers.barrier`) and are certified by the package's duality
gap (:func:`solvers.certificate.certify`; for relu the cone-aware gap with the
interior-point multipliers). Their size limits are the constants below, read by
:func:`fits_interior_point`, :func:`fits_gated_interior_point` and the solvers'
own checks. Primal-dual methods: Nocedal & Wright, *Numerical Optimization*,
ch. 16 and 19.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .barrier import certify_outputs, cholesky, data_gram, soc_barrier, soc_t
from .certificate import Certificate, Monitor, certify
from .interior_relu import ReluInteriorPoint
from .report import IterationRecord, SolveReport, Status

__all__ = ["MAX_ARRAY_NUMBERS", "MAX_CONE_ROWS", "MAX_NEWTON_UNKNOWNS", "NEWTON_MATRIX_COPIES", "STRETCH_NEWTON_UNKNOWNS",
           "data_gram", "fits_gated_interior_point", "fits_interior_point", "newton_memory_bytes", "newton_system_size",
           "solve_gated_program_ipm", "solve_relu_program_ipm"]

MAX_NEWTON_UNKNOWNS = 12_000
"""Largest dense Newton system either method factors on any machine (unknowns): ``min(n, P d)`` for relu,
``P d`` gated."""
STRETCH_NEWTON_UNKNOWNS = 16_384
"""Largest relu Newton system tried where the solve fits in memory (:func:`newton_memory_bytes`; the caller
checks, passing ``max_system``). Measured on 2 cores, one thread (docs/benchmarks.md, 'Exact-ReLU blocks at
training scale'): one factorisation in float64 / float32 takes 13 / 7 s at 12,000 unknowns and 31 / 15 s at
16,000 (it grows as ``m^3``); on a block of 12,800 unknowns the solve certified 1e-3 in 30 iterations, 669 s of
CPU, where ADMM ran out of 20,000 iterations uncertified. At 16,384 a solve is about twice that."""
NEWTON_MATRIX_COPIES = 5
"""``m x m`` float64 squares counted for a relu solve's peak memory: ``B^T B`` (or the Woodbury ``K``), the
Newton matrix and its Cholesky factor, and as much again for the rest (patches, per-row arrays, temporaries).
Measured peak RSS 5.83 GiB at ``m = 12,800``, where five squares are 6.1 GiB."""
MAX_ARRAY_NUMBERS = 2**27
"""Largest explicit array (float64 numbers, 1 GiB): the relu Woodbury factor ``n x P d``; the gated method's
patch matrix ``n x d`` and masks ``n x P``."""
MAX_CONE_ROWS = 2**25
"""Largest ``n x 2P`` of the relu method's per-row arrays (slacks, multipliers, their steps: 256 MiB each,
about 15 alive)."""

_ZERO_GROUP = 1e-6  # groups below this fraction of the largest norm are tried at exactly zero
_GATED_CENTERED = 3.0  # gated barrier method: mu is cut (by _GATED_MU_FACTOR) once the Newton decrement is below
# this (1 -> 3: 15 -> 12 steps on the k = 3, P = 8 bench row; one step per mu instead of two)
_GATED_START_MU = 0.025  # first mu times |y|^2 / P (0.25 -> 0.025: 12 -> 10 steps on the k = 3, P = 8 bench row)
_GATED_MU_FACTOR = 0.05  # with the line search: 54 -> 16 Newton steps on the k = 5, P = 32 bench row


def newton_system_size(n: int, num_gates: int, d: int) -> int:
    """Unknowns of the interior-point Newton system for ``P = num_gates``: ``min(n, P d)``."""
    return min(n, num_gates * d)


def newton_memory_bytes(n: int, num_gates: int, d: int) -> int:
    """Estimated peak bytes of :func:`solve_relu_program_ipm` (``system="auto"``): :data:`NEWTON_MATRIX_COPIES`
    float64 squares of :func:`newton_system_size`, plus the Woodbury factor ``n x P d`` where that system is used."""
    m = newton_system_size(n, num_gates, d)
    factor = 0 if num_gates * d <= n else n * num_gates * d
    return 8 * (NEWTON_MATRIX_COPIES * m * m + factor)


def fits_interior_point(n: int, num_gates: int, d: int, max_system: int | None = None) -> bool:
    """Whether :func:`solve_relu_program_ipm` handles ``n`` rows, ``P = num_gates`` gates and ``d`` features
    (with ``system="auto"``).

    Its dense Newton system has at most ``max_system`` rows (default :data:`MAX_NEWTON_UNKNOWNS`); with the
    Woodbury system (``n < P d``) its factor of ``n x P x d`` values holds at most :data:`MAX_ARRAY_NUMBERS`
    numbers; and each of its per-row arrays (``n x 2P``) at most :data:`MAX_CONE_ROWS`.
    """
    return _relu_fits(n, num_gates, d, num_gates * d <= n, max_system)


def fits_gated_interior_point(n: int, num_gates: int, d: int, max_system: int | None = None) -> bool:
    """Whether :func:`solve_gated_program_ipm` handles ``n`` rows, ``P = num_gates`` and ``d`` features: a Newton
    system of ``P d <= max_system`` unknowns (default :data:`MAX_NEWTON_UNKNOWNS`), and at most
    :data:`MAX_ARRAY_NUMBERS` numbers in the patch matrix (``n d``) and in the masks (``n P``)."""
    max_system = MAX_NEWTON_UNKNOWNS if max_system is None else max_system
    return num_gates * d <= max_system and n * d <= MAX_ARRAY_NUMBERS and n * num_gates <= MAX_ARRAY_NUMBERS


def _relu_fits(n: int, P: int, d: int, direct: bool, max_system: int | None = None) -> bool:
    """The relu limits for the direct (``(P d)^2``, ``B_p^T B_p`` accumulated over row chunks) or the Woodbury
    (``n x n``) Newton system."""
    max_system = MAX_NEWTON_UNKNOWNS if max_system is None else max_system
    if n * 2 * P > MAX_CONE_ROWS:
        return False
    return P * d <= max_system if direct else (n <= max_system and n * P * d <= MAX_ARRAY_NUMBERS)


def solve_relu_program_ipm(
    X: Tensor,
    D: Tensor,
    Y: Tensor,
    beta: float,
    *,
    gates: Tensor | None = None,
    tol: float = 1e-6,
    max_iter: int = 200,
    system: str = "auto",
    max_system: int | None = None,
    callback: Callable[[IterationRecord], None] | None = None,
    start: Tensor | None = None,
) -> tuple[Tensor, Tensor, SolveReport]:
    r"""Solve the exact-ReLU arrangement program by a primal-dual interior-point method.

    Parameters
    ----------
    X
        ``(n, d)`` patch matrix (float64 is used whatever the input).
    D
        ``(n, P)`` arrangement masks (bool or 0/1).
    Y
        ``(n, c)`` targets; the ``c`` outputs are solved one after the other.
    beta
        Weight on the group norms.
    gates
        ``(P, d)`` gate vectors with ``D = 1[X g >= 0]``: the starting point
        (strictly inside every cone when ``X g`` has no zeros on nonzero rows).
        Without them a least-squares fit of the signs is tried.
    tol
        Relative duality-gap tolerance of every output's certificate; the
        report's gap is that of the whole program (sums over outputs).
    max_iter
        Interior-point iterations per output.
    system
        How the Newton system is solved: ``"direct"`` (Cholesky of the
        ``P d`` square matrix), ``"woodbury"`` (an ``n x n`` Cholesky) or
        ``"auto"`` (the smaller of the two).
    max_system
        Largest Newton system accepted (default :data:`MAX_NEWTON_UNKNOWNS`); up to
        :data:`STRETCH_NEWTON_UNKNOWNS` where the caller has checked :func:`newton_memory_bytes`
        against the memory available.
    start
        ``(2, P, c, d)`` feasible point (``v`` then ``w``, e.g. split from the gated optimum) to start from
        instead of the gate directions: it is moved a little inside the cones
        (:meth:`solvers.interior_relu.ReluInteriorPoint.solve`).

    Returns
    -------
    U, multipliers, report
        ``U`` of shape ``(2, P, c, d)`` (``v`` then ``w``); ``multipliers``
        ``(n, 2, P, c)`` are ``Lambda >= 0`` of the cone rows; the report
        certifies ``U`` with them. Every iterate is strictly inside the cones,
        so the violation is zero up to rounding.

    Raises
    ------
    ValueError
        For inconsistent shapes, non-finite data, ``beta <= 0``, or a system
        too large for this method (see :func:`fits_interior_point`), or when a
        cone has no interior point reachable from its gate (a gate with
        ``X g = 0`` on a nonzero row).
    """
    X, D, Y = _check(X, D, Y, beta)
    if system not in ("auto", "direct", "woodbury"):
        raise ValueError(f"The 'system' parameter must be one of ('auto', 'direct', 'woodbury'). Got {system!r} instead.")
    n, d = X.shape
    P, c = D.shape[1], Y.shape[1]
    direct = system == "direct" or (system == "auto" and P * d <= n)
    if not _relu_fits(n, P, d, direct, max_system):
        limit = MAX_NEWTON_UNKNOWNS if max_system is None else max_system
        raise ValueError(f"the interior-point method needs a Newton system of at most {limit} unknowns "
                         f"({'P d' if direct else 'n'} = {P * d if direct else n} with system={system!r}), "
                         f"n * P * d <= {MAX_ARRAY_NUMBERS} for the Woodbury system and n * 2 P <= {MAX_CONE_ROWS}. "
                         f"Got n={n}, P={P}, d={d} instead.")
    if start is not None:
        if tuple(start.shape) != (2, P, c, d) or not bool(torch.isfinite(start).all()):
            raise ValueError(f"The 'start' parameter must be a finite tensor of shape (2, P, c, d) = "
                             f"{(2, P, c, d)}. Got shape {tuple(start.shape)} instead.")
        start = start.to(X)
    monitor = Monitor("interior_point", tol, tol, torch.float64, callback)
    U = torch.zeros(2, P, c, d, dtype=torch.float64, device=X.device)
    lam = torch.zeros(n, 2, P, c, dtype=torch.float64, device=X.device)
    total_iterations, statuses, exhausted = 0, [], False
    problem = ReluInteriorPoint(X, D, gates, system)
    for out in range(c):
        if not bool(Y[:, out].any()):  # a zero target: the zero block is optimal (objective 0, dual point 0)
            statuses.append(True)
            continue
        u, lam_out, iterations, ok = problem.solve(Y[:, out], beta, tol, max_iter, monitor, total_iterations,
                                                   None if start is None else start[:, :, out].reshape(2 * P, d))
        U[:, :, out] = u.view(2, P, d)
        lam[:, :, :, out] = lam_out.view(n, 2, P)
        total_iterations += iterations
        statuses.append(ok)
        exhausted = exhausted or (iterations >= max_iter and not ok)
    U, cert, status = _clean_and_judge(U, lambda V: problem.certificate_all(V, lam, Y, beta), tol, statuses,
                                       exhausted, monitor)
    report = monitor.report(cert, total_iterations, status, f"interior point, {c} output(s), "
                            f"Newton system {'direct' if problem.direct else 'Woodbury'} of size "
                            f"{newton_system_size(n, P, d)}")
    return U, lam, report



def solve_gated_program_ipm(
    X: Tensor,
    D: Tensor,
    Y: Tensor,
    beta: float,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    callback: Callable[[IterationRecord], None] | None = None,
) -> tuple[Tensor, SolveReport]:
    r"""Solve the gated arrangement program by a barrier (path-following) Newton method, with explicit data.

    For each output ``y`` (a column of ``Y``)

    .. math:: \min_u \tfrac12\Big\|\sum_i D_i X u_i - y\Big\|^2 + \beta\sum_i \|u_i\|_2,

    with the group norms smoothed by the same second-order-cone barrier as
    :func:`solve_relu_program_ipm` (``t`` eliminated). Each iteration is one
    Newton step on the ``P d`` system ``B^T B + blockdiag(\nabla^2 h_\mu)``
    (``B^T B`` formed once, float64) with a backtracking line search on
    ``f_\mu`` from the full step, never shorter than the self-concordant damped
    step ``1 / (1 + \lambda)`` (``\lambda`` the Newton decrement of
    ``f_\mu / \mu``); ``\mu`` is cut twentyfold after every step with ``\lambda <= 3``;
    every iterate is certified by the package's duality gap on the data.
    For small blocks (``P d`` up to :data:`MAX_NEWTON_UNKNOWNS`) this reaches tight certificates
    in a few dozen factorisations where first-order methods need hundreds of
    operator passes.

    Parameters
    ----------
    X, D, Y, beta
        ``(n, d)`` patches, ``(n, P)`` masks (bool or 0/1), ``(n, c)`` targets,
        weight of the group norms > 0, as for :func:`solve_relu_program_ipm`.
    tol
        Relative duality-gap tolerance of every output.
    max_iter
        Newton steps per output.

    Returns
    -------
    U, report
        ``U (P, c, d)`` and the certificate of the whole program.

    Raises
    ------
    ValueError
        For inconsistent shapes, non-finite data, ``beta <= 0``, or
        ``P d > MAX_NEWTON_UNKNOWNS``.
    """
    X, D, Y = _check(X, D, Y, beta)
    n, d = X.shape
    P, c = D.shape[1], Y.shape[1]
    if P * d > MAX_NEWTON_UNKNOWNS:
        raise ValueError(f"the gated interior-point method solves a Newton system of P d unknowns, at most "
                         f"{MAX_NEWTON_UNKNOWNS}. Got P={P}, d={d} (P d = {P * d}) instead.")
    monitor = Monitor("interior_point", tol, tol, torch.float64, callback)
    Dm = D.to(X.dtype)
    BtB = data_gram(X, Dm)
    U = torch.zeros(P, c, d, dtype=X.dtype, device=X.device)
    total, statuses, exhausted = 0, [], False

    def predict(u: Tensor) -> Tensor:  # (n,)
        return torch.sum(Dm * (X @ u.T), dim=1)

    def adjoint(r: Tensor) -> Tensor:  # (P, d): B^T r
        return (X.T @ (Dm * r[:, None])).T

    for out in range(c):
        y = Y[:, out]
        if not bool(y.any()):  # a zero target: the zero block is optimal (mu would be 0: a singular system)
            statuses.append(True)
            continue
        Bty = adjoint(y).reshape(-1)
        u = torch.zeros(P, d, dtype=X.dtype, device=X.device)
        mu = max(_GATED_START_MU * float(y @ y) / P, 1e-300)  # barrier gap ~ 2 P mu: half the objective at u = 0
        best, iterations, r_now = None, 0, y.clone()
        for it in range(1, max_iter + 1):
            iterations = it
            grad_h, M = soc_barrier(u, beta, mu)
            grad = BtB @ u.reshape(-1) - Bty + grad_h.reshape(-1)
            H = BtB.clone()
            torch.diagonal(H.view(P, d, P, d), dim1=0, dim2=2).add_(M.permute(1, 2, 0))
            try:
                L = cholesky(H)
            except ValueError:  # numerically singular: as accurate as this precision allows
                break
            du = -torch.cholesky_solve(grad[:, None], L)[:, 0]
            slope = float(grad @ du)
            decrement = math.sqrt(max(-slope, 0.0) / mu)
            # backtracking (Armijo) from the full step, floored at the self-concordant damped step
            step, damped = 1.0, 1.0 / (1.0 + decrement)
            value = _gated_barrier_value(r_now, u, beta, mu)
            pd = predict(du.view(P, d))  # the residual is linear in the step: one product per iteration
            while step > damped:
                trial = u + step * du.view(P, d)
                if _gated_barrier_value(r_now - step * pd, trial, beta, mu) <= value + 0.25 * step * slope:
                    break
                step *= 0.5
            step = max(step, damped)
            u = u + step * du.view(P, d)
            if decrement <= _GATED_CENTERED:
                mu *= _GATED_MU_FACTOR
            theta = r_now = r_now - step * pd  # (the whole-program certificate recomputes it from U)
            cert = certify(u, theta, y, adjoint(theta), beta)
            monitor.record(total + it, cert)
            if best is None or cert.relative_gap < best[0].relative_gap:
                best = (cert, u.clone())
            if cert.relative_gap <= tol or not math.isfinite(cert.primal):
                break
        if best is None:
            raise ValueError("gated interior point: the first Newton system is numerically singular (data too "
                             "ill-conditioned); use the first-order solver")
        cert, u = best
        U[:, out] = u
        total += iterations
        statuses.append(cert.relative_gap <= tol)
        exhausted = exhausted or (iterations >= max_iter and cert.relative_gap > tol)

    def certificate_all(U: Tensor) -> Certificate:
        theta = Y - torch.einsum("np,npc->nc", Dm, torch.einsum("nd,pcd->npc", X, U))
        return certify_outputs(U, theta, Y, torch.einsum("nd,np,nc->pcd", X, Dm, theta), beta)

    U, cert, status = _clean_and_judge(U, certificate_all, tol, statuses, exhausted, monitor)
    report = monitor.report(cert, total, status, f"gated interior point (barrier Newton), {c} output(s), "
                            f"Newton system of size {P * d}")
    return U, report


def _clean_and_judge(U: Tensor, certificate_of: Callable[[Tensor], Certificate], tol: float, statuses: list[bool],
                     exhausted: bool, monitor: Monitor) -> tuple[Tensor, Certificate, Status]:
    """Whole-program certificate and status of an interior-point answer. Interior iterates never reach zero:
    groups that are zero at the optimum end up tiny but nonzero, so they are tried at exactly zero (0 lies in
    every cone) and that point is kept when its own certificate is no worse than ``tol``."""
    cert = certificate_of(U)
    d = U.shape[-1]
    norms = U.reshape(-1, d).norm(dim=1)
    tiny = norms <= _ZERO_GROUP * float(norms.max())
    if bool(tiny.any()):
        U_clean = (U.reshape(-1, d) * (~tiny)[:, None]).reshape(U.shape)
        cert_clean = certificate_of(U_clean)
        if cert_clean.relative_gap <= max(tol, cert.relative_gap):
            U, cert = U_clean, cert_clean
    if bool((norms > 0).any()):  # all groups zero (beta >= beta_max) leaves all of them equally tiny
        cert_zero = certificate_of(torch.zeros_like(U))
        if cert_zero.relative_gap <= max(tol, cert.relative_gap):
            U, cert = torch.zeros_like(U), cert_zero
    if not bool((U != 0).any()) and monitor.converged(cert):  # zero is certified by its own exact dual point
        return U, cert, Status.OPTIMAL
    if all(statuses) and monitor.converged(cert):
        return U, cert, Status.OPTIMAL
    return U, cert, Status.MAX_ITER if exhausted else Status.INACCURATE


def _check(X, D, Y, beta):
    X = torch.as_tensor(X).to(torch.float64)
    D = torch.as_tensor(D)
    Y = torch.as_tensor(Y).to(torch.float64, copy=False)
    if Y.ndim == 1:
        Y = Y[:, None]
    if X.ndim != 2 or D.ndim != 2 or Y.ndim != 2 or not (X.shape[0] == D.shape[0] == Y.shape[0]):
        raise ValueError(f"X (n, d), D (n, P) and Y (n, c) must share n. Got {tuple(X.shape)}, {tuple(D.shape)}, "
                         f"{tuple(Y.shape)} instead.")
    if X.shape[0] == 0 or X.shape[1] == 0 or D.shape[1] == 0 or Y.shape[1] == 0:
        raise ValueError(f"empty problem: X {tuple(X.shape)}, D {tuple(D.shape)}, Y {tuple(Y.shape)}")
    if not (bool(torch.isfinite(X).all()) and bool(torch.isfinite(Y).all())):
        raise ValueError("The 'X' and 'Y' parameters must be finite. Found NaN/Inf instead.")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"The 'beta' parameter must be a finite float > 0. Got {beta!r} instead.")
    D = D.to(device=X.device) != 0
    return X, D, Y.to(X.device)



def _gated_barrier_value(theta: Tensor, u: Tensor, beta: float, mu: float) -> float:
    """``f_mu(u) = |theta|^2 / 2 + sum_g (beta t - mu log(t^2 - |u_g|^2))`` at the minimising ``t``, with
    ``t - |u| = (mu + mu^2 / (root + beta |u|)) / beta`` written without cancellation."""
    norms, root, t = soc_t(u, beta, mu)
    gap = (mu + mu**2 / (root + beta * norms)) / beta
    return float(0.5 * theta @ theta + torch.sum(beta * t - mu * torch.log(gap * (t + norms))))
