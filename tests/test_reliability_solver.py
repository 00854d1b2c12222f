"""Solver failure modes, the memory guard, and determinism.

Failure modes: every group zero (huge beta), tiny beta, all-zero data, data
scaled by 1e+-6, duplicated patches, the iteration budget, and diverging or
NaN iterates. Whatever happens, a solve never reports ``optimal`` with its own
gap above ``tol``, and ``fit_layer`` never returns non-finite weights.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import convexrecon as cr
import convexrecon.block.dispatch as dispatch
from convexrecon.block.options import DEFAULT_BETA_RATIO
from convexrecon.block import guard
from convexrecon.stack.baselines import train_end_to_end
from convexrecon.errors import MemoryBudgetError
from convexrecon.stack.layerwise import BlockSettings, train_layerwise
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.persist import load_network
from solvers.group_lasso import solve_cone_group_lasso, solve_group_lasso
from solvers.report import ConvergenceWarning, SolverError, Status



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (conftest)


GEN = torch.Generator().manual_seed(11)
X = torch.randn(3, 2, 7, 6, dtype=torch.float64, generator=GEN)
Y = torch.randn(3, 2, 7, 6, dtype=torch.float64, generator=GEN)


def fit(x=X, y=Y, **kwargs) -> cr.ConvexBlock:
    kwargs = {"kernel_size": 3, "num_arrangements": 4, "activation": "gated", "dtype": torch.float64,
              "tol": 1e-8, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return cr.fit_layer(x, y, **kwargs)


def assert_honest(block: cr.ConvexBlock, tol: float) -> None:
    """Finite weights; ``optimal`` only with the report's own gap and violation within ``tol``."""
    report = block.report
    assert torch.isfinite(block.first.weight).all() and torch.isfinite(block.second.weight).all()
    assert report.status is not Status.DIVERGED
    if report.status is Status.OPTIMAL:
        assert report.relative_gap <= tol and report.max_violation <= tol, report


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_huge_beta_gives_a_valid_zero_width_block(activation: str, tmp_path) -> None:
    block = fit(beta=1e6, activation=activation, max_iter=300)
    assert block.width == 0 and block.report.status is Status.OPTIMAL
    assert block.first.weight.shape == (0, 2, 3, 3) and block.second.weight.shape == (2, 0, 1, 1)
    assert torch.equal(block(X), torch.zeros_like(Y))
    assert block.objective(X, Y) == pytest.approx(0.5 * float(Y.pow(2).sum()), rel=1e-12)
    # the kept layer and a network ending in it run, save and load (the network is then the skip)
    net = ReconNet([HiddenLayer.from_block(block)], block.second)
    assert torch.equal(net(X), X)
    net.save(tmp_path / "m")
    assert torch.equal(load_network(tmp_path / "m")(X), X)


@pytest.mark.parametrize("targets", ["random", "zero"])
def test_relu_solve_with_zero_solution_stops_early(targets: str) -> None:
    y = Y if targets == "random" else torch.zeros_like(Y)
    block = fit(y=y, beta=1e6, activation="relu", max_iter=300)
    assert block.report.status is Status.OPTIMAL and block.width == 0
    assert block.report.iterations < 100 and len(block.report.history) > 0


def test_zero_width_block_inside_a_network_is_a_clear_error() -> None:
    huge = BlockSettings(kernel_size=3, num_arrangements=2, beta=1e9, tol=1e-3, max_iter=50)
    images = X[:, :, :, :].float()
    with pytest.raises(ValueError, match=r"Block 1 has zero hidden channels.*beta 1e\+09.*Lower 'beta'"):
        train_layerwise(images, images * 0.5, [huge, huge])
    last = train_layerwise(images, images * 0.5, [huge])  # a zero-width last block: the model is the skip
    assert torch.equal(last.network(images), images)


def test_tiny_beta_stays_finite_and_honest() -> None:
    dense = fit(beta=1e-10, max_iter=3000)
    assert_honest(dense, 1e-8)
    loose = fit(beta=1.0)
    assert dense.objective(X, Y) < loose.objective(X, Y)


