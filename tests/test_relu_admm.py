"""The exact-ReLU ADMM (solvers/admm.py) and fit_layer's relu_method="auto" rule."""

from __future__ import annotations

import ast
import math
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import convexrecon as cr
import convexrecon.block.dispatch as dispatch
from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates
from convexrecon.block.relu_split import admm_structure, patch_gram, selection
from solvers.admm import _cone_step, _GramBasis, solve_relu_program_admm
from solvers.report import Status

from .problems import reference

RELU_CASES = [(2, 1, 5), (3, 2, 5), (0, 1, 3)]  # (seed, C_out, k) of tests/problems.py's relu cases


def _fit(p, **kw):
    kw.setdefault("tol", 1e-6)
    return cr.fit_layer(kw.pop("inputs", p.inputs), p.targets, kernel_size=p.kernel_size, gates=p.gates,
                        beta=p.beta, activation="relu", dtype=torch.float64, **kw)


def _assert_certified_against_reference(block, p, ref, solver: str):
    rep = block.report
    p_star = ref.report.primal
    assert rep.solver == solver
    assert rep.status is Status.OPTIMAL
    assert abs(rep.primal - p_star) <= 1e-4 * abs(p_star)
    assert rep.gap >= (rep.primal - p_star) - 1e-8 * abs(p_star)  # the gap bounds the true suboptimality
    assert rep.dual <= p_star + 1e-8 * abs(p_star)
    assert rep.max_violation <= 1e-6
    # the block is an ordinary Conv-ReLU-Conv network whose weight-decay objective is the convex one
    x = p.inputs
    torch.testing.assert_close(block(x), block.second(F.relu(block.first(x))), rtol=0, atol=0)
    assert block.objective(x, p.targets) == pytest.approx(rep.primal, rel=1e-6)


@pytest.mark.parametrize("seed,c_out,k", RELU_CASES, ids=[f"s{s}-c{c}-k{k}" for s, c, k in RELU_CASES])
def test_admm_matches_cvxpy_reference(seed, c_out, k):
    p, ref = reference(seed, c_out, k, "relu")
    _assert_certified_against_reference(_fit(p, relu_method="admm"), p, ref, "admm")


def test_auto_uses_the_interior_point_where_it_fits():
    p, ref = reference(3, 2, 5, "relu")
    _assert_certified_against_reference(_fit(p), p, ref, "interior_point")


@pytest.mark.parametrize("shape,num_gates,beta", [((1, 16, 5, 5), 8, 0.05), ((1, 8, 6, 6), 4, 0.5),
                                                     ((1, 2, 4, 4), 8, 0.05)])
def test_auto_is_certified_on_over_parameterised_blocks(shape, num_gates, beta):
    """Far more unknowns than patches (P C_in k^2 >> N H W): the interior point alone stalled on these three
    (ended "inaccurate" 63x, 1.3x and 1.26x above the optimum); auto then solves them by ADMM and
    must agree with cvxpy whichever method finished."""
    from solvers.reference import solve_arrangement_program

    from convexrecon.block.arrangements import patch_problem

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, generator=gen)
    y = torch.randn(shape[0], 2, *shape[2:], dtype=torch.float64, generator=gen)
    gates = draw_gates(num_gates, shape[1], 3, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cr.ConvergenceWarning)  # the interior point's shortfall is not reported
        block = cr.fit_layer(x, y, kernel_size=3, gates=gates, beta=beta, activation="relu", dtype=torch.float64,
                             tol=1e-6)
    X, D, Y = patch_problem(x, arrangement_masks(x, gates), y, 3)
    p_star = solve_arrangement_program(X, D, Y, beta, "relu").report.primal
    rep = block.report
    assert rep.solver in ("interior_point", "admm") and rep.status is Status.OPTIMAL
    assert abs(rep.primal - p_star) <= 1e-4 * abs(p_star)
    assert rep.gap >= (rep.primal - p_star) - 1e-8 * abs(p_star)
    assert block.objective(x, y) == pytest.approx(rep.primal, rel=1e-6)
    if rep.solver == "admm":
        assert "the interior point ended" in rep.message


