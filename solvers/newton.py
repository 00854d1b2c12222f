r"""Newton-CG steps on the active groups of a group lasso (the fast tail of the gated solver).

On the groups that are nonzero at ``v`` the objective

.. math:: f(v) = \tfrac12\|A v - y\|^2 + \beta \sum_g \|v_g\|

is twice differentiable, with gradient :math:`A^\top(Av - y) + \beta\, v_g/\|v_g\|`
and Hessian

.. math:: A^\top A + \beta\,\mathrm{blockdiag}_g\Big(\frac{I - \hat v_g \hat v_g^\top}{\|v_g\|}\Big),
          \qquad \hat v_g = v_g / \|v_g\|.

Once a proximal-gradient method has found the active groups, a Newton
direction on them, computed by conjugate gradients (one ``forward`` and one
``adjoint`` per CG iteration, never a matrix), converges in a few steps where
first-order methods need thousands of iterations: the duality gap of a nearly
interpolating problem closes only when every active group's gradient matches
``beta`` to the gap's precision. Zero groups stay zero here; the caller's
proximal-gradient iterations add or remove groups, and the duality gap
certifies the result as always — this module only proposes points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .fista import _dot, sq_norm
from .groups import group_norms


Parts = tuple[Tensor, ...]


@dataclass(frozen=True)
class NewtonStep:
    """The point after one step, its image ``K v``, and what the step cost."""

    v: Tensor
    image: Parts
    operator_calls: int


def newton_step(
    forward: Callable[[Tensor], Parts],
    adjoint: Callable[[Parts], Tensor],
    value: Callable[[Parts], float],
    grad: Callable[[Parts], Parts],
    hess: Callable[[Parts, Parts], Parts],
    beta: float,
    v: Tensor,
    image: Parts,
    *,
    max_cg: int = 200,
) -> NewtonStep | None:
    r"""One damped Newton-CG step on the groups that are nonzero in ``v``.

    The objective is ``phi(K v) + beta sum_g ||v_g||`` with the same
    callables as :func:`solvers.fista.fista`: ``forward`` = ``K`` (a tuple of
    parts), ``adjoint`` = ``K^T`` (summed over shards), ``value`` = ``phi``
    (summed over shards), ``grad`` = ``nabla phi``, and ``hess(at, d)`` = a
    (generalised) Hessian of ``phi`` at the image ``at`` applied to ``d``: the
    identity for ``1/2 ||z - y||^2``; for the augmented Lagrangian's
    ``1/(2 rho) ||(lambda - rho c)_+||^2`` it is ``rho`` on the rows where
    ``lambda - rho c > 0`` (semismooth Newton). ``phi`` must be convex.

    Parameters
    ----------
    image
        ``K v`` at the current point.
    max_cg
        Budget of CG iterations; CG stops earlier at a relative residual of
        ``min(0.1, ||grad||^(1/2))`` (an inexact Newton forcing term).

    Returns
    -------
    NewtonStep, or None when no group is active or the Armijo line search
    finds no decrease (the caller then carries on with proximal gradient).
    """
    norms = group_norms(v)
    active = norms > 0
    if not bool(active.any()):
        return None
    shape = (-1,) + (1,) * (v.ndim - 1)
    mask = active.reshape(shape).to(v.dtype)
    inv_norm = mask / torch.clamp(norms, min=torch.finfo(v.dtype).tiny).reshape(shape)
    direction_hat = v * inv_norm
    dims = tuple(range(1, v.ndim))

    def objective(img: Parts, point: Tensor) -> float:
        return value(img) + beta * float(group_norms(point.double()).sum())

    def hessian(p: Tensor) -> Tensor:
        p = p * mask
        radial = torch.sum(direction_hat * p, dim=dims, keepdim=True)
        return (adjoint(hess(image, forward(p))) + beta * inv_norm * (p - direction_hat * radial)) * mask

    g = (adjoint(grad(image)) + beta * direction_hat) * mask
    grad_sq = sq_norm(g)
    if not (grad_sq > 0 and math.isfinite(grad_sq)):
        return None
    forcing = min(0.1, grad_sq ** 0.25)
    p, res = torch.zeros_like(v), -g
    d, rs = res.clone(), grad_sq
    calls = 1  # the gradient's adjoint
    for _ in range(max_cg):
        hd = hessian(d)
        calls += 1
        curvature = _dot(d, hd)
        if not curvature > 0:
            break
        alpha = rs / curvature
        p = p + alpha * d
        res = res - alpha * hd
        rs_new = sq_norm(res)
        if rs_new <= forcing * forcing * grad_sq:
            break
        d = res + (rs_new / rs) * d
        rs = rs_new
    slope = _dot(g, p)
    if not slope < 0:
        return None
    image_p = forward(p)
    calls += 1
    f0 = objective(image, v)
    step = 1.0
    for _ in range(30):
        trial = v + step * p
        trial_image = tuple(a + step * b for a, b in zip(image, image_p))
        f_trial = objective(trial_image, trial)
        if f_trial <= f0 + 1e-4 * step * slope:
            return NewtonStep(trial, trial_image, calls)
        step *= 0.5
    return None