def test_all_zero_inputs_and_targets() -> None:
    zero = fit(x=torch.zeros_like(X), beta=0.1)
    assert zero.width == 0 and zero.report.status is Status.OPTIMAL
    assert zero.report.primal == pytest.approx(0.5 * float(Y.pow(2).sum()))
    no_target = fit(y=torch.zeros_like(Y), beta=0.1, activation="relu", max_iter=300)
    assert no_target.width == 0 and no_target.report.primal == 0.0 and no_target.report.status is Status.OPTIMAL
    with pytest.raises(ValueError, match="targets are zero on every arrangement.*pass beta"):
        fit(x=torch.zeros_like(X))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_inputs_scaled_by_1e6_give_the_same_predictions(scale: float, dtype: torch.dtype) -> None:
    # with the default beta (a ratio of beta_max) the program is scale-equivariant: v -> v / s
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    base = fit(dtype=dtype, tol=tol, beta=None)
    scaled = fit(x=X * scale, dtype=dtype, tol=tol, beta=None)
    assert_honest(scaled, tol)
    assert scaled.beta == pytest.approx(base.beta * scale, rel=1e-5)
    with torch.no_grad():
        a, b = base(X.to(dtype)).double(), scaled((X * scale).to(dtype)).double()
    assert float((a - b).norm() / a.norm()) < (1e-5 if dtype == torch.float64 else 2e-2)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_duplicated_patches_equal_doubling_the_weight(activation: str) -> None:
    # sum over duplicated images = 2x the loss, so (x, x) at 2 beta solves the problem of x at beta
    tol = 1e-8 if activation == "gated" else 1e-6
    x, y = X[:2], Y[:2, :1]
    once = fit(x=x, y=y, activation=activation, beta=0.5, tol=tol, num_arrangements=2)
    twice = fit(x=torch.cat([x, x]), y=torch.cat([y, y]), activation=activation, beta=1.0, tol=tol, num_arrangements=2)
    assert_honest(twice, tol)
    with torch.no_grad():
        torch.testing.assert_close(twice(x), once(x), rtol=0, atol=1e-3 * float(once(x).abs().max()))


def test_iteration_budget_gives_max_iter_and_a_warning_with_gap_and_tol() -> None:
    with pytest.warns(ConvergenceWarning, match=r"status 'max_iter' after 3 iterations: relative gap "
                                                r"[0-9.e+-]+ \(tol 1e-12\)"):
        block = cr.fit_layer(X, Y, kernel_size=3, num_arrangements=4, activation="gated", beta=0.1,
                             dtype=torch.float64, tol=1e-12, max_iter=3)
    assert block.report.status is Status.MAX_ITER and block.report.relative_gap > 1e-12
    assert_honest(block, 1e-12)


def test_overflowing_data_raise_solver_error_not_a_block() -> None:
    with pytest.warns(ConvergenceWarning, match="diverged"), \
            pytest.raises(SolverError, match=r"diverged after \d+ iterations.*no block is returned.*float32"):
        cr.fit_layer(X.float() * 1e19, Y.float(), kernel_size=3, num_arrangements=4, activation="gated", beta=0.1)


def test_nan_weights_are_never_returned_as_success(monkeypatch: pytest.MonkeyPatch) -> None:
    # even if a solver claimed success, fit_layer checks the solution itself
    real = dispatch.solve_group_lasso

    def lying(*args, **kwargs):
        v, report = real(*args, **kwargs)
        return torch.full_like(v, float("nan")), report

    monkeypatch.setattr(dispatch, "solve_group_lasso", lying)
    with pytest.raises(SolverError, match="diverged"):
        fit(beta=0.1)


