"""The exact-ReLU ADMM on well-scaled training-like blocks: it returns a finite block with an honest certificate.

The blocks are small versions of a training block (ReLU features of a random conv layer, targets from a planted
two-layer net plus 10 % noise, largest |target| 1.1, beta = 3e-3 beta_max, float32 iterates). On these two seeds
a group step that takes its root in ``kappa = tau / ||x||`` divides 0 by 0 in float32 once a group's ``||c||``
comes within rounding of ``tau``: on seed 2 the iterates turn NaN (3,350 iterations), on seed 0 the NaN
multipliers read as a zero dual constraint and certify the zero block with a gap of 0.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

import convexrecon as cr
import convexrecon.block.dispatch as dispatch
import solvers.admm as admm
from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, patch_problem
from benchmarks.bench_relu import make_relu_feature_problem
from convexrecon.block.relu_split import admm_structure
from solvers.admm import _GramBasis, solve_relu_program_admm
from solvers.report import Status

TOL = 1e-3


def training_like_block(seed: int, num: int = 2, channels: int = 16, height: int = 16, width: int = 15, k: int = 5,
                        num_gates: int = 32):
    """``(x, y, gates)``: ReLU features of a random 3x3 conv of white noise, planted-net targets + 10 % noise (the
    block of ``benchmarks/bench_relu.py --block relu-features``, at a smaller size)."""
    return make_relu_feature_problem(num, channels, height, width, k, num_gates, seed=seed)


def independent_dual(block, x: torch.Tensor, y: torch.Tensor, gates: torch.Tensor, beta: float) -> float:
    """A lower bound on the exact program's optimum from the block's weights alone, by the textbook dual.

    With ``theta = y - block(x)`` and, per neuron group, the multipliers ``lambda >= 0`` that minimise the dual
    constraint's norm ``||(+-) X^T D_i theta_c + X^T (2 D_i - I) lambda||`` (non-negative least squares, scipy),
    ``s theta^T y - s^2 ||theta||^2 / 2`` with ``s = min(theta^T y / ||theta||^2, beta / max norm)`` is dual
    feasible, hence at most the optimum (weak duality); it shares no code with the solvers' certificates.
    """
    from scipy.optimize import nnls

    X, D, _ = patch_problem(x.double(), arrangement_masks(x, gates), y, block.kernel_size)
    with torch.no_grad():
        predictions = copy.deepcopy(block).double()(x.double())
    theta = (y.double() - predictions).movedim(1, -1).reshape(-1, y.shape[1]).numpy()
    largest = 0.0
    for i in range(D.shape[1]):
        cone = X.T * (2 * D[:, i] - 1)  # (d, n): X^T (2 D_i - I)
        for c in range(theta.shape[1]):
            data = X.T @ (D[:, i] * theta[:, c])
            for sign in (1.0, -1.0):  # the groups u_i and w_i
                largest = max(largest, nnls(cone, -sign * data, maxiter=50 * cone.shape[1])[1])
    t_y, t_t = float((theta * y.double().movedim(1, -1).reshape(theta.shape).numpy()).sum()), float((theta ** 2).sum())
    s = min(max(t_y / t_t, 0.0), beta / largest if largest > 0 else math.inf)
    return s * t_y - 0.5 * s * s * t_t


@pytest.mark.parametrize("seed", [0, 2])
def test_default_exact_relu_returns_a_finite_block_with_an_honest_certificate(seed, monkeypatch):
    x, y, gates = training_like_block(seed)
    beta = 3e-3 * cr.problem_beta_max(x, y, kernel_size=5, gates=gates)
    # the block is above the interior point's limit; this small one is not, so auto is made to choose ADMM
    monkeypatch.setattr(dispatch, "fits_interior_point", lambda *args, **kwargs: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        block = cr.fit_layer(x, y, kernel_size=5, gates=gates, beta=beta, activation="relu", tol=TOL)
    rep = block.report
    assert rep.solver == "admm"
    assert all(bool(torch.isfinite(p).all()) for p in block.parameters())
    assert math.isfinite(rep.primal) and math.isfinite(rep.dual) and rep.status is not Status.DIVERGED
    own = float(copy.deepcopy(block).double().objective(x.double(), y.double()))  # the returned weights' objective
    assert own == pytest.approx(rep.primal, rel=1e-5)
    lower = independent_dual(block, x, y, gates, beta)
    assert lower <= own * (1 + 1e-9)
    if rep.status is Status.OPTIMAL:  # certified by a dual point the solver did not make
        assert (own - lower) / own <= TOL
    assert own < 0.5 * float((y.double() ** 2).sum())  # not the zero block


@pytest.mark.parametrize("excess", [1e-7, 1e-6, 1e-3, 1.0, 1e4])
def test_group_step_is_finite_and_exact_when_c_is_at_the_threshold(excess):
    """``||c|| = tau (1 + excess)``: in float32 the root stays finite and matches the float64 step."""
    gen = torch.Generator().manual_seed(3)
    X = torch.relu(torch.randn(400, 50, generator=gen, dtype=torch.float64))
    K = X.T @ X
    c = torch.randn(8, 400, generator=gen, dtype=torch.float64) @ X
    tau = 20.0
    c = c / torch.linalg.vector_norm(c, dim=1, keepdim=True) * tau * (1 + excess)
    x32 = _GramBasis(K, torch.float32).group_prox(c.float(), tau).double()
    x64 = _GramBasis(K, torch.float64).group_prox(c, tau)
    assert bool(torch.isfinite(x32).all())
    top = float(torch.linalg.eigvalsh(K).max())
    assert float((x32 - x64).norm()) <= 1e-5 * float(c.norm()) / top * 50 + 1e-5 * float(x64.norm())
    for xi, ci in zip(x64, c):
        if float(xi.norm()) > 0:
            stationarity = K @ xi - ci + tau * xi / xi.norm()
            assert float(stationarity.norm()) <= 1e-8 * float(ci.norm())


def _small_program(seed: int = 2):
    x, y, gates = training_like_block(seed, num=1, height=10, width=9, channels=8, num_gates=8, k=3)
    op = ArrangementConv(x, arrangement_masks(x, gates), 3, 1, relu=True)
    gram, pick, spread = admm_structure(op, x, 3)
    return op, y, dict(gram=gram, pick=pick, spread=spread, tol=TOL, certify_operator=op.to(torch.float64))


def test_a_non_finite_iterate_restarts_from_the_best_one(monkeypatch):
    op, y, common = _small_program()
    beta = 0.02 * cr.beta_max(op, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        _, _, clean = solve_relu_program_admm(op, y, beta, op.zeros(), **common)
        real, calls = admm._cone_step, [0]

        def poisoned_once(q, *args, **kwargs):  # one NaN cone step, after the first checks
            calls[0] += 1
            z, r = real(q, *args, **kwargs)
            return (torch.full_like(z, math.nan), r) if calls[0] == 25 else (z, r)

        monkeypatch.setattr(admm, "_cone_step", poisoned_once)
        v, _, report = solve_relu_program_admm(op, y, beta, op.zeros(), **common)
    assert clean.status is Status.OPTIMAL and report.status is Status.OPTIMAL
    assert bool(torch.isfinite(v).all())
    assert "non-finite iterate at iteration 30" in report.message
    assert report.dual <= clean.primal + 1e-6 * clean.primal
    assert report.primal == pytest.approx(clean.primal, rel=2 * TOL)


def test_iterates_that_never_become_finite_raise_and_say_what_was_found(monkeypatch):
    x, y, gates = training_like_block(2, num=1, height=10, width=9, channels=8, num_gates=8, k=3)
    real = admm._cone_step
    monkeypatch.setattr(admm, "_cone_step", lambda q, *a, **k: (torch.full_like(q, math.nan), real(q, *a, **k)[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cr.ConvergenceWarning)
        with pytest.raises(cr.SolverError) as raised:
            cr.fit_layer(x, y, kernel_size=3, gates=gates, beta=0.05, activation="relu", relu_method="admm")
    message = str(raised.value)
    assert "diverged after 10 iterations" in message and "non-finite iterate at iteration 10" in message
    assert "penalty rho" in message and "float32" not in message  # no precision hint on data of size 1


def test_non_finite_multipliers_never_certify():
    op, y, common = _small_program()
    pick, spread = common["pick"], common["spread"]
    v = op.zeros()
    parts = op.forward(v)
    u = torch.full_like(parts[1], math.nan)
    cert, judge, _ = admm._certificate(v, parts, u, 1.0, y, 0.05, op, pick, spread, float(y.abs().max()),
                                        -math.inf, admm.Local())
    assert cert.dual == -math.inf and not judge.relative_gap <= TOL
