r"""Group norms, their proximal operator, and the dual certificate they induce.

The programs solved in this package are group-lasso problems

.. math::  \min_v \tfrac12 \|A v - y\|_2^2 + \beta \sum_g \|v_g\|_2
           \quad (\text{optionally s.t. } C v \ge 0),

whose dual is

.. math::  \max_{\theta, \lambda \ge 0} \theta^\top y - \tfrac12\|\theta\|_2^2
           \quad\text{s.t.}\quad \|(A^\top\theta + C^\top\lambda)_g\|_2 \le \beta\ \forall g.

Any residual-like ``theta`` and multipliers ``lambda >= 0`` give a feasible
dual point after scaling both by one factor ``s`` (scaling keeps
``lambda >= 0``); :func:`scaled_dual_value` picks the best such ``s``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def group_norms(v: Tensor) -> Tensor:
    """Euclidean norm of each group ``v[g]`` (leading axis = groups)."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1)


def group_soft_threshold(v: Tensor, threshold: float) -> Tensor:
    r"""Proximal operator of ``threshold * sum_g ||v_g||``.

    .. math:: \operatorname{prox}(v)_g = \max(0, 1 - t / \|v_g\|)\, v_g

    Groups whose norm is at most ``threshold`` become exactly zero.
    """
    norms = group_norms(v)
    scale = torch.clamp(1.0 - threshold / torch.clamp(norms, min=torch.finfo(v.dtype).tiny), min=0.0)
    return v * scale.reshape((-1,) + (1,) * (v.ndim - 1))


def group_penalty(v: Tensor) -> Tensor:
    """``sum_g ||v_g||`` accumulated in float64."""
    return group_norms(v.double()).sum()


def scaled_dual_value(theta_dot_y: float, theta_sq: float, max_dual_norm: float, beta: float) -> tuple[float, float]:
    r"""Best dual value along the ray ``s * (theta, lambda)``.

    Parameters
    ----------
    theta_dot_y, theta_sq
        ``theta^T y`` and ``||theta||^2``.
    max_dual_norm
        ``max_g ||(A^T theta + C^T lambda)_g||`` (the unscaled dual constraint).
    beta
        Regularisation weight.

    Returns
    -------
    dual, s
        ``s`` maximises ``s theta^T y - s^2 ||theta||^2 / 2`` over
        ``0 <= s <= beta / max_dual_norm``; ``dual`` is that maximum (a lower
        bound on the primal optimum).
    """
    if not (math.isfinite(max_dual_norm) and math.isfinite(theta_dot_y) and math.isfinite(theta_sq)):
        return float("-inf"), 0.0  # a non-finite dual point bounds nothing (NaN > 0 would read as slack)
    s_max = beta / max_dual_norm if max_dual_norm > 0 else float("inf")
    if theta_sq > 0:
        s = min(max(theta_dot_y / theta_sq, 0.0), s_max)
    else:
        s = 0.0
    return s * theta_dot_y - 0.5 * s * s * theta_sq, s