class _PoisonedOperator:
    """A matrix operator whose predictions turn NaN after ``after`` calls."""

    def __init__(self, matrix: torch.Tensor, cone: torch.Tensor | None, after: int) -> None:
        self.matrix, self.cone, self.after, self.calls = matrix, cone, after, 0

    def forward(self, v: torch.Tensor):
        self.calls += 1
        a = self.matrix @ v.reshape(-1)
        a = a * float("nan") if self.calls > self.after else a
        return a if self.cone is None else (a, self.cone @ v.reshape(-1))

    def adjoint(self, r: torch.Tensor, mu: torch.Tensor | None = None) -> torch.Tensor:
        out = self.matrix.T @ r if mu is None else self.matrix.T @ r + self.cone.T @ mu
        return out.reshape(4, 3)


@pytest.mark.parametrize("after", [0, 1, 5, 40])
@pytest.mark.parametrize("constrained", [False, True])
def test_nan_iterates_end_with_status_diverged(after: int, constrained: bool) -> None:
    gen = torch.Generator().manual_seed(after)
    matrix = torch.randn(20, 12, dtype=torch.float64, generator=gen)
    cone = torch.randn(15, 12, dtype=torch.float64, generator=gen) if constrained else None
    y = torch.randn(20, dtype=torch.float64, generator=gen)
    op = _PoisonedOperator(matrix, cone, after)
    with pytest.warns(ConvergenceWarning, match="status 'diverged'"):
        if constrained:
            v, _, report = solve_cone_group_lasso(op, y, 0.1, torch.zeros(4, 3, dtype=torch.float64), max_iter=400)
        else:
            v, report = solve_group_lasso(op, y, 0.1, torch.zeros(4, 3, dtype=torch.float64), max_iter=400)
    assert report.status is Status.DIVERGED
    assert torch.isfinite(v).all()  # the last finite iterate, flagged; never NaN reported as success


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    log_scale=st.sampled_from([-6, 0, 6]),
    log_ratio=st.floats(-6, 0),
    activation=st.sampled_from(["gated", "relu"]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    tol=st.sampled_from([1e-3, 1e-6]),
)
def test_never_optimal_with_a_gap_above_tol(seed, log_scale, log_ratio, activation, dtype, tol) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=gen) * 10.0 ** log_scale
    y = torch.randn(2, 1, 5, 4, dtype=torch.float64, generator=gen)
    probe = fit(x=x, y=y, max_iter=1, num_arrangements=3)
    beta = 10.0 ** log_ratio * probe.beta / DEFAULT_BETA_RATIO
    block = fit(x=x, y=y, num_arrangements=3, activation=activation, dtype=dtype, tol=tol, beta=beta, max_iter=400)
    assert_honest(block, tol)
    if activation == "gated" and dtype == torch.float64:  # the report's primal is the returned block's objective
        assert block.objective(x, y) == pytest.approx(block.report.primal, rel=1e-9)


# --- memory guard ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("123", 123), ("2k", 2000), ("1.5GiB", 3 * 2**29), ("500M", 5 * 10**8),
                                            (" 8 gib ", 8 * 2**30), ("64MiB", 64 * 2**20)])
def test_parse_size(text: str, expected: int) -> None:
    assert guard.parse_size(text) == expected


def test_bad_limit_value_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guard.ENV_VAR, "lots")
    with pytest.raises(ValueError, match="CONVEXRECON_MEMORY_LIMIT must be a size.*'lots'"):
        fit(beta=0.1)


def test_available_memory_is_read_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guard.ENV_VAR, raising=False)
    available, source = guard.available_bytes("cpu")
    assert available is not None and available > 2**20 and ("meminfo" in source or "cgroup" in source)


def test_fit_layer_refuses_a_solve_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(guard.ENV_VAR, "40MiB")
    big = torch.zeros(64, 2, 48, 48)
    with pytest.raises(MemoryBudgetError, match=r"fit_layer needs about [0-9.]+ [GM]iB \(conv intermediates [0-9.]+ MiB"
                                                r".*only 40 MiB is available on cpu \(CONVEXRECON_MEMORY_LIMIT=40MiB\)"
                                                r"\. Reduce chunk_size \(now 64 images per chunk\)") as info:
        cr.fit_layer(big, big[:, :1], kernel_size=3, num_arrangements=16, beta=0.1, activation="gated", chunk_size=64)
    assert isinstance(info.value, MemoryError)
    with pytest.raises(MemoryBudgetError, match=r"cone values and multipliers.*Reduce num_arrangements \(now 16\)"):
        cr.fit_layer(big, big[:, :1], kernel_size=3, num_arrangements=16, beta=0.1, activation="relu", chunk_size=1)
    monkeypatch.setenv(guard.ENV_VAR, "off")
    small = torch.randn(1, 2, 8, 8)
    block = cr.fit_layer(small, small[:, :1], kernel_size=3, num_arrangements=2, activation="gated", tol=1e-3)
    assert block.report.status is Status.OPTIMAL