def test_auto_keeps_the_interior_point_when_the_admm_fallback_certifies_worse():
    """An interior point stopped short of ``tol`` is replaced by ADMM only if ADMM certifies better: with 8
    iterations each, the interior point's block (relative gap < 1) must be the one returned, honestly labelled."""
    p, ref = reference(3, 2, 5, "relu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        block = _fit(p, max_iter=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        admm = _fit(p, max_iter=8, relu_method="admm")
    rep = block.report
    # one warning, about the block returned (not the two solves' own)
    assert [str(w.message)[:40] for w in caught if issubclass(w.category, cr.ConvergenceWarning)] == [
        "fit_layer: the block's interior_point so"]
    assert rep.solver == "interior_point" and rep.status is not Status.OPTIMAL
    assert rep.relative_gap < admm.report.relative_gap
    assert "the interior point's block is kept" in rep.message
    assert rep.seconds >= admm.report.seconds * 0.5  # both solves are counted
    assert block.objective(p.inputs, p.targets) == pytest.approx(rep.primal, rel=1e-6)
    p_star = ref.report.primal
    assert rep.gap >= (rep.primal - p_star) - 1e-8 * abs(p_star)


def test_auto_warns_when_a_large_block_must_use_admm(monkeypatch):
    """Large exact-ReLU blocks that the interior point cannot take are slow by ADMM: auto says so (and suggests
    the gated relaxation); small ones and blocks the interior point takes stay silent."""
    p, _ = reference(3, 2, 5, "relu")
    rows = 2 * p.gates.shape[0] * p.targets.numel()
    monkeypatch.setattr(dispatch, "_SLOW_EXACT_ROWS", rows)  # this block counts as large
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(p)  # the interior point fits: no warning
        assert not [w for w in caught if issubclass(w.category, cr.PerformanceWarning)]
        monkeypatch.setattr(dispatch, "fits_interior_point", lambda *args, **kwargs: False)
        block = _fit(p)
    slow = [str(w.message) for w in caught if issubclass(w.category, cr.PerformanceWarning)]
    assert block.report.solver == "admm" and len(slow) == 1
    assert f"on {rows:,} cone rows" in slow[0] and "activation='gated'" in slow[0]
    monkeypatch.setattr(dispatch, "_SLOW_EXACT_ROWS", rows + 1)  # one row fewer than the limit: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", cr.PerformanceWarning)
        _fit(p)


def test_auto_uses_admm_for_streamed_inputs():
    p, ref = reference(2, 1, 5, "relu")
    block = _fit(p, inputs=[p.inputs[:1], p.inputs[1:]])
    _assert_certified_against_reference(block, p, ref, "admm")


def test_auto_uses_admm_where_the_interior_point_does_not_fit(monkeypatch):
    p, ref = reference(3, 2, 5, "relu")
    monkeypatch.setattr(dispatch, "fits_interior_point", lambda *args, **kwargs: False)
    _assert_certified_against_reference(_fit(p), p, ref, "admm")


def test_admm_float32_certificate_is_honest():
    """float32 iterates, float64 certificate: the reported gap still bounds the suboptimality."""
    p, ref = reference(3, 2, 5, "relu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        block = cr.fit_layer(p.inputs.float(), p.targets.float(), kernel_size=5, gates=p.gates, beta=p.beta,
                             activation="relu", relu_method="admm", tol=1e-4)
    rep = block.report
    assert rep.solver == "admm"
    assert rep.relative_gap <= 1e-4 or rep.status is not Status.OPTIMAL
    assert rep.dual <= ref.report.primal + 1e-8 * abs(ref.report.primal)
    assert rep.primal == pytest.approx(ref.report.primal, rel=1e-3)


def test_lower_bound_only_raises_the_dual():
    p, ref = reference(2, 1, 5, "relu")
    op = ArrangementConv(p.inputs, arrangement_masks(p.inputs, p.gates), 5, 1, relu=True)
    gram, pick, spread = admm_structure(op, p.inputs, 5)
    common = dict(gram=gram, pick=pick, spread=spread, tol=1e-12, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        _, _, own = solve_relu_program_admm(op, p.targets, p.beta, op.zeros(), **common)
        bound = 0.5 * (own.dual + ref.report.primal)  # valid: below the optimum
        _, _, raised = solve_relu_program_admm(op, p.targets, p.beta, op.zeros(), lower_bound=bound, **common)
    assert own.dual < bound
    assert raised.dual == pytest.approx(bound, rel=1e-12)
    assert raised.primal == pytest.approx(own.primal, rel=1e-12)


def test_group_step_solves_its_problem():
    """x = argmin tau ||x|| + x^T K x / 2 - c^T x, checked by its optimality condition."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 6, generator=gen, dtype=torch.float64) * torch.tensor([1, 1e-2, 3, 1, 0.1, 1.0],
                                                                                dtype=torch.float64)
    K = X.T @ X
    c = torch.randn(9, 60, generator=gen, dtype=torch.float64) @ X
    tau = 0.9 * float(torch.linalg.vector_norm(c, dim=1).median())
    x = _GramBasis(K, torch.float64).group_prox(c, tau)
    zero, nonzero = 0, 0
    for xi, ci in zip(x, c):
        if float(xi.norm()) == 0.0:
            zero += 1
            assert float(ci.norm()) <= tau
        else:
            nonzero += 1
            stationarity = K @ xi - ci + tau * xi / xi.norm()
            assert float(stationarity.norm()) <= 1e-9 * float(ci.norm())
    assert zero > 0 and nonzero > 0


def test_cone_step_solves_its_problem():
    """z = argmin_{z >= 0} ||M z - y||^2 / 2 + rho ||z - q||^2 / 2, checked by its KKT conditions."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 7, 5, generator=gen, dtype=torch.float64)
    gates = draw_gates(3, 2, 3, seed=5)
    op = ArrangementConv(x, arrangement_masks(x, gates), 3, 2, relu=True)
    pick, spread = selection(op)
    q = torch.randn(op.forward(op.zeros())[1].shape, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 2, 7, 5, generator=gen, dtype=torch.float64)
    rho = 0.7
    z, _ = _cone_step(q, y, rho, pick, spread, torch.zeros_like(y))
    gradient = spread(pick(z) - y) + rho * (z - q)
    assert float(z.min()) >= 0
    assert float(gradient.min()) >= -1e-12
    assert float((gradient * z).abs().max()) <= 1e-12
    assert 0 < int((z > 0).sum()) < z.numel()


def test_pick_and_spread_are_adjoint_and_factor_the_data_operator():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 9, 6, generator=gen, dtype=torch.float64)
    gates = draw_gates(4, 3, 3, seed=7)
    op = ArrangementConv(x, arrangement_masks(x, gates), 3, 2, relu=True)
    pick, spread = selection(op)
    v = torch.randn(op.var_shape, generator=gen, dtype=torch.float64)
    pred, cone = op.forward(v)
    torch.testing.assert_close(pick(cone), pred)  # A = M C
    theta = torch.randn(pred.shape, generator=gen, dtype=torch.float64)
    assert float((pick(cone) * theta).sum()) == pytest.approx(float((cone * spread(theta)).sum()), rel=1e-12)
    # every group's cone block has the patch Gram matrix: ||C_g v_g||^2 = v_g^T X^T X v_g
    gram = patch_gram(x, 3)
    groups = v.reshape(v.shape[0], -1)
    per_group = (cone ** 2).sum(dim=(0, 4, 5)).reshape(-1)
    torch.testing.assert_close(per_group, torch.einsum("gi,ij,gj->g", groups, gram, groups))


def test_bad_input_names_the_parameter():
    p, _ = reference(2, 1, 5, "relu")
    op = ArrangementConv(p.inputs, arrangement_masks(p.inputs, p.gates), 5, 1, relu=True)
    gram, pick, spread = admm_structure(op, p.inputs, 5)
    with pytest.raises(ValueError, match=r"gram must have shape \(50, 50\).*got \(49, 49\)"):
        solve_relu_program_admm(op, p.targets, p.beta, op.zeros(), gram=gram[:49, :49], pick=pick, spread=spread)
    with pytest.raises(ValueError, match="rho must be a finite float > 0; got -1"):
        solve_relu_program_admm(op, p.targets, p.beta, op.zeros(), gram=gram, pick=pick, spread=spread, rho=-1.0)
    with pytest.raises(ValueError, match="beta must be a finite float > 0; got 0"):
        solve_relu_program_admm(op, p.targets, 0.0, op.zeros(), gram=gram, pick=pick, spread=spread)
    with pytest.raises(ValueError, match="gram must be a non-zero positive semidefinite"):
        solve_relu_program_admm(op, p.targets, p.beta, op.zeros(), gram=0 * gram, pick=pick, spread=spread)
    with pytest.raises(ValueError, match="relu_method"):
        _fit(p, relu_method="cone")


def test_solvers_never_import_convexrecon():
    source = (Path(__file__).resolve().parents[1] / "solvers" / "admm.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            assert not any(n.split(".")[0] == "convexrecon" for n in names)


def test_value_below_the_dual_bound_is_never_optimal():
    """An iterate whose objective lies below the dual bound is not certified, whatever the tolerances.

    The (deliberately invalid) lower bound ten times the optimum puts every iterate below the dual
    value used; with tolerances loose enough to accept anything else, the solve must not end ``optimal``.
    """
    p, ref = reference(2, 1, 5, "relu")
    op = ArrangementConv(p.inputs, arrangement_masks(p.inputs, p.gates), 5, 1, relu=True)
    gram, pick, spread = admm_structure(op, p.inputs, 5)
    loose = dict(gram=gram, pick=pick, spread=spread, tol=0.5, feas_tol=1.0, max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        _, _, accepted = solve_relu_program_admm(op, p.targets, p.beta, op.zeros(), **loose)
        _, _, refused = solve_relu_program_admm(op, p.targets, p.beta, op.zeros(),
                                                lower_bound=10 * ref.report.primal, **loose)
    assert accepted.status is Status.OPTIMAL
    assert refused.status is not Status.OPTIMAL and refused.primal < refused.dual


def _report(solver: str, status: Status, relative_gap: float, seconds: float = 1.0):
    from solvers.report import SolveReport

    return SolveReport(solver, status, 1.0, 1.0 - relative_gap, relative_gap, relative_gap, 0.0, 10, seconds,
                       message=f"{solver} detail")


@pytest.mark.parametrize("interior_gap,admm_gap,admm_status,winner", [
    (1e-5, 1e-3, Status.MAX_ITER, "interior_point"),  # the interior point certifies better: kept
    (1e-3, 1e-5, Status.MAX_ITER, "admm"),
    (1e-3, 1e-7, Status.OPTIMAL, "admm"),
    (1e-5, math.inf, Status.DIVERGED, "interior_point"),  # a diverged ADMM never wins
])
def test_keep_better_certified_is_the_auto_fallback_rule(interior_gap, admm_gap, admm_status, winner):
    from convexrecon.block.dispatch import keep_better_certified

    v_interior, v_admm = torch.zeros(3), torch.ones(3)
    interior = (v_interior, _report("interior_point", Status.INACCURATE, interior_gap, seconds=2.0))
    v, rep = keep_better_certified(interior, (v_admm, _report("admm", admm_status, admm_gap, seconds=3.0)))
    assert rep.solver == winner and rep.seconds == 5.0  # both solves are counted
    assert v is (v_interior if winner == "interior_point" else v_admm)
    assert rep.message.startswith("relu_method='auto': the interior point ended inaccurate")
    assert rep.message.endswith(f"{winner} detail")
    # an interior block with non-finite weights is never kept
    bad = (torch.full((3,), float("nan")), interior[1])
    v, rep = keep_better_certified(bad, (v_admm, _report("admm", Status.MAX_ITER, 1.0)))
    assert rep.solver == "admm" and v is v_admm
