"""The exact-ReLU warm start from the gated optimum (``relu_start="gated"``): feasible, recorded, and the same optimum.

Agreement is checked against cvxpy's solve of the same arrangement program (``tests/problems.py``), with the warm
start on and off, for ADMM and the interior point.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import convexrecon as cr
from convexrecon.block.arrangements import ArrangementConv
from convexrecon.block.problem import block_program
from convexrecon.block.warm_start import WarmStartedReport, split_gated
from solvers.group_lasso import solve_group_lasso
from solvers.interior import solve_relu_program_ipm
from solvers.report import Status

from .problems import reference
from .test_relu_robust import training_like_block


def _fit(p, **kw):
    return cr.fit_layer(p.inputs, p.targets, kernel_size=p.kernel_size, gates=p.gates, beta=p.beta,
                        activation="relu", dtype=torch.float64, tol=1e-6, **kw)


@pytest.mark.parametrize("method", ["admm", "interior_point"])
@pytest.mark.parametrize("start", ["cold", "gated"])
@pytest.mark.parametrize("seed,c_out,k", [(2, 1, 5), (3, 2, 5)])
def test_warm_and_cold_agree_with_cvxpy(seed, c_out, k, method, start):
    p, ref = reference(seed, c_out, k, "relu")
    block = _fit(p, relu_method=method, relu_start=start)
    rep, p_star = block.report, ref.report.primal
    assert rep.solver == method and rep.status is Status.OPTIMAL
    assert abs(rep.primal - p_star) <= 1e-4 * abs(p_star)
    assert rep.dual <= p_star + 1e-8 * abs(p_star)
    assert block.objective(p.inputs, p.targets) == pytest.approx(rep.primal, rel=1e-6)
    if start == "cold":
        assert not isinstance(rep, WarmStartedReport)
        return
    warm = rep.warm_start
    assert isinstance(rep, WarmStartedReport) and "started from the gated optimum" in rep.message
    assert warm.gated_solver == "fista" and warm.gated_status == "optimal" and warm.gated_iterations > 0
    assert warm.shifted > 0 and warm.scale > 0  # the split keeps groups: the solver starts from a nonzero point
    assert 0 < warm.gated_seconds <= warm.seconds <= rep.seconds
    assert rep.to_dict()["warm_start"]["gated_iterations"] == warm.gated_iterations


def test_warm_start_on_streamed_inputs_agrees_with_cvxpy():
    p, ref = reference(3, 2, 5, "relu")
    block = cr.fit_layer([p.inputs[:1], p.inputs[1:]], p.targets, kernel_size=p.kernel_size, gates=p.gates,
                         beta=p.beta, activation="relu", dtype=torch.float64, tol=1e-6, relu_start="gated")
    rep = block.report
    assert rep.solver == "admm" and rep.status is Status.OPTIMAL and isinstance(rep, WarmStartedReport)
    assert abs(rep.primal - ref.report.primal) <= 1e-4 * abs(ref.report.primal)
    assert rep.warm_start.shifted > 0  # the split keeps groups here: the solve really starts from it


def _gated_optimum(program, beta: float, tol: float = 1e-6) -> torch.Tensor:
    op = program.operator
    gated = ArrangementConv(op.x, op.masks, op.k, op.num_outputs, relu=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        u, _ = solve_group_lasso(gated, program.targets, beta, gated.zeros(), tol=tol)
    return u


@pytest.mark.parametrize("case", ["reference", "training_like"])
def test_the_split_is_feasible_and_its_objective_is_honest(case):
    if case == "reference":
        p, _ = reference(3, 2, 5, "relu")
        x, y, gates, k, beta = p.inputs, p.targets, p.gates, p.kernel_size, p.beta
    else:  # ReLU features: the gated neurons violate about half of their cone rows
        x, y, gates = training_like_block(0, num=1, height=12, width=11, num_gates=16)
        x, y, gates, k = x.double(), y.double(), gates.double(), 5
        beta = 3e-3 * cr.problem_beta_max(x, y, kernel_size=k, gates=gates)
    program = block_program(x, y, gates=gates, kernel_size=k, activation="relu", dtype=torch.float64)
    u = _gated_optimum(program, beta, 1e-6)
    # the gated optimum itself is not feasible for the exact program
    raw = torch.cat([u.reshape(-1), torch.zeros(u.numel(), dtype=u.dtype)]).reshape(program.operator.var_shape)
    assert float(program.operator.forward(raw)[1].min()) < 0
    v, shifted, dropped, scale, objective, (violated, ratio) = split_gated(program.operator, program.gates, u,
                                                                          program.targets, beta)
    assert 0 < violated < 1 and ratio > 0  # the gated groups violate some of their rows; shifts repair them
    pred, cone = program.operator.forward(v)
    assert float(cone.min()) >= -1e-10 * max(float(cone.abs().max()), 1e-300)  # both parts in their cones
    groups = v.shape[0]
    assert 0 <= shifted <= groups // 2 and 0 <= dropped <= groups // 2 and scale >= 0
    value = 0.5 * float(((pred - program.targets) ** 2).sum()) + beta * float(v.reshape(groups, -1).norm(dim=1).sum())
    assert objective == pytest.approx(value, rel=1e-9, abs=1e-12)
    assert objective <= 0.5 * float((program.targets ** 2).sum()) * (1 + 1e-12)  # never worse than the zero block


def test_warm_start_on_a_path_and_in_float32():
    p, ref = reference(2, 1, 5, "relu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        blocks = cr.fit_layer_path(p.inputs, p.targets, [p.beta, 2 * p.beta], kernel_size=p.kernel_size,
                                   gates=p.gates, activation="relu", relu_method="admm", relu_start="gated",
                                   tol=1e-4)
    assert [b.beta for b in blocks] == [p.beta, 2 * p.beta]
    assert all(isinstance(b.report, WarmStartedReport) and math.isfinite(b.report.primal) for b in blocks)
    assert abs(blocks[0].report.primal - ref.report.primal) <= blocks[0].report.gap + 1e-4 * ref.report.primal


def test_the_gated_solve_keeps_its_own_budget():
    """``max_iter`` is the exact solver's: a warm start from a truncated gated solve would start from a worse
    point and read as a warm start that does not help."""
    p, _ = reference(2, 1, 5, "relu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        block = _fit(p, relu_method="admm", relu_start="gated", max_iter=20)
    rep = block.report
    assert rep.iterations <= 20 and rep.status is Status.MAX_ITER
    assert rep.warm_start.gated_status == "optimal" and rep.warm_start.gated_iterations > 20


@pytest.mark.parametrize("value", ["warm", True, None, "Gated"])
def test_bad_relu_start_names_the_parameter(value):
    p, _ = reference(2, 1, 5, "relu")
    with pytest.raises(ValueError, match="'relu_start' parameter must be one of 'cold', 'gated'"):
        _fit(p, relu_start=value)


def test_interior_point_start_of_the_wrong_shape_is_refused():
    X, D, Y = torch.randn(20, 3, dtype=torch.float64), torch.rand(20, 2) > 0.5, torch.randn(20, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="'start' parameter must be a finite tensor of shape"):
        solve_relu_program_ipm(X, D, Y, 0.1, start=torch.zeros(2, 2, 1, 4, dtype=torch.float64))