def test_fake_small_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(guard.ENV_VAR, raising=False)
    monkeypatch.setattr(guard, "_cpu_available", lambda: (10 * 2**20, "a faked 10 MiB machine"))
    with pytest.raises(MemoryBudgetError, match="only 10 MiB is available on cpu \\(a faked 10 MiB machine\\)"):
        fit(beta=0.1)
    monkeypatch.setattr(guard, "_cpu_available", lambda: (1000, "a faked 1000-byte machine"))
    images = torch.randn(4, 2, 9, 8)
    with pytest.raises(MemoryBudgetError, match=r"train_layerwise block 1 needs .*features h_\(i-1\).*Reduce"):
        train_layerwise(images, images, [BlockSettings(kernel_size=3, num_arrangements=2)])


def test_estimate_follows_the_settings() -> None:
    def total(**kw):
        args = dict(input_shape=(32, 2, 48, 48), num_outputs=2, num_arrangements=8, kernel_size=5, relu=False,
                    chunk_size=None, dtype=torch.float32)
        args.update(kw)
        return guard.fit_memory_terms(**args)

    base = total()
    assert total(chunk_size=4)["conv intermediates"] < total(chunk_size=32)["conv intermediates"] / 4
    assert base["conv intermediates"] < total(chunk_size=32)["conv intermediates"]  # the default chunk is small
    assert total(num_arrangements=16)["arrangement masks"] == 2 * base["arrangement masks"]
    assert "cone values and multipliers" in total(relu=True) and "cone values and multipliers" not in base
    assert total(input_shape=(32, 2, 8, 48, 48))["images"] > base["images"]  # any number of spatial axes
    # cuDNN's weight gradient unfolds no patches: the CUDA estimate drops exactly that term
    wide = dict(input_shape=(1, 256, 320, 320), num_arrangements=64, kernel_size=7)
    unfolded = 256 * 49 * 320 * 320 * 4
    assert total(**wide)["conv intermediates"] - total(**wide, device="cuda")["conv intermediates"] == unfolded


# --- determinism ----------------------------------------------------------------------------------

def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("activation", ["gated", "relu"])
def test_same_seed_same_block_bitwise(activation: str) -> None:
    kwargs = dict(kernel_size=3, num_arrangements=4, activation=activation, tol=1e-5, max_iter=300, seed=7)
    x, y = X.float(), Y.float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = cr.fit_layer(x, y, **kwargs), cr.fit_layer(x, y, **kwargs)
        c = cr.fit_layer(x, y, **{**kwargs, "seed": 8})
    assert _state_equal(a, b) and a.beta == b.beta and a.report.primal == b.report.primal
    assert not torch.equal(a.gates, c.gates)


def test_same_seed_same_network_bitwise() -> None:
    images = X.float()
    blocks = [BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-3, max_iter=100)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = train_layerwise(images, images * 0.5, blocks, seed=5, patch_size=4, patches_per_slice=2)
        b = train_layerwise(images, images * 0.5, blocks, seed=5, patch_size=4, patches_per_slice=2)
    assert _state_equal(a.network, b.network)
    e2e = []
    for _ in range(2):
        net = ReconNet.plain([3], 3, seed=2)
        train_end_to_end(net, images, images * 0.5, epochs=2, batch_size=2, seed=4)
        e2e.append(net)
    assert _state_equal(*e2e)
    assert math.isfinite(float(e2e[0].second.weight.detach().sum()))
