"""The generic solvers on known-answer problems, independent of images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from solvers.fista import fista
from solvers.group_lasso import solve_cone_group_lasso, solve_group_lasso
from solvers.groups import group_norms, group_soft_threshold, scaled_dual_value
from solvers.operators import MatrixOperator, StackedOperator, operator_norm_sq
from solvers.pdhg import solve_cone_group_lasso_pdhg
from solvers.reference import arrangement_matrices, solve_arrangement_program, solve_group_lasso_cvxpy
from solvers.report import ConvergenceWarning, SolveReport, SolverError, Status


def test_group_soft_threshold_formula():
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [-6.0, 8.0]], dtype=torch.float64)
    out = group_soft_threshold(v, 1.0)
    torch.testing.assert_close(out[0], torch.tensor([3.0, 4.0], dtype=torch.float64) * (1 - 1 / 5))
    assert torch.count_nonzero(out[1]) == 0 and torch.count_nonzero(out[2]) == 0
    torch.testing.assert_close(group_norms(out), torch.tensor([4.0, 0.0, 0.0, 9.0], dtype=torch.float64))
    # groups of any trailing shape
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64)
    flat = group_soft_threshold(w.reshape(5, -1), 0.7).reshape(w.shape)
    torch.testing.assert_close(group_soft_threshold(w, 0.7), flat)


def test_scaled_dual_value_is_feasible_and_optimal_on_the_ray():
    dual, s = scaled_dual_value(theta_dot_y=10.0, theta_sq=4.0, max_dual_norm=5.0, beta=1.0)
    assert s == pytest.approx(0.2)  # clipped by feasibility: s * 5 <= 1
    assert dual == pytest.approx(0.2 * 10 - 0.5 * 0.04 * 4)
    dual, s = scaled_dual_value(theta_dot_y=1.0, theta_sq=4.0, max_dual_norm=0.1, beta=1.0)
    assert s == pytest.approx(0.25) and dual == pytest.approx(0.125)  # unconstrained maximiser


@pytest.mark.parametrize("bad", ["max_dual_norm", "theta_dot_y", "theta_sq"])
def test_scaled_dual_value_of_a_non_finite_dual_point_bounds_nothing(bad):
    # a NaN constraint norm must not read as slack (NaN > 0 is False): that would certify any primal
    values = dict(theta_dot_y=10.0, theta_sq=4.0, max_dual_norm=5.0, beta=1.0)
    values[bad] = float("nan")
    dual, s = scaled_dual_value(**values)
    assert dual == float("-inf") and s == 0.0


def _dense_problem(seed: int):
    rng = np.random.default_rng(seed)
    n, d, P, c = 50, 5, 4, 2
    X = rng.standard_normal((n, d))
    D = X @ rng.standard_normal((d, P)) >= 0
    Y = np.maximum(X @ rng.standard_normal((d, 3)), 0) @ rng.standard_normal((3, c)) + 0.1 * rng.standard_normal((n, c))
    return X, D, Y


@pytest.mark.parametrize("seed", [0, 1])
def test_fista_group_lasso_matches_cvxpy(seed):
    X, D, Y = _dense_problem(seed)
    A, _, var_shape = arrangement_matrices(X, D, 2, "gated")
    y = torch.from_numpy(Y.T.reshape(-1).copy())
    ref = solve_group_lasso_cvxpy(A, y.numpy(), 0.7, var_shape)
    v, rep = solve_group_lasso(MatrixOperator(torch.from_numpy(A.toarray()), var_shape), y, 0.7,
                               torch.zeros(var_shape, dtype=torch.float64), tol=1e-8)
    assert rep.status is Status.OPTIMAL and rep.solver == "fista"
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-6)
    assert rep.gap >= rep.primal - ref.report.primal - 1e-9 * ref.report.primal
    assert rep.relative_gap <= 1e-8
    np.testing.assert_allclose(v.numpy(), ref.x, atol=1e-3 * np.abs(ref.x).max())


def _interpolating_problem(n: int = 120, d: int = 8, P: int = 40):
    """More weights (P d) than samples: the regime where FISTA's certificate lags its objective."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((n, d))
    D = X @ rng.standard_normal((d, P)) >= 0
    y = np.maximum(X @ rng.standard_normal((d, 5)), 0) @ rng.standard_normal(5) + 0.1 * rng.standard_normal(n)
    A, _, var_shape = arrangement_matrices(X, D, 1, "gated")
    return MatrixOperator(torch.from_numpy(A.toarray()), var_shape), torch.from_numpy(y), var_shape


def test_newton_steps_certify_in_fewer_operator_calls_and_match_fista():
    op, y, var_shape = _interpolating_problem()
    beta = 0.05
    ref = solve_group_lasso_cvxpy(op.matrix.numpy(), y.numpy(), beta, var_shape)
    v0 = torch.zeros(var_shape, dtype=torch.float64)
    v_n, with_newton = solve_group_lasso(op, y, beta, v0, tol=1e-8, max_iter=50_000)
    v_f, plain = solve_group_lasso(op, y, beta, v0, tol=1e-8, max_iter=50_000, newton=False)
    assert with_newton.status is Status.OPTIMAL and plain.status is Status.OPTIMAL
    assert "Newton-CG steps" in with_newton.message and "Newton" not in plain.message
    # same certified optimum, at least 2x fewer forward/adjoint pairs (FISTA + CG iterations; 4541 vs 10920 here)
    assert with_newton.primal == pytest.approx(plain.primal, rel=1e-7)
    assert with_newton.primal == pytest.approx(ref.report.primal, rel=1e-6)
    assert with_newton.iterations * 2 <= plain.iterations
    torch.testing.assert_close(v_n, v_f, atol=1e-3 * float(v_f.abs().max()), rtol=0)


