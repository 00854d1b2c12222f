r"""Primal-dual interior-point solver for the exact-ReLU arrangement program, with explicit data.

For one output (columns of ``Y`` are independent problems sharing ``X`` and ``D``)

.. math:: \min_{u}\ \tfrac12\Big\|\sum_{g} e_g D_{i(g)} X u_g - y\Big\|^2 + \beta\sum_g \|u_g\|_2
          \quad\text{s.t.}\quad (2D_{i(g)} - I) X u_g \ge 0,

with ``2P`` groups ``g = (s, i)``, ``e_g = +1`` for ``v`` (``s = 0``) and ``-1``
for ``w`` (``s = 1``). This is the program of :mod:`solvers.pdhg` written with
the patch matrix ``X (n, d)`` and the masks ``D (n, P)`` explicit, for problems
where one side of the Newton system is small: ``min(n, 2 P d)`` unknowns.

Method: Mehrotra predictor-corrector on the cone rows (slacks ``S = C u > 0``,
multipliers ``Lambda > 0``); the group norms are smoothed by the SOC barrier with
``t_g`` eliminated, ``h_\mu(u) = \beta t - \mu\log(t^2 - \|u\|^2)`` at its
minimising ``t = (\mu + \sqrt{\mu^2 + \beta^2\|u\|^2})/\beta``, whose gradient
is ``beta u / t``. Each iteration solves

.. math:: \big(B^\top B + \mathrm{blockdiag}_g(\nabla^2 h_g + X^\top \mathrm{diag}(\Lambda_g / S_g) X)\big)\,\Delta u = r

several times with one factorisation. The prediction sees ``v_i - w_i`` only, so
``v`` and ``w`` are eliminated per gate down to ``P d`` unknowns, solved directly
when ``P d <= n`` (``B^T B`` formed once), otherwise by the Woodbury identity on
an ``n x n`` matrix (see :meth:`_Problem._factor`). The
iterates stay strictly feasible (``C u > 0``), so the answer has no
violation; the certificate is the package's cone-aware duality gap with the
interior-point multipliers (:func:`solvers.certificate.certify`). Primal-dual
methods: Nocedal & Wright, *Numerical Optimization*, ch. 16 and 19.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .certificate import Certificate, Monitor, certify
from .report import IterationRecord, SolveReport, Status

# the fraction of the way to the boundary a step may go, and the largest Newton system solved
_TO_BOUNDARY = 0.99
_ZERO_GROUP = 1e-6  # groups below this fraction of the largest norm are tried at exactly zero
_MIN_CENTERING = 0.1  # floor on Mehrotra's sigma (with separate step lengths: 109 -> 91 iterations on the dense benchmark)
_START_RIDGE = 1e-3  # ridge of the starting least-squares fit, relative to its mean diagonal
_START_MU = 1.0  # the starting multipliers are mu / S with mu this many times the objective per cone row
_POLISH_BELOW = 1e-2  # the multipliers are polished (NNLS) every few iterations once the gap is below this
_POLISH_EVERY = 5
_POLISH_ROWS = 1e-6  # rows offered to the polish: barrier weight lam / S at least this fraction of the group's largest
_POLISH_MAX_ROWS = 8  # and at most this many times d of them, the largest weights (dense n = 2e4: 0.3 s per NNLS)
# the last try of a solve that stopped short of tol offers every row, but at most this many times d of them per group
# (the largest weights): offered all 23,040 rows of a d = 275 block (16 groups), NNLS took ~40 s
_POLISH_ALL_MAX_ROWS = 32
# Newton matrices of at least _LOW_PRECISION_SIZE rows are formed and factored in float32 while mu is above
# _LOW_PRECISION_ABOVE times the first mu (dense benchmark: 13.3 s, against 14.2 s at 1e-2 and 19.7 s
# in float64, 28-30 iterations each; float32 to the end stalls at a gap of 0.1). Small systems gain nothing and stay float64
# (with float32 a degenerate 70-row test ended at 2.8e-8 instead of below its 1e-8 tolerance)
_LOW_PRECISION_ABOVE = 1e-3
_LOW_PRECISION_SIZE = 1024
# float64 for the rest of a solve after this many float32 iterations in a row without a 10 % smaller relative gap:
# on ill-conditioned patches (cond(X^T X) = 2e9: an unrolled stage's near-duplicate CS channels and a constant
# channel) float32 directions stalled at a gap of 0.15-0.3 for 45 iterations, where float64 converged in 22
_LOW_PRECISION_PATIENCE = 5
# ... and none at all when cond(X^T X) exceeds this (float32 keeps ~7 digits): 2.1e9 on that unrolled-like block, where
# float64 throughout took 22 iterations against 35 with the guard; 3.7e3 on the issue-18 block, which keeps float32.
# Checked for d <= _LOW_PRECISION_COND_MAX_D only (an eigendecomposition of the d x d Gram); larger d keeps the guard
_LOW_PRECISION_MAX_COND = 1e6
_LOW_PRECISION_COND_MAX_D = 2048
_LOW_PRECISION_WATCH = 0.5  # ... counted once the relative gap is below this
# an iterate whose objective exceeds the zero block's this many times has diverged (seen on small
# over-parameterised programs, P d >> n: the objective grew to 1e38 over 200 iterations); stop at the best
_DIVERGED = 1e6
_CORRECTORS = 6  # at most this many Gondzio correctors per iteration (dense benchmark: 49 -> 29 iterations)
_GATED_CENTERED = 3.0  # gated barrier method: mu is cut (by _GATED_MU_FACTOR) once the Newton decrement is below
# this (1 -> 3: 15 -> 12 steps on the k = 3, P = 8 bench row; one step per mu instead of two)
_GATED_START_MU = 0.025  # first mu times |y|^2 / P (0.25 -> 0.025: 12 -> 10 steps on the k = 3, P = 8 bench row)
_GATED_MU_FACTOR = 0.05  # with the line search: 54 -> 16 Newton steps on the k = 5, P = 32 bench row
_CACHED_PRODUCTS = 2**24  # the row products x_a x_b of _weighted_grams are kept when they are at most this many
_GEMM_GRAMS_FROM_D = 64  # weighted Grams by one GEMM per group from this d on (d = 50: the row products were faster)
_MAX_SYSTEM = 12_000
_MAX_ARRAY = 2**27
_MAX_ROWS = 2**25


def newton_system_size(n: int, num_gates: int, d: int) -> int:
    """Unknowns of the interior-point Newton system for ``P = num_gates``: ``min(n, P d)``."""
    return min(n, num_gates * d)


def fits_interior_point(n: int, num_gates: int, d: int, max_system: int = _MAX_SYSTEM) -> bool:
    """Whether :func:`solve_relu_program_ipm` handles ``n`` rows, ``P = num_gates`` gates and ``d`` features
    (with ``system="auto"``).

    Its dense Newton system has at most ``max_system`` rows; with the
    Woodbury system (``n < P d``) its factor of ``n x P x d`` values holds at
    most ``2^27`` float64 numbers (1 GiB); and each of its per-row arrays
    (slacks, multipliers, their steps: ``n x 2P``) at most ``2^25`` numbers
    (256 MiB, about 15 are alive).
    """
    if n * 2 * num_gates > _MAX_ROWS:
        return False
    if num_gates * d <= n:  # direct: (P d)^2 system, B_p^T B_p accumulated over row chunks
        return num_gates * d <= max_system
    return n <= max_system and n * num_gates * d <= _MAX_ARRAY


def fits_gated_interior_point(n: int, num_gates: int, d: int, max_system: int = _MAX_SYSTEM) -> bool:
    """Whether :func:`solve_gated_program_ipm` handles ``n`` rows, ``P = num_gates`` and ``d`` features: a Newton
    system of ``P d <= max_system`` unknowns, and at most ``2^27`` numbers in the patch matrix (``n d``) and in
    the masks (``n P``)."""
    return num_gates * d <= max_system and n * d <= _MAX_ARRAY and n * num_gates <= _MAX_ARRAY


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
    callback: Callable[[IterationRecord], None] | None = None,
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
    fits = (n * 2 * P <= _MAX_ROWS
            and (P * d <= _MAX_SYSTEM if direct else (n <= _MAX_SYSTEM and n * P * d <= _MAX_ARRAY)))
    if not fits:
        raise ValueError(f"the interior-point method needs a Newton system of at most {_MAX_SYSTEM} unknowns "
                         f"({'P d' if direct else 'n'} = {P * d if direct else n} with system={system!r}), "
                         f"n * P * d <= {_MAX_ARRAY} for the Woodbury system and n * 2 P <= {_MAX_ROWS}. Got n={n}, "
                         f"P={P}, d={d} instead.")
    monitor = Monitor("interior_point", tol, tol, torch.float64, callback)
    U = torch.zeros(2, P, c, d, dtype=torch.float64, device=X.device)
    lam = torch.zeros(n, 2, P, c, dtype=torch.float64, device=X.device)
    total_iterations, statuses, exhausted = 0, [], False
    problem = _Problem(X, D, gates, system)
    for out in range(c):
        if not bool(Y[:, out].any()):  # a zero target: the zero block is optimal (objective 0, dual point 0)
            statuses.append(True)
            continue
        u, lam_out, iterations, ok = problem.solve(Y[:, out], beta, tol, max_iter, monitor, total_iterations)
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
    For small blocks (``P d`` up to 12,000) this reaches tight certificates
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
        ``P d > 12,000``.
    """
    X, D, Y = _check(X, D, Y, beta)
    n, d = X.shape
    P, c = D.shape[1], Y.shape[1]
    if P * d > _MAX_SYSTEM:
        raise ValueError(f"the gated interior-point method solves a Newton system of P d unknowns, at most "
                         f"{_MAX_SYSTEM}. Got P={P}, d={d} (P d = {P * d}) instead.")
    monitor = Monitor("interior_point", tol, tol, torch.float64, callback)
    Dm = D.to(X.dtype)
    BtB = _Problem.gram_of(X, Dm)
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
            grad_h, M = _soc_barrier(u, beta, mu)
            grad = BtB @ u.reshape(-1) - Bty + grad_h.reshape(-1)
            H = BtB.clone()
            torch.diagonal(H.view(P, d, P, d), dim1=0, dim2=2).add_(M.permute(1, 2, 0))
            try:
                L = _cholesky(H)
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
        return _sum_over_outputs(U, theta, Y, torch.einsum("nd,np,nc->pcd", X, Dm, theta), beta)

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


