r"""The exact-ReLU interior-point iteration behind :func:`solvers.interior.solve_relu_program_ipm`.

For one output ``y`` the method is Mehrotra's predictor-corrector on the cone rows (slacks ``S = C u > 0``,
multipliers ``Lambda > 0``) with Gondzio's centrality correctors, the group norms smoothed by the barrier of
:mod:`solvers.barrier`. Each iteration solves

.. math:: \big(B^\top B + \mathrm{blockdiag}_g(\nabla^2 h_g + X^\top \mathrm{diag}(\Lambda_g / S_g) X)\big)\,\Delta u = r

several times with one factorisation (:meth:`ReluInteriorPoint._factor`). :class:`ReluInteriorPoint` holds what
all outputs share (patches, masks, signs, ``B^T B``) and runs one output at a time
(:meth:`ReluInteriorPoint.solve`). Primal-dual methods: Nocedal & Wright, *Numerical Optimization*, ch. 16 and 19.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .barrier import certify_outputs, cholesky, data_gram, soc_barrier
from .certificate import Certificate, Monitor, certify

_TO_BOUNDARY = 0.99  # the fraction of the way to the boundary a step may go
_MIN_CENTERING = 0.1  # floor on Mehrotra's sigma (with separate step lengths: 109 -> 91 iterations on the dense benchmark)
_START_RIDGE = 1e-3  # ridge of the starting least-squares fit, relative to its mean diagonal
_WARM_MARGIN = 0.1  # a given start is moved this fraction of the cold start's margin inside the cones
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
# float64 throughout took 22 iterations against 35 with the guard; 3.7e3 on the training-size benchmark block
# (benchmarks/bench_relu.py), which keeps float32.
# Checked for d <= _LOW_PRECISION_COND_MAX_D only (an eigendecomposition of the d x d Gram); larger d keeps the guard
_LOW_PRECISION_MAX_COND = 1e6
_LOW_PRECISION_COND_MAX_D = 2048
_LOW_PRECISION_WATCH = 0.5  # ... counted once the relative gap is below this
# an iterate whose objective exceeds the zero block's this many times has diverged (seen on small
# over-parameterised programs, P d >> n: the objective grew to 1e38 over 200 iterations); stop at the best
_DIVERGED = 1e6
_CORRECTORS = 6  # at most this many Gondzio correctors per iteration (dense benchmark: 49 -> 29 iterations)
_CACHED_PRODUCTS = 2**24  # the row products x_a x_b of _weighted_grams are kept when they are at most this many
_GEMM_GRAMS_FROM_D = 64  # weighted Grams by one GEMM per group from this d on (d = 50: the row products were faster)


class _Precision:
    """Which precision factors the Newton system of each iteration of one output.

    Large systems are formed and factored in float32 while ``mu`` is above ``_LOW_PRECISION_ABOVE`` times its
    first value (the iterates stay strictly feasible whatever the direction, so an inexact one costs at most a
    shorter step); float64 for the rest of the solve once a float32 factorisation fails or float32 directions stop
    closing the gap (``_LOW_PRECISION_PATIENCE`` iterations without a 10 % smaller gap).
    """

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed
        self.mu_first: float | None = None  # math.inf: float64 from here on
        self.low = False  # whether this iteration tried float32
        self.best_gap, self.stalls = math.inf, 0

    def factor(self, problem: ReluInteriorPoint, M: Tensor, mu: float):
        """``problem._factor(M)`` in the precision this iteration uses; ``ValueError`` when float64 fails too."""
        self.mu_first = self.mu_first or mu
        self.low = self.allowed and mu > _LOW_PRECISION_ABOVE * self.mu_first
        if self.low:
            try:
                return problem._factor(M, low_precision=True)
            except ValueError:  # float32 too coarse for this system: float64 from here on
                self.mu_first = math.inf
        return problem._factor(M)

    def watch(self, relative_gap: float) -> None:
        """Count float32 iterations that do not close the gap (the first iterations close it slowly in any
        precision, so only below ``_LOW_PRECISION_WATCH``)."""
        if self.low and relative_gap < _LOW_PRECISION_WATCH:
            self.best_gap, self.stalls = ((relative_gap, 0) if relative_gap < 0.9 * self.best_gap
                                          else (self.best_gap, self.stalls + 1))
            if self.stalls >= _LOW_PRECISION_PATIENCE:
                self.mu_first = math.inf


class ReluInteriorPoint:
    """Shared data of all outputs: ``X`` without its zero rows, masks and signs, and ``B^T B`` if used; and the
    primal-dual iteration of one output (:meth:`solve`)."""

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
        return data_gram(self.X, self.D)

    # ---- one output ----
    def solve(self, y_full: Tensor, beta: float, tol: float, max_iter: int, monitor: Monitor, done: int,
              start: Tensor | None = None):
        """Solve the program of target ``y_full (n,)``: ``u (G, d)``, its multipliers on all ``n`` rows ``(n, G)``,
        the iterations used and whether the certificate reached ``tol``. ``done`` iterations of earlier outputs
        number the records in ``monitor``. ``start (G, d)``: a feasible point to start from (:meth:`_start`)."""
        y = y_full[self.keep]
        u, S, r, lam = self._start(y, beta, start)
        best, iterations = self._iterate(u, S, r, lam, y, beta, tol, max_iter, monitor, done)
        if best is None:
            raise ValueError("interior point: the first Newton system is numerically singular (data too "
                             "ill-conditioned); use the first-order solver (PDHG)")
        cert, u, lam = self._final_polish(*best, y, beta, tol)
        lam_full = torch.zeros(self.X_full.shape[0], self.G, dtype=lam.dtype, device=lam.device)
        lam_full[self.keep] = lam
        return u, lam_full, iterations, cert.relative_gap <= tol

    def _start(self, y: Tensor, beta: float, start: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Starting ``u``, its slacks ``S`` and residual ``r``, and multipliers ``lam = mu / S``.

        Every group lies along its own gate direction (strictly inside its cone), scaled per gate by a ridge
        least-squares fit of the targets with its v (c_i > 0) or w (c_i < 0) group, plus a margin of the mean
        scale on every group; on the dense benchmark this start takes 49 iterations where half the best common
        scale took 91, creeping along the boundary at steps of 0.05-0.15. A given feasible ``start`` is moved
        inside the cones instead, by ``_WARM_MARGIN`` times that margin along every group's direction (its
        slacks are zero on its active rows, where the barrier is infinite); ten times more where rounding left
        a slack at zero, and the cold start where that fails three times.
        """
        gates_dir = self.start_directions
        F = self.D * (self.X @ gates_dir[: self.P].T)  # (n, P): prediction of gate i's unit direction
        FtF = F.T @ F
        ridge = _START_RIDGE * float(FtF.diagonal().mean()) + 1e-300
        c = torch.linalg.solve(FtF + ridge * torch.eye(self.P, dtype=F.dtype, device=F.device), F.T @ y)
        margin = float(c.abs().mean())
        margin = margin if margin > 0 and math.isfinite(margin) else 1e-3
        u = gates_dir * (torch.cat([c.clamp(min=0), (-c).clamp(min=0)]) + margin)[:, None]
        if start is not None:
            for shift in (_WARM_MARGIN * margin * 10.0 ** j for j in range(4)):  # rounding may leave a row at 0
                inside = start.to(gates_dir) + shift * gates_dir
                if bool((self.slacks(self.xu(inside)) > 0).all()):
                    u = inside
                    break
        xu = self.xu(u)
        S = self.slacks(xu)
        r = self.predict(xu) - y
        mu = _START_MU * max(float((0.5 * r @ r + beta * u.norm(dim=1).sum())) / S.numel(), 1e-12)
        return u, S, r, mu / S

    def _iterate(self, u: Tensor, S: Tensor, r: Tensor, lam: Tensor, y: Tensor, beta: float, tol: float,
                 max_iter: int, monitor: Monitor, done: int):
        """Interior-point iterations from ``u, S, r, lam``: the best ``(certificate, u, lam)`` seen (None if the
        first Newton system could not be factored) and the iterations used."""
        m_rows = S.numel()
        iterations, best = 0, None
        precision = _Precision(self.low_precision_ok)
        zero_objective = 0.5 * float(y @ y)  # the zero block's objective bounds the optimum
        for it in range(1, max_iter + 1):
            iterations = it
            mu_h = max(float((S * lam).sum()) / m_rows, 1e-300)
            grad_h, M = soc_barrier(u, beta, mu_h)
            W = lam / S
            M = M + self._weighted_grams(W)
            base = self.bt(r) + grad_h  # gradient of the smooth part without the barrier
            try:
                solve = precision.factor(self, M, mu_h)
            except ValueError:  # numerically singular: the iterates are as accurate as this precision allows
                break
            du, dS, dlam = self._direction(solve, base, S, lam, W)
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
            precision.watch(cert.relative_gap)
            if best is None or cert.relative_gap < best[0].relative_gap:
                best = (cert, u.clone(), lam_best.clone())
            if _finished(cert, tol, max(alpha, alpha_d), zero_objective):
                break
        return best, iterations

    def _direction(self, solve, base: Tensor, S: Tensor, lam: Tensor, W: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Steps ``du, dS, dlam``: Mehrotra's predictor (affine scaling) and corrector, then
        :meth:`_centrality_correctors`; ``solve`` is the factored Newton system."""
        m_rows = S.numel()
        du = solve(-(base))
        dS = self.slacks(self.xu(du))
        dlam = -lam - W * dS
        a_p, a_d = _max_step(S, dS), _max_step(lam, dlam)
        mu_now = float((S * lam).sum()) / m_rows
        mu_aff = float(((S + a_p * dS) * (lam + a_d * dlam)).sum()) / m_rows
        sigma = min(1.0, max((mu_aff / max(mu_now, 1e-300)) ** 3, _MIN_CENTERING))
        comp = (sigma * mu_now - dS * dlam) / S
        du = solve(-(base - self.ct(comp)))
        dS = self.slacks(self.xu(du))
        dlam = comp - lam - W * dS
        return self._centrality_correctors(solve, base, S, lam, W, comp, du, dS, dlam, sigma * mu_now)

    def _centrality_correctors(self, solve, base: Tensor, S: Tensor, lam: Tensor, W: Tensor, comp: Tensor,
                               du: Tensor, dS: Tensor, dlam: Tensor, target: float) -> tuple[Tensor, Tensor, Tensor]:
        """Gondzio's correctors: aim at a longer step, push the trial products into ``[0.1, 10] target``
        (``target = sigma mu``), one extra solve each; kept while they lengthen the step."""
        a_p, a_d = min(_max_step(S, dS), 1.0), min(_max_step(lam, dlam), 1.0)
        for _ in range(_CORRECTORS):
            if min(a_p, a_d) >= 1.0:
                break
            tp, td = min(1.0, 1.5 * a_p + 0.1), min(1.0, 1.5 * a_d + 0.1)
            prod = (S + tp * dS) * (lam + td * dlam)
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
        return du, dS, dlam

    def _final_polish(self, cert: Certificate, u: Tensor, lam: Tensor, y: Tensor, beta: float, tol: float):
        """The best iterate's certificate, ``u`` and multipliers; when it stopped short of ``tol`` the multipliers
        may be what fails, so the best ones for this point are tried (the active rows, then every row)."""
        if cert.relative_gap > tol:
            r = self.predict(self.xu(u)) - y
            cert, lam = self._polished(u, lam, y, r, beta, cert)
            if cert.relative_gap > tol:
                cert, lam = self._polished(u, lam, y, r, beta, cert, all_rows=True)
        return cert, u, lam

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
            # one GEMM per group: for large n d^2 the row products above are memory-bound (benchmarks/bench_relu.py's
            # block, n = 1e4, d = 200, 32 groups: 2.2 s -> 0.86 s per call; n = 1e5, d = 275, 16 groups: 31 s -> 10 s)
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
            Ls = cholesky(Mv + Mw)
            Ainv = Mv @ torch.cholesky_solve(Mw, Ls)
            Ainv = 0.5 * (Ainv + Ainv.transpose(1, 2))
            H = self.BtB.to(low, copy=True)
            torch.diagonal(H.view(P, d, P, d), dim1=0, dim2=2).add_(Ainv.permute(1, 2, 0).to(low))
            L = cholesky(H)

            def solve(rhs: Tensor) -> Tensor:
                sv = torch.cholesky_solve(rhs[:P, :, None], Ls)
                sw = torch.cholesky_solve(rhs[P:, :, None], Ls)
                rhs_p = (torch.bmm(Mw, sv) - torch.bmm(Mv, sw)).reshape(-1, 1)
                dp = torch.cholesky_solve(rhs_p.to(low), L).to(rhs.dtype).view(P, d)
                dv = torch.cholesky_solve((rhs[:P] + rhs[P:] + torch.bmm(Mw, dp[:, :, None])[:, :, 0])[:, :, None],
                                          Ls)[:, :, 0]
                return torch.cat([dv, dv - dp])

            return solve
        Lm = cholesky(M)  # (G, d, d)
        Minv = torch.cholesky_inverse(Lm)
        R = cholesky(Minv[:P] + Minv[P:])  # R_i R_i^T = A_i
        F = self.X.to(low) @ R.transpose(1, 2).reshape(P * d, d).T.to(low)  # (n, P d): X R_i side by side
        F.view(self.n, P, d).mul_(self.D[:, :, None].to(low))
        K = lower_gram(F)
        del F
        K.diagonal().add_(1.0)
        LK = cholesky(K)

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
        return certify_outputs(U.reshape(2 * P, c, -1), theta, Y, direction.reshape(2 * P, c, -1), beta, violation)



def _finished(cert: Certificate, tol: float, step: float, zero_objective: float) -> bool:
    """Whether to stop after this iterate: certified to ``tol``; non-finite; steps that no longer move
    (``step``, the longer of the primal and dual ones); or far above the zero block's objective (diverging)."""
    return (cert.relative_gap <= tol or not (math.isfinite(cert.primal) and math.isfinite(cert.dual))
            or step < 1e-12 or 0 < zero_objective < cert.primal / _DIVERGED)


def _well_conditioned(X: Tensor) -> bool:
    """Whether float32 Newton systems may be tried on patches ``X``: ``cond(X^T X) <= _LOW_PRECISION_MAX_COND``
    (assumed for ``d > _LOW_PRECISION_COND_MAX_D``, where the stall guard alone decides)."""
    if X.shape[1] > _LOW_PRECISION_COND_MAX_D:
        return True
    eig = torch.linalg.eigvalsh(X.T @ X)
    return bool(eig[0] > 0) and float(eig[-1] / eig[0]) <= _LOW_PRECISION_MAX_COND


def lower_gram(F: Tensor, blocks: int = 8) -> Tensor:
    """The lower triangle of ``F F^T`` (diagonal blocks in full, zeros above them), by row blocks:
    (blocks + 1) / (2 blocks) of the products of ``F @ F.T``. Cholesky reads only the lower triangle."""
    n = F.shape[0]
    K = torch.zeros(n, n, dtype=F.dtype, device=F.device)
    edges = [round(n * b / blocks) for b in range(blocks + 1)]
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi > lo:
            K[lo:hi, :hi] = F[lo:hi] @ F[:hi].T
    return K


def _max_step(x: Tensor, dx: Tensor) -> float:
    """Largest ``a <= 1 / _TO_BOUNDARY`` with ``x + a dx >= 0`` (``x > 0``)."""
    q = float((dx / x).min())  # one pass: the step is 1 / max(-dx / x) where any dx < 0
    if math.isnan(q):
        return 0.0
    return min(-1.0 / q, 1.0 / _TO_BOUNDARY) if q < 0 else 1.0 / _TO_BOUNDARY
