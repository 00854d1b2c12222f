"""Volumes (N, C, D, H, W): the 3D block against cvxpy, through the same operator and solver as images."""

from __future__ import annotations

import pytest
import torch

import convexrecon as cr
import convexrecon.block.dispatch as dispatch
from convexrecon.block.arrangements import ArrangementConv, draw_gates
from solvers.report import Status

from .problems import VOLUME_CASES, VOLUME_SHAPE, make_problem, reference


def _fit(p, **kw):
    kw.setdefault("tol", 1e-6)
    return cr.fit_layer(p.inputs, p.targets, kernel_size=p.kernel_size, gates=p.gates, beta=p.beta,
                        activation=p.activation, dtype=torch.float64, **kw)


@pytest.mark.parametrize("seed,c_out,k,activation", VOLUME_CASES,
                         ids=[f"s{s}-c{c}-k{k}-{a}" for s, c, k, a in VOLUME_CASES])
def test_volume_block_matches_cvxpy_reference(seed, c_out, k, activation):
    p, ref = reference(seed, c_out, k, activation, VOLUME_SHAPE)
    assert ref.report.status is Status.OPTIMAL
    block = _fit(p)
    rep = block.report
    assert isinstance(block.first, torch.nn.Conv3d) and block.first.kernel_size == (k, k, k)
    assert block.spatial_dims == 3
    assert rep.status is Status.OPTIMAL
    assert abs(rep.primal - ref.report.primal) <= 1e-4 * abs(ref.report.primal)
    assert rep.gap >= (rep.primal - ref.report.primal) - 1e-8 * abs(ref.report.primal)
    if activation == "relu":
        assert rep.max_violation <= 1e-6
    assert block.objective(p.inputs, p.targets) == pytest.approx(rep.primal, rel=1e-6)
    out = block(p.inputs)
    assert out.shape == p.targets.shape


def test_images_and_volumes_share_the_solver(monkeypatch):
    """Both paths build the same ArrangementConv and hand it to the same solver function."""
    seen = []
    solve = dispatch.solve_group_lasso

    def spy(operator, *args, **kwargs):
        seen.append((type(operator), operator.x.ndim, len(operator.var_shape)))
        return solve(operator, *args, **kwargs)

    monkeypatch.setattr(dispatch, "solve_group_lasso", spy)
    for shape in ((7, 5), VOLUME_SHAPE):
        p = make_problem(30, c_out=1, k=3, activation="gated", shape=shape)
        _fit(p, tol=1e-4)
    assert seen == [(ArrangementConv, 4, 4), (ArrangementConv, 5, 5)]


def test_single_slice_volume_is_the_image_problem():
    """A volume of depth 1 with k x k x k gates is the image problem with the gates' middle slices.

    Zero padding makes the outer kernel slices see only zeros, so their weights
    stay zero and the optimum (and the fitted filters' middle slice) coincide.
    """
    p = make_problem(31, c_out=2, k=3, activation="gated")
    gates3 = draw_gates(4, 2, 3, seed=5, spatial_dims=3)
    kw = dict(kernel_size=3, beta=p.beta, activation="gated", dtype=torch.float64, tol=1e-6)
    image = cr.fit_layer(p.inputs, p.targets, gates=gates3[:, :, 1], **kw)
    volume = cr.fit_layer(p.inputs[:, :, None], p.targets[:, :, None], gates=gates3, **kw)
    assert volume.report.primal == pytest.approx(image.report.primal, rel=1e-5)
    assert image.report.status is volume.report.status is Status.OPTIMAL
    assert volume.width == image.width
    # same optimum up to the solvers' tolerance (the iterates differ in the last digits)
    torch.testing.assert_close(volume.first.weight[:, :, 1], image.first.weight, rtol=0, atol=1e-5)
    assert float(volume.first.weight.detach()[:, :, [0, 2]].abs().max()) < 1e-12
    torch.testing.assert_close(volume(p.inputs[:, :, None])[:, :, 0], image(p.inputs), rtol=0, atol=1e-5)


def test_volume_global_check_and_default_gates():
    p = make_problem(32, c_out=1, k=3, activation="gated", shape=VOLUME_SHAPE)
    block = cr.fit_layer(p.inputs, p.targets, kernel_size=3, num_arrangements=3, beta=p.beta, activation="gated",
                         dtype=torch.float64, tol=1e-8, seed=4)
    assert block.gates.shape == (3, 2, 3, 3, 3)
    torch.testing.assert_close(block.gates, draw_gates(3, 2, 3, seed=4, spatial_dims=3))
    check = cr.global_check(block, p.inputs, p.targets, num_fresh=16)
    assert check.sampled_score <= 1e-3 and check.scores.shape == (16, 1)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(inputs=torch.randn(2, 2, 4, 5, 6), targets=torch.randn(2, 1, 4, 5)), ValueError,
     r"both be images \(N, C, H, W\) or both volumes \(N, C, D, H, W\). Got shapes \(2, 2, 4, 5, 6\) and \(2, 1, 4, 5\)"),
    (dict(inputs=torch.randn(2, 2, 1, 4, 5, 6), targets=torch.randn(2, 1, 1, 4, 5, 6)), ValueError,
     r"'inputs' parameter must have shape \(N, C, H, W\). Got ndim 6 .*volumes: \(N, C, D, H, W\)"),
    (dict(gates=torch.randn(3, 2, 3, 3)), ValueError, r"'gates' parameter must have shape \(P, 2, 3, 3, 3\).*Got \(3, 2, 3, 3\)"),
])
def test_volume_bad_input(kwargs, error, match):
    args = dict(inputs=torch.randn(2, 2, 4, 5, 6), targets=torch.randn(2, 1, 4, 5, 6), kernel_size=3, beta=1.0,
                activation="gated")
    args.update(kwargs)
    with pytest.raises(error, match=match):
        cr.fit_layer(args.pop("inputs"), args.pop("targets"), **args)