class _Problem:
    """Shared data of all outputs: ``X`` without its zero rows, masks and signs, and ``B^T B`` if used."""

    def __init__(self, X: Tensor, D: Tensor, gates: Tensor | None = None, system: str = "auto") -> None:
        self.X_full, self.D_full = X, D
        self.gates = None if gates is None else torch.as_tensor(gates).to(X).reshape(D.shape[1], -1)
        keep = X.abs().amax(dim=1) > 0  # a zero row constrains nothing and predicts nothing
        self.keep = keep
        self.X, self.D = X[keep], D[keep].to(X.dtype)
        self.n, self.d = self.X.shape
        self.P = D.shape[1]
        self.G = 2 * self.P
        self.sigma = 2 * self.D - 1  # (n, P)
        self.row_signs = self.sigma.repeat(1, 2)  # (n, G): the cone rows of v and w groups share their signs
        self.e = torch.cat([torch.ones(self.P), -torch.ones(self.P)]).to(X)
        self.direct = system == "direct" or (system == "auto" and self.P * self.d <= self.n)
        self.BtB = self._gram() if self.direct else None
        self.system_size = self.P * self.d if self.direct else self.n
        self.low_precision_ok = self.system_size >= _LOW_PRECISION_SIZE and _well_conditioned(self.X)
        self._xx_upper: Tensor | None = None  # products x_a x_b (a <= b) of every row, see _weighted_grams
        self._xt: Tensor | None = None  # X^T, contiguous, for the per-group GEMMs of _weighted_grams
        self.start_directions = self._interior_directions()

    # ---- operators on u (G, d) ----
    def xu(self, u: Tensor) -> Tensor:
        return self.X @ u.T  # (n, G)

    def predict(self, xu: Tensor) -> Tensor:
        return torch.sum(self.D * (xu[:, : self.P] - xu[:, self.P:]), dim=1)

    def slacks(self, xu: Tensor) -> Tensor:
        return xu * self.row_signs  # (n, G)

    def bt(self, r: Tensor) -> Tensor:
        """``B^T r`` for a residual-like ``r (n,)``: ``(G, d)``."""
        a = (self.X.T @ (self.D * r[:, None])).T
        return torch.cat([a, -a])

    def ct(self, m: Tensor) -> Tensor:
        """``C^T m`` for row values ``m (n, G)``: ``(G, d)``."""
        return (m * self.row_signs).T @ self.X

    def _gram(self) -> Tensor:
        return self.gram_of(self.X, self.D)

    @staticmethod
    def gram_of(X: Tensor, D: Tensor, blocks: int = 8) -> Tensor:
        """``B_p^T B_p = [X^T D_i D_j X]_{ij}`` of size ``(P d, P d)``, accumulated over row chunks: the data
        term of the reduced system in ``p_i = v_i - w_i`` (the only combination the prediction sees), and
        the whole data term of the gated program. Only the lower triangle is multiplied (row blocks, as in
        :func:`_lower_gram`: 9/16 of the products), then mirrored."""
        n, d = X.shape
        Pd = D.shape[1] * d
        out = torch.zeros(Pd, Pd, dtype=X.dtype, device=X.device)
        blocks = blocks if Pd >= 1024 else 1  # small blocks of rows multiply slower than one product
        edges = [round(Pd * b / blocks) for b in range(blocks + 1)]
        step = max(1, 2**22 // max(Pd, 1))
        for start in range(0, n, step):
            Xc, Dc = X[start:start + step], D[start:start + step]
            Ft = (Dc[:, :, None] * Xc[:, None, :]).reshape(Xc.shape[0], Pd).T  # (P d, m)
            for lo, hi in zip(edges[:-1], edges[1:]):
                if hi > lo:
                    out[lo:hi, :hi].addmm_(Ft[lo:hi], Ft[:hi].T)
        return torch.tril(out) + torch.tril(out, -1).T

    # ---- one output ----
    def solve(self, y_full: Tensor, beta: float, tol: float, max_iter: int, monitor: Monitor, done: int):
        y = y_full[self.keep]
        G = self.G
        gates_dir = self.start_directions
        # start: every group along its own gate direction (strictly inside its cone), scaled per gate by a
        # ridge least-squares fit of the targets with its v (c_i > 0) or w (c_i < 0) group, plus a margin
        # of the mean scale on every group; on the dense benchmark this start took 91 iterations down to 49
        # (the old start, half the best common scale, crept along the boundary at steps of 0.05-0.15)
        F = self.D * (self.X @ gates_dir[: self.P].T)  # (n, P): prediction of gate i's unit direction
        FtF = F.T @ F
        ridge = _START_RIDGE * float(FtF.diagonal().mean()) + 1e-300
        c = torch.linalg.solve(FtF + ridge * torch.eye(self.P, dtype=F.dtype, device=F.device), F.T @ y)
        margin = float(c.abs().mean())
        margin = margin if margin > 0 and math.isfinite(margin) else 1e-3
        u = gates_dir * (torch.cat([c.clamp(min=0), (-c).clamp(min=0)]) + margin)[:, None]
        xu = self.xu(u)
        S = self.slacks(xu)
        m_rows = S.numel()
        r = self.predict(xu) - y
        mu = _START_MU * max(float((0.5 * r @ r + beta * u.norm(dim=1).sum())) / m_rows, 1e-12)
        lam = mu / S
        iterations, best, mu_first = 0, None, None
        low, low_best, low_stalls = False, math.inf, 0
        zero_objective = 0.5 * float(y @ y)  # the zero block's objective bounds the optimum
        for it in range(1, max_iter + 1):
            iterations = it
            mu_h = max(float((S * lam).sum()) / m_rows, 1e-300)
            mu_first = mu_first or mu_h
            grad_h, M = _soc_barrier(u, beta, mu_h)
            W = lam / S
            M = M + self._weighted_grams(W)
            base = self.bt(r) + grad_h  # gradient of the smooth part without the barrier
            try:
                solve = None
                low = self.low_precision_ok and mu_h > _LOW_PRECISION_ABOVE * mu_first
                if low:
                    try:
                        solve = self._factor(M, low_precision=True)
                    except ValueError:  # float32 too coarse for this system: float64 from here on
                        mu_first = math.inf
                solve = solve or self._factor(M)
            except ValueError:  # numerically singular: the iterates are as accurate as this precision allows
                break
            # predictor (affine scaling)
            du = solve(-(base))
            dS = self.slacks(self.xu(du))
            dlam = -lam - W * dS
            a_p, a_d = _max_step(S, dS), _max_step(lam, dlam)
            mu_now = float((S * lam).sum()) / m_rows
            mu_aff = float(((S + a_p * dS) * (lam + a_d * dlam)).sum()) / m_rows
            sigma = min(1.0, max((mu_aff / max(mu_now, 1e-300)) ** 3, _MIN_CENTERING))
            # corrector
            comp = (sigma * mu_now - dS * dlam) / S
            du = solve(-(base - self.ct(comp)))
            dS = self.slacks(self.xu(du))
            dlam = comp - lam - W * dS
            # Gondzio's centrality correctors: aim at a longer step, push the trial products into
            # [0.1, 10] sigma mu, one extra solve each; kept while they lengthen the step
            a_p, a_d = min(_max_step(S, dS), 1.0), min(_max_step(lam, dlam), 1.0)
            for _ in range(_CORRECTORS):
                if min(a_p, a_d) >= 1.0:
                    break
                tp, td = min(1.0, 1.5 * a_p + 0.1), min(1.0, 1.5 * a_d + 0.1)
                prod = (S + tp * dS) * (lam + td * dlam)
                target = sigma * mu_now
                t_c = prod.clamp(min=0.1 * target, max=10 * target) - prod
                t_c = t_c.clamp(min=-10 * target)
                comp_c = comp + t_c / S
                du_c = solve(-(base - self.ct(comp_c)))
                dS_c = self.slacks(self.xu(du_c))
                dlam_c = comp_c - lam - W * dS_c
                b_p, b_d = min(_max_step(S, dS_c), 1.0), min(_max_step(lam, dlam_c), 1.0)
                if b_p + b_d < 1.01 * (a_p + a_d):
                    break
                comp, du, dS, dlam, a_p, a_d = comp_c, du_c, dS_c, dlam_c, b_p, b_d
            # separate primal and dual step lengths, each a fraction of the way to its boundary
            alpha = _TO_BOUNDARY * min(_max_step(S, dS), 1.0 / _TO_BOUNDARY)
            alpha_d = _TO_BOUNDARY * min(_max_step(lam, dlam), 1.0 / _TO_BOUNDARY)
            u = u + alpha * du
            lam = lam + alpha_d * dlam
            xu = self.xu(u)
            S = self.slacks(xu)
            if not bool((S > 0).all()):  # slacks recomputed from u lost their sign in rounding: stop at the best
                break
            r = self.predict(xu) - y
            cert = self._certificate(u, lam, y, r, beta)
            if cert.relative_gap > tol and cert.relative_gap < _POLISH_BELOW and it % _POLISH_EVERY == 0:
                cert, lam_best = self._polished(u, lam, y, r, beta, cert)
            else:
                lam_best = lam
            monitor.record(done + it, cert)
            if low and cert.relative_gap < _LOW_PRECISION_WATCH:  # float32 directions that stop closing the gap:
                # float64 from here on (the first iterations close the gap slowly in any precision)
                low_best, low_stalls = ((cert.relative_gap, 0) if cert.relative_gap < 0.9 * low_best
                                        else (low_best, low_stalls + 1))
                if low_stalls >= _LOW_PRECISION_PATIENCE:
                    mu_first = math.inf
            if best is None or cert.relative_gap < best[0].relative_gap:
                best = (cert, u.clone(), lam_best.clone())
            if cert.relative_gap <= tol:
                break
            if not (math.isfinite(cert.primal) and math.isfinite(cert.dual)) or max(alpha, alpha_d) < 1e-12:
                break
            if 0 < zero_objective < cert.primal / _DIVERGED:  # far above the zero block's objective: diverging
                break
        if best is None:
            raise ValueError("interior point: the first Newton system is numerically singular (data too "
                             "ill-conditioned); use the first-order solver (PDHG)")
        cert, u, lam = best
        if cert.relative_gap > tol:  # the multipliers may be what fails: try the best ones for this point
            r = self.predict(self.xu(u)) - y
            cert, lam = self._polished(u, lam, y, r, beta, cert)
            if cert.relative_gap > tol:
                cert, lam = self._polished(u, lam, y, r, beta, cert, all_rows=True)
        lam_full = torch.zeros(self.X_full.shape[0], G, dtype=lam.dtype, device=lam.device)
        lam_full[self.keep] = lam
        return u, lam_full, iterations, cert.relative_gap <= tol

    def _interior_directions(self) -> Tensor:
        """Unit directions strictly inside each cone ``sigma_i * X u > 0``: the gates, else a least-squares sign fit."""
        def inside(dirs: Tensor) -> bool:
            return bool((self.sigma * (self.X @ dirs.T) > 0).all())

        dirs = self.gates
        if dirs is None or not inside(dirs):
            fit = torch.linalg.lstsq(self.X, self.sigma).solution.T  # (P, d)
            dirs = fit if dirs is None else dirs + 1e-3 * fit * (dirs.norm() / fit.norm().clamp(min=1e-300))
            if not inside(dirs):
                raise ValueError("interior point: a cone (2 D_i - I) X u >= 0 has no strictly interior point "
                                 "reachable from the gates (X g = 0 on a nonzero row); use the first-order solver "
                                 "(PDHG)")
        dirs = dirs / dirs.norm(dim=1, keepdim=True)
        return torch.cat([dirs, dirs])

    def _weighted_grams(self, W: Tensor) -> Tensor:
        """``X^T diag(W_g) X`` for every group ``g``: ``(G, d, d)``, as one product ``W^T [x_a x_b]_{a <= b}``
        over the upper-triangle products of each row (half of ``d^2``; kept from the first call when they fit
        in 2^24 numbers, else formed per row chunk). Dense benchmark: 15 ms instead of 47 ms for the einsum. When the
        products are not cached and ``d >= 64``, one GEMM ``X^T diag(W_g) X`` per group instead (keeps a contiguous
        copy of ``X^T``)."""
        d = self.d
        iu = torch.triu_indices(d, d, device=self.X.device)
        if self._xx_upper is None and self.n * iu.shape[1] <= _CACHED_PRODUCTS:
            self._xx_upper = self.X[:, iu[0]] * self.X[:, iu[1]]
        if self._xx_upper is None and d >= _GEMM_GRAMS_FROM_D:
            # one GEMM per group: for large n d^2 the row products above are memory-bound (issue-18 block, n = 1e4,
            # d = 200, 32 groups: 2.2 s -> 0.86 s per call; n = 1e5, d = 275, 16 groups: 31 s -> 10 s)
            out = torch.empty(self.G, d, d, dtype=self.X.dtype, device=self.X.device)
            if self._xt is None:
                self._xt = self.X.T.contiguous()
            for g in range(self.G):
                torch.mm(self._xt * W[:, g], self.X, out=out[g])
            return out
        if self._xx_upper is not None:
            upper = W.T @ self._xx_upper
        else:
            upper = torch.zeros(self.G, iu.shape[1], dtype=self.X.dtype, device=self.X.device)
            step = max(1, 2**22 // iu.shape[1])
            for start in range(0, self.n, step):
                Xc = self.X[start:start + step]
                upper += W[start:start + step].T @ (Xc[:, iu[0]] * Xc[:, iu[1]])
        out = torch.empty(self.G, d, d, dtype=self.X.dtype, device=self.X.device)
        out[:, iu[0], iu[1]] = upper
        out[:, iu[1], iu[0]] = upper
        return out

    def _factor(self, M: Tensor, low_precision: bool = False):
        """A solver of ``(B^T B + blockdiag(M)) du = rhs`` for ``rhs (G, d)``.

        The prediction sees ``p_i = v_i - w_i`` only, so ``v`` and ``w`` are eliminated per gate: with
        ``A_i = M_vi^{-1} + M_wi^{-1}`` the step in ``p`` solves ``(blockdiag(A_i^{-1}) + B_p^T B_p) dp =
        A^{-1} (M_v^{-1} r_v - M_w^{-1} r_w)``, a ``P d`` system (direct, half the unknowns of the
        ``(v, w)`` system: 8x fewer operations in its Cholesky), or, by the Woodbury identity, an ``n x n``
        one ``K = I + sum_i D_i X A_i X^T D_i`` (factor ``F_i = D_i X R_i``, ``R_i R_i^T = A_i``). With
        ``low_precision`` the large matrix is formed and factored in float32 (the iterates stay strictly
        feasible whatever the direction, so an inexact direction costs at most a shorter step).
        """
        P, d = self.P, self.d
        low = torch.float32 if low_precision else self.X.dtype
        if self.direct:
            # with S_i = M_vi + M_wi: A_i^{-1} = M_v S^{-1} M_w and A^{-1}(M_v^{-1} r_v - M_w^{-1} r_w) =
            # M_w S^{-1} r_v - M_v S^{-1} r_w, and back from dp: dv = S^{-1}(r_v + r_w + M_w dp), dw = dv - dp.
            # No M^{-1} appears: the barrier blocks of v and w differ by many orders of magnitude near the
            # optimum, and the forms through M^{-1} lost the last digits (a small test stalled at 1e-4)
            Mv, Mw = M[:P], M[P:]
            Ls = _cholesky(Mv + Mw)
            Ainv = Mv @ torch.cholesky_solve(Mw, Ls)
            Ainv = 0.5 * (Ainv + Ainv.transpose(1, 2))
            H = self.BtB.to(low, copy=True)
            torch.diagonal(H.view(P, d, P, d), dim1=0, dim2=2).add_(Ainv.permute(1, 2, 0).to(low))
            L = _cholesky(H)

            def solve(rhs: Tensor) -> Tensor:
                sv = torch.cholesky_solve(rhs[:P, :, None], Ls)
                sw = torch.cholesky_solve(rhs[P:, :, None], Ls)
                rhs_p = (torch.bmm(Mw, sv) - torch.bmm(Mv, sw)).reshape(-1, 1)
                dp = torch.cholesky_solve(rhs_p.to(low), L).to(rhs.dtype).view(P, d)
                dv = torch.cholesky_solve((rhs[:P] + rhs[P:] + torch.bmm(Mw, dp[:, :, None])[:, :, 0])[:, :, None],
                                          Ls)[:, :, 0]
                return torch.cat([dv, dv - dp])

            return solve
        Lm = _cholesky(M)  # (G, d, d)
        Minv = torch.cholesky_inverse(Lm)
        R = _cholesky(Minv[:P] + Minv[P:])  # R_i R_i^T = A_i
        F = self.X.to(low) @ R.transpose(1, 2).reshape(P * d, d).T.to(low)  # (n, P d): X R_i side by side
        F.view(self.n, P, d).mul_(self.D[:, :, None].to(low))
        K = _lower_gram(F)
        del F
        K.diagonal().add_(1.0)
        LK = _cholesky(K)

        def solve(rhs: Tensor) -> Tensor:
            # (M + B^T B)^{-1} rhs = z - M^{-1} B^T K^{-1} B z with z = M^{-1} rhs, K = I + B M^{-1} B^T
            z = torch.cholesky_solve(rhs[:, :, None], Lm)[:, :, 0]
            bz = torch.sum(self.D * (self.X @ (z[:P] - z[P:]).T), dim=1)
            s = torch.cholesky_solve(bz[:, None].to(low), LK)[:, 0].to(rhs.dtype)
            return z - torch.cholesky_solve(self.bt(s)[:, :, None], Lm)[:, :, 0]

        return solve

    def _polished(self, u: Tensor, lam: Tensor, y: Tensor, r: Tensor, beta: float, cert: Certificate,
                  all_rows: bool = False):
        """The certificate with the best multipliers for this ``u``: per group, ``min_{l >= 0} ||B_g^T theta +
        C_g^T l||`` (non-negative least squares, ``d`` equations); kept where it beats ``cert``.

        Near a degenerate optimum (rank-deficient patches, groups at zero) the interior-point multipliers can
        stall while the primal has converged; any ``l >= 0`` gives a valid certificate, so the polished one
        is as honest as the interior-point one, only tighter.
        """
        from scipy.optimize import nnls

        theta = -r
        bt = self.bt(theta).cpu().numpy()
        X, signs = self.X.cpu().numpy(), self.sigma.cpu().numpy()
        # only the rows the interior point treats as active (barrier weight lam / S within 1e-6 of the group's
        # largest) are offered to NNLS: fewer columns, and a bound over a subset of l >= 0 is still a bound
        weight = lam / self.slacks(self.xu(u)).clamp(min=1e-300)
        active = (weight >= (0.0 if all_rows else _POLISH_ROWS) * weight.amax(dim=0, keepdim=True)).cpu().numpy()
        order = torch.argsort(weight, dim=0, descending=True).cpu().numpy()
        cap = (_POLISH_ALL_MAX_ROWS if all_rows else _POLISH_MAX_ROWS) * self.d
        polished = torch.zeros_like(lam)
        for g in range(self.G):  # the v and w groups of gate i share their rows C_g = diag(sigma_i) X
            rows = active[:, g].nonzero()[0]
            if len(rows) > cap:  # the most active rows only: NNLS cost grows with them
                rows = np.sort(order[:cap, g])
            try:
                sol, _ = nnls((signs[rows, g % self.P, None] * X[rows]).T, -bt[g], maxiter=50 * max(len(rows), 1))
            except RuntimeError:  # no convergence in the iteration budget: keep the interior-point multipliers
                return cert, lam
            polished[torch.from_numpy(rows), g] = torch.from_numpy(sol).to(lam)
        better = self._certificate(u, polished, y, r, beta)
        return (better, polished) if better.relative_gap < cert.relative_gap else (cert, lam)

    def _certificate(self, u: Tensor, lam: Tensor, y: Tensor, r: Tensor, beta: float) -> Certificate:
        theta = -r
        direction = self.bt(theta) + self.ct(lam)
        return certify(u, theta, y, direction, beta)

    def certificate_all(self, U: Tensor, lam: Tensor, Y: Tensor, beta: float) -> Certificate:
        """Certificate of the whole program (all outputs), on the full data (zero rows included)."""
        X, Dm = self.X_full, self.D_full.to(self.X_full.dtype)
        sigma = 2 * Dm - 1
        P, c = Dm.shape[1], Y.shape[1]
        xv = torch.einsum("nd,pcd->npc", X, U[0])
        xw = torch.einsum("nd,pcd->npc", X, U[1])
        pred = torch.einsum("np,npc->nc", Dm, xv - xw)
        theta = Y - pred
        bt = torch.einsum("nd,np,nc->pcd", X, Dm, theta)
        ct_v = torch.einsum("nd,np,npc->pcd", X, sigma, lam[:, 0])
        ct_w = torch.einsum("nd,np,npc->pcd", X, sigma, lam[:, 1])
        direction = torch.stack([bt + ct_v, -bt + ct_w])  # (2, P, c, d)
        slack = torch.stack([sigma[:, :, None] * xv, sigma[:, :, None] * xw])
        violation = float(torch.clamp(-slack, min=0).max()) / max(float(Y.abs().max()), 1e-300)
        return _sum_over_outputs(U.reshape(2 * P, c, -1), theta, Y, direction.reshape(2 * P, c, -1), beta, violation)


def _sum_over_outputs(U: Tensor, theta: Tensor, Y: Tensor, direction: Tensor, beta: float,
                      violation: float = 0.0) -> Certificate:
    """Certificate of the whole program from ``U, direction (G, c, d)`` and ``theta, Y (n, c)``: the outputs
    share no group, so the program is a sum of ``c`` independent ones and the sum of their own (separately
    scaled) dual bounds is a bound; one scaling of ``theta`` for all outputs would be a weaker one."""
    certs = [certify(U[:, o], theta[:, o], Y[:, o], direction[:, o], beta) for o in range(Y.shape[1])]
    return Certificate(sum(cert.primal for cert in certs), sum(cert.dual for cert in certs), violation)


def _gated_barrier_value(theta: Tensor, u: Tensor, beta: float, mu: float) -> float:
    """``f_mu(u) = |theta|^2 / 2 + sum_g (beta t - mu log(t^2 - |u_g|^2))`` at the minimising ``t``, with
    ``t - |u| = (mu + mu^2 / (root + beta |u|)) / beta`` written without cancellation."""
    norms, root, t = _soc_t(u, beta, mu)
    gap = (mu + mu**2 / (root + beta * norms)) / beta
    return float(0.5 * theta @ theta + torch.sum(beta * t - mu * torch.log(gap * (t + norms))))


def _soc_t(u: Tensor, beta: float, mu: float) -> tuple[Tensor, Tensor, Tensor]:
    """``|u_g|``, ``root = sqrt(mu^2 + beta^2 |u_g|^2)`` and the ``t = (mu + root) / beta`` that minimises
    ``beta t - mu log(t^2 - |u_g|^2)``, per group."""
    norms = u.norm(dim=1)
    root = torch.sqrt(mu**2 + (beta * norms) ** 2)
    return norms, root, (mu + root) / beta


def _soc_barrier(u: Tensor, beta: float, mu: float) -> tuple[Tensor, Tensor]:
    """Gradient ``(G, d)`` and Hessian blocks ``(G, d, d)`` of ``h_mu(u_g) = beta t - mu log(t^2 - |u_g|^2)`` at its
    minimising ``t`` (:func:`_soc_t`): gradient ``beta u / t``."""
    norms, root, t = _soc_t(u, beta, mu)
    # Hessian: (beta/t) I - beta^2 / (t^2 root) u u^T = a (I - w w^T) + b w w^T with w = u / |u|, a = beta / t
    # and the curvature along u, b = beta^2 mu / ((mu + root) root), written without the cancellation of
    # a - beta^2 |u|^2 / (t^2 root) (which goes negative in rounding as mu -> 0)
    a = beta / t
    b = beta**2 * mu / ((mu + root) * root)
    w = u / norms.clamp(min=1e-300)[:, None]
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    return beta * u / t[:, None], a[:, None, None] * eye + (b - a)[:, None, None] * w[:, :, None] * w[:, None, :]


def _well_conditioned(X: Tensor) -> bool:
    """Whether float32 Newton systems may be tried on patches ``X``: ``cond(X^T X) <= _LOW_PRECISION_MAX_COND``
    (assumed for ``d > _LOW_PRECISION_COND_MAX_D``, where the stall guard alone decides)."""
    if X.shape[1] > _LOW_PRECISION_COND_MAX_D:
        return True
    eig = torch.linalg.eigvalsh(X.T @ X)
    return bool(eig[0] > 0) and float(eig[-1] / eig[0]) <= _LOW_PRECISION_MAX_COND


def _lower_gram(F: Tensor, blocks: int = 8) -> Tensor:
    """The lower triangle of ``F F^T`` (diagonal blocks in full, zeros above them), by row blocks:
    (blocks + 1) / (2 blocks) of the products of ``F @ F.T``. Cholesky reads only the lower triangle."""
    n = F.shape[0]
    K = torch.zeros(n, n, dtype=F.dtype, device=F.device)
    edges = [round(n * b / blocks) for b in range(blocks + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            K[lo:hi, :hi] = F[lo:hi] @ F[:hi].T
    return K


def _cholesky(A: Tensor) -> Tensor:
    """Cholesky factor, with a growing diagonal shift when rounding makes ``A`` look indefinite."""
    L, info = torch.linalg.cholesky_ex(A)
    if not bool((info != 0).any()):
        return L
    scale = A.diagonal(dim1=-2, dim2=-1).abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(A.dtype).tiny)
    # shifts from ~50 units of rounding up (float32's 1e-6..1e-4 regularise the early, low-precision systems)
    for shift in ((1e-14, 1e-12, 1e-10, 1e-8) if A.dtype == torch.float64 else (1e-6, 1e-5, 1e-4)):
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        L, info = torch.linalg.cholesky_ex(A + (shift * scale)[..., None] * eye)
        if not bool((info != 0).any()):
            return L
    raise ValueError("interior point: the Newton system is not positive definite (data too ill-conditioned)")


def _max_step(x: Tensor, dx: Tensor) -> float:
    """Largest ``a <= 1 / _TO_BOUNDARY`` with ``x + a dx >= 0`` (``x > 0``)."""
    q = float((dx / x).min())  # one pass: the step is 1 / max(-dx / x) where any dx < 0
    if math.isnan(q):
        return 0.0
    return min(-1.0 / q, 1.0 / _TO_BOUNDARY) if q < 0 else 1.0 / _TO_BOUNDARY