def test_newton_step_declines_without_active_groups():
    from solvers.newton import newton_step

    op, y, var_shape = _interpolating_problem()
    v = torch.zeros(var_shape, dtype=torch.float64)
    call = (lambda u: (op.forward(u),), lambda parts: op.adjoint(parts[0]),
            lambda parts: 0.5 * float(((parts[0] - y) ** 2).sum()), lambda parts: (parts[0] - y,), lambda at, d: d)
    assert newton_step(*call, 0.05, v, (op.forward(v),)) is None


def test_max_iter_status_survives_a_newton_pause():
    op, y, var_shape = _interpolating_problem()
    with pytest.warns(ConvergenceWarning):
        _, rep = solve_group_lasso(op, y, 0.05, torch.zeros(var_shape, dtype=torch.float64), tol=1e-12,
                                   max_iter=40)
    assert rep.status is Status.MAX_ITER and rep.iterations <= 40 + 1


@pytest.mark.parametrize("solver,seed", [(solve_cone_group_lasso, 1), (solve_cone_group_lasso, 2),
                                         (solve_cone_group_lasso_pdhg, 0), (solve_cone_group_lasso_pdhg, 1),
                                         (solve_cone_group_lasso_pdhg, 2)])
def test_cone_solvers_match_cvxpy(solver, seed):
    X, D, Y = _dense_problem(seed)
    ref = solve_arrangement_program(X, D, Y, 1.0, "relu")
    A, C, var_shape = arrangement_matrices(X, D, 2, "relu")
    op = StackedOperator(MatrixOperator(torch.from_numpy(A.toarray()), var_shape),
                         MatrixOperator(torch.from_numpy(C.toarray()), var_shape))
    y = torch.from_numpy(Y.T.reshape(-1).copy())
    v, lam, rep = solver(op, y, 1.0, torch.zeros(var_shape, dtype=torch.float64), tol=1e-6)
    assert rep.status is Status.OPTIMAL
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-5)
    assert rep.max_violation <= 1e-6
    assert float(lam.min()) >= 0  # multipliers of an inequality are non-negative
    # KKT: complementary slackness holds approximately
    cv = torch.from_numpy(C.toarray()) @ v.reshape(-1)
    assert float((lam * cv.clamp(min=0)).sum()) <= 1e-3 * rep.primal


def test_reference_certifies_itself_and_validates():
    X, D, Y = _dense_problem(3)
    for activation in ("gated", "relu"):
        ref = solve_arrangement_program(X, D, Y, 0.5, activation)
        assert ref.report.status is Status.OPTIMAL
        assert 0 <= ref.report.relative_gap <= 1e-6
        assert ref.report.solver == "cvxpy:CLARABEL"
    with pytest.raises(ValueError, match="'beta' parameter must be a finite float > 0"):
        solve_arrangement_program(X, D, Y, 0.0, "gated")
    with pytest.raises(ValueError, match="'activation' parameter must be 'relu' or 'gated'"):
        solve_arrangement_program(X, D, Y, 0.5, "sigmoid")
    with pytest.raises(ValueError, match=r"'Y' parameter must have shape \(50, c\)"):
        solve_arrangement_program(X, D, Y[:10], 0.5, "gated")


def test_reference_scs_fallback_solver():
    X, D, Y = _dense_problem(4)
    clarabel = solve_arrangement_program(X, D, Y, 0.5, "gated")
    scs = solve_arrangement_program(X, D, Y, 0.5, "gated", solver="SCS", fallback=None)
    assert scs.report.solver == "cvxpy:SCS"
    assert scs.report.primal == pytest.approx(clarabel.report.primal, rel=1e-3)


def test_reference_failure_raises_solver_error():
    X, D, Y = _dense_problem(4)
    with pytest.raises(SolverError, match="NOT_A_SOLVER"):
        solve_arrangement_program(X, D, Y, 0.5, "gated", solver="NOT_A_SOLVER", fallback=None)


def test_power_iteration_estimates_operator_norm():
    a = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    est = operator_norm_sq(lambda v: a @ v, lambda r: a.T @ r, torch.zeros(20, dtype=torch.float64), iterations=200)
    assert est == pytest.approx(float(torch.linalg.matrix_norm(a, ord=2)) ** 2, rel=1e-6)


def test_fista_backtracks_from_a_bad_step_constant():
    a = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    op = MatrixOperator(a, (10, 2))
    v_good, rep_good = solve_group_lasso(op, y, 0.5, torch.zeros(10, 2, dtype=torch.float64), tol=1e-9)
    v_bad, rep_bad = solve_group_lasso(op, y, 0.5, torch.zeros(10, 2, dtype=torch.float64), tol=1e-9, lipschitz=1e-3)
    assert rep_bad.status is Status.OPTIMAL
    assert rep_bad.primal == pytest.approx(rep_good.primal, rel=1e-8)


def test_diverging_operator_is_reported():
    def forward(v):
        return (v * float("nan"),)

    state = fista(forward, lambda p: p[0], lambda p: float(p[0].sum()), lambda p: (p[0],), 1.0,
                  torch.ones(3, 2), (torch.ones(3, 2),), 1.0, max_iter=10)
    assert state.reason == "diverged"


def test_status_and_report_vocabulary():
    assert [s.value for s in Status] == ["optimal", "inaccurate", "max_iter", "diverged"]
    rep = SolveReport("x", Status.MAX_ITER, 1.0, float("-inf"), float("inf"), float("inf"), 0.0, 3, 0.1)
    data = rep.to_dict()
    assert data["status"] == "max_iter" and data["dual"] is None
    json.dumps(data)
    with pytest.raises(Exception):
        rep.primal = 2.0  # frozen
