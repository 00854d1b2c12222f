"""The interior-point exact-ReLU solver: same optimum as cvxpy, certified, both Newton systems, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import convexrecon as cr
from solvers.interior import fits_interior_point, solve_relu_program_ipm
from solvers.reference import solve_arrangement_program
from solvers.report import Status

from .problems import CASES, make_problem, reference

RELU_CASES = [case for case in CASES if case[3] == "relu"]


@pytest.mark.parametrize("seed,c_out,k,activation", RELU_CASES)
def test_fit_layer_interior_point_matches_cvxpy(seed, c_out, k, activation):
    p, ref = reference(seed, c_out, k, activation)
    block = cr.fit_layer(p.inputs, p.targets, kernel_size=k, gates=p.gates, beta=p.beta, activation="relu",
                         relu_method="interior_point", dtype=torch.float64, tol=1e-8)
    rep = block.report
    assert rep.status is Status.OPTIMAL and rep.relative_gap <= 1e-8
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-7)
    assert rep.max_violation <= 1e-10
    # the converted ReLU network has the convex objective (the iterates are strictly feasible)
    assert block.objective(p.inputs, p.targets) == pytest.approx(rep.primal, rel=1e-7)


def _dense(seed: int, n: int, d: int, P: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal((d, 3)), 0) @ rng.standard_normal(3) + 0.1 * rng.standard_normal(n)
    G = rng.standard_normal((P, d))
    return X, (X @ G.T >= 0), y, G


@pytest.mark.parametrize("system", ["direct", "woodbury"])
def test_both_newton_systems_reach_the_cvxpy_optimum(system):
    X, D, y, G = _dense(3, n=60, d=4, P=6)  # 2 P d = 48 < n: "auto" would pick direct
    beta = 0.3
    ref = solve_arrangement_program(X, D.astype(float), y[:, None], beta, "relu")
    U, lam, rep = solve_relu_program_ipm(torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(y), beta,
                                         gates=torch.from_numpy(G), tol=1e-9, system=system)
    assert rep.status is Status.OPTIMAL
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-7)
    assert rep.dual <= ref.report.primal * (1 + 1e-9)  # a valid lower bound
    assert U.shape == (2, 6, 1, 4) and lam.shape == (60, 2, 6, 1) and float(lam.min()) >= 0
    assert (system == "direct") == ("direct" in rep.message)


def test_zero_groups_come_out_exactly_zero():
    """With a large beta most groups vanish at the optimum; the interior iterates are cleaned to exact zeros."""
    X, D, y, G = _dense(4, n=80, d=5, P=8)
    Xt, Dt, yt = torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(y)
    _, _, small = solve_relu_program_ipm(Xt, Dt, yt, 0.1, gates=torch.from_numpy(G), tol=1e-8)
    beta = 0.5 * max(np.linalg.norm(X.T @ (D[:, i] * y)) for i in range(8))
    U, _, rep = solve_relu_program_ipm(Xt, Dt, yt, beta, gates=torch.from_numpy(G), tol=1e-8)
    ref = solve_arrangement_program(X, D.astype(float), y[:, None], beta, "relu")
    norms = U.reshape(16, 5).norm(dim=1)
    assert rep.status is Status.OPTIMAL and small.status is Status.OPTIMAL
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-7)
    assert 0 < int((norms > 0).sum()) < 16 and float(norms[norms > 0].min()) > 1e-6 * float(norms.max())


def test_interior_point_max_iter_is_reported():
    X, D, y, G = _dense(5, n=60, d=4, P=6)
    with pytest.warns(cr.ConvergenceWarning):
        _, _, rep = solve_relu_program_ipm(torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(y), 0.3,
                                           gates=torch.from_numpy(G), tol=1e-12, max_iter=3)
    assert rep.status is Status.MAX_ITER and rep.relative_gap > 1e-12


@pytest.mark.parametrize("args,message", [
    (dict(beta=0.0), "'beta' parameter must be a finite float > 0"),
    (dict(D=np.ones((59, 6), bool)), "must share n"),
    (dict(y=np.full(60, np.nan)), "finite"),
    (dict(system="qr"), "'system' parameter must be one of"),
])
def test_interior_point_rejects(args, message):
    X, D, y, G = _dense(6, n=60, d=4, P=6)
    kwargs = dict(X=X, D=D, Y=y, beta=0.3)
    kwargs.update({("Y" if k == "y" else k): v for k, v in args.items()})
    system = kwargs.pop("system", "auto")
    with pytest.raises(ValueError, match=message):
        solve_relu_program_ipm(kwargs["X"], kwargs["D"], kwargs["Y"], kwargs["beta"], system=system)


def test_fit_layer_interior_point_refuses_what_it_cannot_solve():
    p = make_problem(7, c_out=1, k=3, activation="relu")
    common = dict(kernel_size=3, gates=p.gates, beta=p.beta, activation="relu")
    with pytest.raises(ValueError, match="relu_method"):
        cr.fit_layer(p.inputs, p.targets, relu_method="newton", **common)
    with pytest.raises(ValueError, match="in-memory inputs"):
        cr.fit_layer([p.inputs[:1], p.inputs[1:]], p.targets, relu_method="interior_point", **common)
    big = torch.randn(1, 64, 120, 110, dtype=torch.float64)  # n = 13,200 pixels, 2 P d = 2 * 64 * 576 unknowns
    with pytest.raises(ValueError, match="above its limit"):
        cr.fit_layer(big, big[:, :1], kernel_size=3, num_arrangements=64, beta=1.0, activation="relu",
                     relu_method="interior_point")


def test_size_limits():
    # fits_interior_point(n, P, d): v and w are eliminated per gate, so the direct system has P d unknowns
    assert fits_interior_point(2000, 100, 50)  # the dense benchmark: Woodbury on 2000 x 2000 (P d = 5000)
    assert fits_interior_point(10_000, 8, 18)  # a small conv block: direct on 144 x 144
    assert fits_interior_point(20_000, 100, 50)  # direct on 5,000 unknowns, 4e6 cone rows
    assert fits_interior_point(15_000, 100, 100)  # direct on 10,000 (2 P d = 20,000 would not fit)
    assert not fits_interior_point(11_000, 250, 50)  # Woodbury on 11,000, but a factor of 1.4e8 numbers > 2^27
    assert not fits_interior_point(200_000, 100, 50)  # direct on 5,000, but 4e7 cone rows > 2^25
    assert not fits_interior_point(13_000, 64, 576)  # system 13,000


@pytest.mark.parametrize("system", ["direct", "woodbury"])
def test_factor_solves_the_newton_system_exactly(system):
    """Both reduced solves (v, w eliminated per gate: a P d system, or its n x n Woodbury form with the
    lower-triangle Gram) equal a dense solve of B^T B + blockdiag(M); in float32 they agree to its precision."""
    from solvers.interior_relu import ReluInteriorPoint

    X, D, _, G = _dense(5, n=60, d=4, P=10)  # P d = 40 < n = 60 < 2 P d = 80
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D).double()
    problem = ReluInteriorPoint(Xt, Dt, torch.from_numpy(G), system=system)
    gen = torch.Generator().manual_seed(0)
    A = torch.randn(20, 4, 4, generator=gen, dtype=torch.float64)
    scale = torch.logspace(-3, 3, 20, dtype=torch.float64)[:, None, None]  # v and w blocks of very unequal size
    M0 = A @ A.transpose(1, 2) + 0.1 * torch.eye(4, dtype=torch.float64)
    B = (Dt[:, :, None] * Xt[:, None, :])
    B = torch.cat([B, -B], dim=1).reshape(60, 80)
    rhs = torch.randn(20, 4, generator=gen, dtype=torch.float64)
    for M in (M0, scale * M0):
        expected = torch.linalg.solve(B.T @ B + torch.block_diag(*M), rhs.reshape(-1)).view(20, 4)
        assert torch.allclose(problem._factor(M)(rhs), expected, rtol=1e-9, atol=1e-11)
    expected = torch.linalg.solve(B.T @ B + torch.block_diag(*M0), rhs.reshape(-1)).view(20, 4)
    low = problem._factor(M0, low_precision=True)(rhs)
    assert low.dtype == torch.float64
    error = float((low - expected).norm() / expected.norm())
    assert 1e-12 < error < 1e-4  # float32 was used (not exact), and its answer is still the solution


@pytest.mark.parametrize("cache, d", [(True, 70), (False, 40), (False, 70)], ids=["cached", "row-products", "gemm"])
def test_weighted_grams_agree_whichever_way_they_are_formed(monkeypatch, cache, d):
    """X^T diag(W_g) X for every group: the cached row products (small n d^2), chunked row products (d < 64) and
    one GEMM per group (d >= 64) all equal the einsum."""
    from solvers import interior_relu

    if not cache:
        monkeypatch.setattr(interior_relu, "_CACHED_PRODUCTS", 0)
    n = 300
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    gates = torch.randn(3, d, generator=gen, dtype=torch.float64)
    problem = interior_relu.ReluInteriorPoint(X, (X @ gates.T >= 0).double(), gates)
    W = torch.rand(n, problem.G, generator=gen, dtype=torch.float64)
    got = problem._weighted_grams(W)
    assert (problem._xx_upper is not None) == cache
    assert (problem._xt is not None) == (not cache and d >= interior_relu._GEMM_GRAMS_FROM_D)
    torch.testing.assert_close(got, torch.einsum("na,ng,nb->gab", X, W, X), rtol=1e-12, atol=1e-10)


def test_float32_directions_that_stop_closing_the_gap_give_way_to_float64(monkeypatch):
    """On ill-conditioned patches (an unrolled stage's near-duplicate CS channels) float32 Newton directions can stall
    the interior point at a gap of 0.15-0.3 (measured). Here the float32 solves are crippled on purpose (their
    directions shrunk 10x): the guard must switch to float64 after a few stalled iterations and certify; without
    it the run ends uncertified."""
    from solvers import interior_relu

    X, D, y, G = _dense(3, n=300, d=6, P=8)
    X, D, Y, G = torch.from_numpy(X), torch.from_numpy(D).double(), torch.from_numpy(y)[:, None], torch.from_numpy(G)
    factor = interior_relu.ReluInteriorPoint._factor
    calls = []

    def crippled(self, M, low_precision=False):
        solve = factor(self, M, low_precision=low_precision)
        calls.append(low_precision)
        return (lambda rhs: 0.1 * solve(rhs)) if low_precision else solve

    monkeypatch.setattr(interior_relu.ReluInteriorPoint, "_factor", crippled)
    monkeypatch.setattr(interior_relu, "_LOW_PRECISION_SIZE", 1)  # float32 systems whatever their size
    monkeypatch.setattr(interior_relu, "_LOW_PRECISION_WATCH", math.inf)  # watched from the first iteration
    _, _, guarded = solve_relu_program_ipm(X, D, Y, 0.5, gates=G, tol=1e-6, max_iter=60)
    assert guarded.status is Status.OPTIMAL and guarded.relative_gap <= 1e-6
    first64 = calls.index(False)
    assert first64 <= interior_relu._LOW_PRECISION_PATIENCE + 1 and not any(calls[first64:])  # float64 ever after
    calls.clear()
    monkeypatch.setattr(interior_relu, "_LOW_PRECISION_PATIENCE", 10**9)
    from solvers.report import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="max_iter"):
        _, _, unguarded = solve_relu_program_ipm(X, D, Y, 0.5, gates=G, tol=1e-6, max_iter=60)
    assert unguarded.status is not Status.OPTIMAL and unguarded.relative_gap > 1e-2


def test_float32_newton_systems_only_on_well_conditioned_patches(monkeypatch):
    """float32 keeps ~7 digits: patches with cond(X^T X) above 1e6 (near-duplicate channels) never get float32
    Newton systems; well-conditioned ones do, once the system is large enough."""
    from solvers import interior_relu

    monkeypatch.setattr(interior_relu, "_LOW_PRECISION_SIZE", 1)
    X, D, _, G = _dense(3, n=300, d=6, P=8)
    X, D, G = torch.from_numpy(X), torch.from_numpy(D).double(), torch.from_numpy(G)
    assert interior_relu.ReluInteriorPoint(X, D, G).low_precision_ok
    twin = X.clone()
    twin[:, 1] = twin[:, 0] + 1e-5 * twin[:, 1]  # two nearly equal columns: cond(X^T X) ~ 1e10
    assert not interior_relu.ReluInteriorPoint(twin, (twin @ G.T >= 0).double(), G).low_precision_ok
    monkeypatch.setattr(interior_relu, "_LOW_PRECISION_SIZE", 10**9)
    assert not interior_relu.ReluInteriorPoint(X, D, G).low_precision_ok  # small systems stay float64 anyway


def _unfinished_point(beta: float = 0.2):
    """An interior-point iterate after 6 of the iterations it needs (n = 50, d = 6, P = 5), its problem, multipliers,
    residual and the cvxpy optimum."""
    from solvers import interior_relu
    from solvers.report import ConvergenceWarning

    X, D, y, G = _dense(6, n=50, d=6, P=5)
    ref = solve_arrangement_program(X, D.astype(float), y[:, None], beta, "relu")
    Xt, Dt, yt = torch.from_numpy(X), torch.from_numpy(D).double(), torch.from_numpy(y)
    with pytest.warns(ConvergenceWarning):
        U, lam, _ = solve_relu_program_ipm(Xt, Dt, yt, beta, gates=torch.from_numpy(G), tol=1e-12, max_iter=6)
    problem = interior_relu.ReluInteriorPoint(Xt, Dt, torch.from_numpy(G))
    u = U[:, :, 0].reshape(10, 6)
    r = problem.predict(problem.xu(u)) - yt
    return problem, u, lam[:, :, :, 0].reshape(50, 10), yt, r, ref.report.primal


def test_polished_multipliers_give_a_valid_and_no_worse_certificate():
    """NNLS multipliers for a fixed point: the dual bound stays below the optimum and the gap does not grow."""
    beta = 0.2
    problem, u, lam, yt, r, optimum = _unfinished_point(beta)
    for lam_u in (lam, torch.zeros(50, 10, dtype=torch.float64)):
        raw = problem._certificate(u, lam_u, yt, r, beta)
        cert, polished = problem._polished(u, lam_u, yt, r, beta, raw)
        assert cert.relative_gap <= raw.relative_gap
    assert cert.relative_gap < 0.1 * raw.relative_gap  # from zero multipliers the polish is a large gain
    assert float(polished.min()) >= 0
    assert cert.dual <= optimum * (1 + 1e-9)
    assert cert.primal >= optimum * (1 - 1e-9)


def test_last_polish_offers_at_most_its_cap_of_rows_and_stays_a_bound(monkeypatch):
    """The give-up polish (all rows) takes the largest-weight rows up to its cap: a valid bound, no worse."""
    import scipy.optimize

    from solvers import interior_relu

    beta = 0.2
    problem, u, lam_u, yt, r, optimum = _unfinished_point(beta)
    raw = problem._certificate(u, lam_u, yt, r, beta)
    offered, real = [], scipy.optimize.nnls

    def counting(A, b, **kw):
        offered.append(A.shape[1])
        return real(A, b, **kw)

    monkeypatch.setattr(scipy.optimize, "nnls", counting)
    problem._polished(u, lam_u, yt, r, beta, raw, all_rows=True)
    assert offered == [50] * 10  # below the cap (32 d = 192): every row of every group
    offered.clear()
    monkeypatch.setattr(interior_relu, "_POLISH_ALL_MAX_ROWS", 1)  # at most d = 6 of the 50 rows per group
    cert, polished = problem._polished(u, lam_u, yt, r, beta, raw, all_rows=True)
    assert offered == [6] * 10
    assert cert.relative_gap <= raw.relative_gap
    assert float(polished.min()) >= 0 and cert.dual <= optimum * (1 + 1e-9)


GATED_CASES = [case for case in CASES if case[3] == "gated"]


@pytest.mark.parametrize("seed,c_out,k,activation", GATED_CASES)
def test_fit_layer_gated_interior_point_matches_cvxpy(seed, c_out, k, activation):
    """The gated barrier-Newton path: the cvxpy optimum, certified to 1e-8, a block with that objective."""
    p, ref = reference(seed, c_out, k, activation)
    block = cr.fit_layer(p.inputs, p.targets, kernel_size=k, gates=p.gates, beta=p.beta, activation="gated",
                         gated_method="interior_point", dtype=torch.float64, tol=1e-8)
    rep = block.report
    assert rep.status is Status.OPTIMAL and rep.relative_gap <= 1e-8
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-7)
    assert rep.dual <= ref.report.primal * (1 + 1e-9)
    assert block.objective(p.inputs, p.targets) == pytest.approx(rep.primal, rel=1e-7)


def test_gated_interior_point_zero_groups_and_bounds():
    """Large beta: most groups are exactly zero; every certificate is a valid bound on the cvxpy optimum."""
    from solvers.interior import solve_gated_program_ipm

    X, D, y, _ = _dense(8, n=150, d=5, P=10)
    beta_max = max(np.linalg.norm(X.T @ (D[:, i] * y)) for i in range(10))
    for beta in (0.02 * beta_max, 0.6 * beta_max):
        ref = solve_arrangement_program(X, D.astype(float), y[:, None], beta, "gated")
        U, rep = solve_gated_program_ipm(torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(y), beta,
                                         tol=1e-9)
        norms = U.reshape(10, 5).norm(dim=1)
        assert rep.status is Status.OPTIMAL and U.shape == (10, 1, 5)
        assert rep.primal == pytest.approx(ref.report.primal, rel=1e-7)
        assert rep.dual <= ref.report.primal * (1 + 1e-9)
    assert 0 < int((norms > 0).sum()) < 10  # at 0.6 beta_max some groups vanish, exactly
    with pytest.warns(cr.ConvergenceWarning):
        _, rep = solve_gated_program_ipm(torch.from_numpy(X), torch.from_numpy(D), torch.from_numpy(y), 1.0,
                                         tol=1e-12, max_iter=3)
    assert rep.status is Status.MAX_ITER
    with pytest.raises(ValueError, match="P d unknowns"):
        solve_gated_program_ipm(torch.randn(20, 200), torch.ones(20, 61, dtype=torch.bool), torch.randn(20), 1.0)


def test_fit_layer_gated_interior_point_refuses_what_it_cannot_solve():
    p = make_problem(9, c_out=1, k=3, activation="gated")
    common = dict(kernel_size=3, gates=p.gates, beta=p.beta, activation="gated")
    with pytest.raises(ValueError, match="gated_method"):
        cr.fit_layer(p.inputs, p.targets, gated_method="newton", **common)
    with pytest.raises(ValueError, match="gated_method='fista'"):
        cr.fit_layer([p.inputs[:1], p.inputs[1:]], p.targets, gated_method="interior_point", **common)
    wide = torch.randn(1, 64, 12, 11, dtype=torch.float64)  # P d = 32 * 576 = 18,432 unknowns
    with pytest.raises(ValueError, match="12000 unknowns"):
        cr.fit_layer(wide, wide[:, :1], kernel_size=3, num_arrangements=32, beta=1.0, activation="gated",
                     gated_method="interior_point")


@pytest.mark.parametrize("activation", ["relu", "gated"])
def test_interior_point_with_a_zero_target_channel_matches_cvxpy(activation):
    """A target channel that is zero everywhere (e.g. real-valued targets' imaginary part): its groups are zero
    at the optimum. Both interior points skip it, since the zero block is optimal there: solving it, the gated one
    would meet a singular Newton system (mu = 0) and the exact-ReLU one would stall short of tol (max_iter at
    a relative gap of 4e-5)."""
    p = make_problem(5, c_out=2, k=3, activation=activation)
    targets = p.targets.clone()
    targets[:, 1] = 0
    method = {"relu_method": "interior_point"} if activation == "relu" else {"gated_method": "interior_point"}
    block = cr.fit_layer(p.inputs, targets, kernel_size=3, gates=p.gates, beta=p.beta, activation=activation,
                         dtype=torch.float64, tol=1e-7, **method)
    from convexrecon.block.arrangements import arrangement_masks, patch_problem

    X, D, Y = patch_problem(p.inputs, arrangement_masks(p.inputs, p.gates), targets, 3)
    ref = solve_arrangement_program(X, D, Y, p.beta, activation)
    assert block.report.status is Status.OPTIMAL and block.report.solver == "interior_point"
    assert block.report.primal == pytest.approx(ref.report.primal, rel=1e-5)
    assert torch.equal(block.second.weight[1], torch.zeros_like(block.second.weight[1]))  # channel 1 is zero
    zero = cr.fit_layer(p.inputs, torch.zeros_like(targets), kernel_size=3, gates=p.gates, beta=p.beta,
                        activation=activation, dtype=torch.float64, **method)
    assert zero.report.status is Status.OPTIMAL and zero.report.primal == 0.0


def test_size_limits_live_in_one_place(monkeypatch):
    """The checks and the messages read the limits from solvers.interior's constants."""
    from solvers import interior

    assert interior.fits_interior_point(10_000, 8, 18)
    monkeypatch.setattr(interior, "MAX_NEWTON_UNKNOWNS", 100)  # the direct system has P d = 144 unknowns
    assert not interior.fits_interior_point(10_000, 8, 18)
    assert not interior.fits_gated_interior_point(10_000, 8, 18)
    X, D, y, G = _dense(6, n=60, d=4, P=30)  # P d = 120 > n: the Woodbury system of n = 60 still fits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)  # two iterations: only that it runs matters
        solve_relu_program_ipm(X, D, y, 0.3, gates=G, max_iter=2, tol=0.5)
    with pytest.raises(ValueError, match=r"at most 100 unknowns \(P d = 120 with system='direct'\)"):
        solve_relu_program_ipm(X, D, y, 0.3, system="direct")
    with pytest.raises(ValueError, match="P d unknowns, at most 100"):
        interior.solve_gated_program_ipm(X, D, y, 0.3)
    p = make_problem(7, c_out=1, k=3, activation="gated")  # P d = 4 * 18 = 72 unknowns
    monkeypatch.setattr(interior, "MAX_ARRAY_NUMBERS", 2**5)  # the patch matrix has more than 32 numbers
    with pytest.raises(ValueError, match=r"its limits are 100 unknowns and 2\^5 numbers"):
        cr.fit_layer(p.inputs, p.targets, kernel_size=3, gates=p.gates, beta=p.beta, activation="gated",
                     gated_method="interior_point")


def test_data_gram_is_the_dense_b_transpose_b():
    from solvers.interior import data_gram

    X, D, _, _ = _dense(4, n=70, d=5, P=7)
    Xt, Dt = torch.from_numpy(X), torch.from_numpy(D).double()
    B = (Dt[:, :, None] * Xt[:, None, :]).reshape(70, 35)
    torch.testing.assert_close(data_gram(Xt, Dt), B.T @ B, rtol=1e-12, atol=1e-12)


def test_auto_stretches_the_newton_limit_only_where_memory_allows(monkeypatch):
    """A block above MAX_NEWTON_UNKNOWNS but within STRETCH_NEWTON_UNKNOWNS goes to the interior point when its
    dense matrices fit in half the available memory, to ADMM otherwise (and when no memory figure is readable)."""
    from convexrecon.block import dispatch, guard
    from convexrecon.block.options import FitOptions
    from convexrecon.block.problem import block_program
    from solvers import interior

    p = make_problem(7, c_out=1, k=3, activation="relu")
    n, P, d = dispatch._sizes(block_program(p.inputs, p.targets, gates=p.gates, kernel_size=3, activation="relu"))
    m = min(n, P * d)  # the Newton system: P d = 4 * 18 = 72 unknowns, or n by the Woodbury identity
    assert 50 < m <= 72
    copies = interior.NEWTON_MATRIX_COPIES
    assert interior.newton_memory_bytes(n, P, d) == 8 * (copies * m * m + (n * P * d if P * d > n else 0))
    monkeypatch.setattr(interior, "MAX_NEWTON_UNKNOWNS", 50)
    monkeypatch.setattr(interior, "STRETCH_NEWTON_UNKNOWNS", 100)
    options = FitOptions.of(None, kernel_size=3, activation="relu", dtype=torch.float64)
    program = block_program(p.inputs, p.targets, gates=p.gates, options=options)
    need = interior.newton_memory_bytes(n, P, d)
    for available, expected in ((2 * need, "interior_point"), (2 * need - 1, "admm"), (None, "admm")):
        monkeypatch.setattr(guard, "available_bytes", lambda device, a=available: (a, "test"))
        assert dispatch.choose_solver(options, program) == expected, available
    monkeypatch.setattr(guard, "available_bytes", lambda device: (2**30, "test"))
    block = cr.fit_layer(p.inputs, p.targets, kernel_size=3, gates=p.gates, beta=p.beta, activation="relu",
                         dtype=torch.float64, tol=1e-6)
    assert block.report.solver == "interior_point" and block.report.status is Status.OPTIMAL
    monkeypatch.setattr(interior, "STRETCH_NEWTON_UNKNOWNS", m - 1)  # beyond the stretch too
    assert dispatch.choose_solver(options, program) == "admm"
    with pytest.raises(ValueError, match=rf"above its limits \({m - 1} unknowns"):
        cr.fit_layer(p.inputs, p.targets, kernel_size=3, gates=p.gates, beta=p.beta, activation="relu",
                     relu_method="interior_point")
