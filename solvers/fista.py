r"""Accelerated proximal gradient (FISTA) for composite group-lasso objectives.

The engine minimises

.. math:: \phi(K v) + \beta \sum_g \|v_g\|_2

where ``K`` is linear (it may return several parts, e.g. predictions and
constraint values) and ``phi`` is smooth. It keeps ``K v`` alongside ``v`` so
that every iteration costs one ``forward`` and one ``adjoint``: the
extrapolated point's image ``K y`` is the same linear combination of images.

References: Beck & Teboulle, SIAM J. Imaging Sci. 2009 (FISTA, backtracking);
O'Donoghue & Candès, Found. Comput. Math. 2015 (gradient adaptive restart).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .groups import group_norms, group_soft_threshold

Parts = tuple[Tensor, ...]


@dataclass
class FistaState:
    """Where a FISTA run stopped.

    ``reason`` is ``"checked"`` (the caller's check accepted the point),
    ``"stationary"`` (the proximal-gradient step fell below ``inner_tol``),
    ``"precision"`` (backtracking found no step that decreases the objective
    within the working precision), ``"max_iter"`` or ``"diverged"`` (a
    non-finite objective).
    """

    v: Tensor
    image: Parts
    lipschitz: float
    iterations: int
    reason: str


def fista(
    forward: Callable[[Tensor], Parts],
    adjoint: Callable[[Parts], Tensor],
    value: Callable[[Parts], float],
    grad: Callable[[Parts], Parts],
    beta: float,
    v: Tensor,
    image: Parts,
    lipschitz: float,
    *,
    max_iter: int,
    check_every: int = 10,
    on_check: Callable[[int, Tensor, Parts], bool] | None = None,
    inner_tol: float | None = None,
    restart: bool = True,
    value_scale: float = 0.0,
) -> FistaState:
    """Run FISTA from ``v`` (with ``image = forward(v)``).

    Parameters
    ----------
    forward, adjoint
        ``K`` and ``K^T`` (``adjoint`` takes the tuple of parts).
    value, grad
        ``phi`` (a float, accumulated in float64) and its gradient, both on
        the image ``K v``.
    beta
        Group-lasso weight.
    lipschitz
        Initial step constant; doubled whenever the sufficient-decrease test
        fails (backtracking).
    max_iter
        Iteration budget of this call.
    on_check
        Called every ``check_every`` iterations with ``(iteration, v, K v)``;
        returning True stops the run.
    inner_tol
        Stop when ``L * max_g ||(v_new - y)_g||`` (the proximal-gradient
        residual, in the units of ``beta``) falls below this.
    restart
        Reset the momentum when it points uphill (gradient restart).
    value_scale
        Size of the terms that cancel inside ``value`` (e.g. ``||y||^2 / 2``
        for a residual norm): the decrease test allows a rounding error of
        ``10 eps (|f_y| + |f_new| + value_scale)``.
    """
    x, kx = v, image
    y, ky = x, kx
    t = 1.0
    lip = float(lipschitz)
    eps = torch.finfo(v.dtype).eps
    for k in range(1, max_iter + 1):
        if k % _REFRESH_EVERY == 0:  # the images are updated by linear combinations: recompute them now and then
            kx, ky = forward(x), forward(y)
        fy = value(ky)
        grad_y = adjoint(grad(ky))
        accepted = False
        for attempt in range(64):
            x_new = group_soft_threshold(y - grad_y / lip, beta / lip)
            kx_new = forward(x_new)
            step = x_new - y
            f_new = value(kx_new)
            bound = fy + _dot(grad_y, step) + 0.5 * lip * _dot(step, step)
            if f_new <= bound + 10 * eps * (abs(fy) + abs(f_new) + value_scale) or not math.isfinite(f_new):
                accepted = True
                break
            if attempt == 8:  # persistent failure: rounding drift of K y, not curvature; refresh it
                ky = forward(y)
                fy = value(ky)
                grad_y = adjoint(grad(ky))
            else:
                lip *= 2.0
        if not (math.isfinite(f_new) and math.isfinite(lip)):  # overflow
            return FistaState(x, kx, lip, k, "diverged")
        if not accepted:  # no step decreases the model within the working precision
            return FistaState(x, kx, lip, k, "precision")
        stationary = inner_tol is not None and lip * float(group_norms(step).max()) <= inner_tol
        if restart and _dot(y - x_new, x_new - x) > 0:
            t = 1.0
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        momentum = (t - 1.0) / t_new
        y = x_new + momentum * (x_new - x)
        ky = tuple(a + momentum * (a - b) for a, b in zip(kx_new, kx))
        x, kx, t = x_new, kx_new, t_new
        if on_check is not None and k % check_every == 0 and on_check(k, x, kx):
            return FistaState(x, kx, lip, k, "checked")
        if stationary:
            return FistaState(x, kx, lip, k, "stationary")
    return FistaState(x, kx, lip, max_iter, "max_iter")


_REFRESH_EVERY = 100


def _dot(a: Tensor, b: Tensor) -> float:
    """``<a, b>`` accumulated in float64 (the products stay in the working precision)."""
    return float(torch.sum(a * b, dtype=torch.float64))


def sq_norm(a: Tensor) -> float:
    """``||a||^2`` accumulated in float64."""
    return _dot(a, a)

