r"""A feasible start for the exact-ReLU program from the gated optimum on the same data and gates.

The gated relaxation :math:`\min_u \tfrac12\|\sum_i D_i X u_i - y\|^2 + \beta\sum_i\|u_i\|` drops the cone
constraints of the exact program; its optimum is cheap and certified. :func:`split_gated` turns it into a point
of the exact program, ``u_i = v_i - w_i`` with both parts in the cone
:math:`K_i = \{z : (2D_i - I) X z \ge 0\}`, by the *smallest gate shift*:

.. math:: v_i = u_i + t_i g_i,\qquad w_i = t_i g_i,\qquad
          t_i = \max_j \frac{(-\sigma_{ij} x_j^\top u_i)_+}{\sigma_{ij} x_j^\top g_i}
          \quad(\sigma_{ij} = 2 D_{ij} - 1).

The gate ``g_i`` lies in its own cone (``D_i = 1[X g_i >= 0]``, so :math:`\sigma_{ij} x_j^\top g_i = |x_j^\top g_i|`),
hence ``w_i`` is feasible for every ``t_i >= 0`` and ``v_i`` from ``t_i`` on; the prediction
``D_i X (v_i - w_i) = D_i X u_i`` is the gated one exactly. Among the shifts along ``g_i`` the smallest is the
cheapest in the penalty: :math:`\|u + t g\| + t\|g\|` has derivative
:math:`(u^\top g + t\|g\|^2)/\|u + t g\| + \|g\| \ge 0`. A projection in the metric of the data (a QP per group on
all ``N H W`` rows) would be tighter but costs as much as a solve; the shift costs two operator passes.
A group whose violated rows include one with ``x_j^\top g_i = 0`` (the gate gives no room there) is set to
zero. The whole point is then scaled by the ``s in [0, 1]`` that minimises the exact objective along the ray
(closed form: the objective is a quadratic in ``s``), so the start is never worse than the zero block; scaling
keeps every cone constraint.

Why ``relu_start="cold"`` stays the default: on the two benchmark blocks of ``docs/benchmarks.md`` §5 the
gated neurons violate a median 42-56 % of their cone rows, the smallest feasible shift is a median 6e3 times
the neuron's norm, and the scaling sets every group to zero, so the start is the zero block: ADMM then runs
its cold iterations exactly, the interior point starts from its own point, and the gated solve is pure cost.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from solvers.comm import Local
from solvers.report import SolveReport

@dataclass(frozen=True)
class WarmStart:
    """What the warm start of one exact-ReLU solve did.

    ``gated_*``: the gated solve on the same data and gates (its solver, status, iterations, seconds, relative gap);
    ``shifted``/``dropped``: groups whose gate shift was positive / that were set to zero; ``scale``: the factor
    ``s`` of the ray search; ``objective``: the exact objective at the start; ``seconds``: gated solve plus split;
    ``violated_rows``, ``shift_ratio``: over the nonzero gated groups, the median share of their cone rows the
    gated group violates and the median smallest shift ``t ||g|| / ||u||`` (inf where no shift helps).
    """

    gated_solver: str
    gated_status: str
    gated_iterations: int
    gated_seconds: float
    gated_relative_gap: float
    shifted: int
    dropped: int
    scale: float
    objective: float
    seconds: float
    violated_rows: float = math.nan
    shift_ratio: float = math.nan


@dataclass(frozen=True)
class WarmStartedReport(SolveReport):
    """A :class:`~solvers.report.SolveReport` of an exact-ReLU solve started from the gated optimum: ``seconds``
    counts the gated solve and the split too (the cost of the call), ``warm_start`` says what they did."""

    warm_start: WarmStart | None = None


def with_warm_start(report: SolveReport, warm: WarmStart) -> WarmStartedReport:
    """``report`` with the warm start's seconds added and the warm start recorded (also in its message)."""
    fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(SolveReport)}
    fields["seconds"] = report.seconds + warm.seconds
    fields["message"] = (f"started from the gated optimum ({warm.gated_solver} {warm.gated_status}, "
                         f"{warm.gated_iterations} iterations, {warm.gated_seconds:.3g} s, relative gap "
                         f"{warm.gated_relative_gap:.3g}; {warm.shifted} groups shifted along their gates, "
                         f"{warm.dropped} dropped, scale {warm.scale:.3g}); {report.message}")
    return WarmStartedReport(**fields, warm_start=warm)


@torch.no_grad()
def split_gated(relu_operator, gates: Tensor, gated: Tensor, y: Tensor, beta: float,
                comm: Local | None = None) -> tuple[Tensor, int, int, float, float]:
    """``(v, shifted, dropped, scale, objective, (violated_rows, shift_ratio))``: the exact-ReLU point made from the
    gated block ``gated``, and what :class:`WarmStart` records of it.

    ``relu_operator`` is the exact program's operator (``forward(v) = (A v, C v)``, variable ``(2 P C_out, ...)``),
    ``gated`` the gated optimum in the gated operator's layout ``(P C_out, ...)``, ``gates`` ``(P, C_in, k, ...)``.
    The split is computed in float64 and returned in the operator's precision; see the module docstring.
    """
    comm = comm or Local()
    op = relu_operator.to(torch.float64)
    P, C = gates.shape[0], y.shape[1]
    shape = (2, P, C) + tuple(gates.shape[1:])
    u = gated.double().reshape(P, C, *gates.shape[1:])
    along_u = torch.zeros(shape, dtype=torch.float64, device=u.device)
    along_u[0] = u
    along_g = torch.zeros_like(along_u)
    along_g[0] = gates.double()[:, None].expand_as(u)
    cone_u = op.forward(along_u.reshape(op.var_shape))[1][:, 0]  # (N, P, C, *spatial): sigma_i X u_ic
    cone_g = op.forward(along_g.reshape(op.var_shape))[1][:, 0]  # sigma_i X g_i >= 0
    dims = [0] + list(range(3, cone_u.ndim))
    flat = cone_g <= 1e-12 * comm.max(float(cone_g.max()) if cone_g.numel() else 0.0)
    violated = cone_u < -1e-12 * comm.max(float(cone_u.abs().max()) if cone_u.numel() else 0.0)
    need = torch.where(violated & ~flat, -cone_u / torch.where(flat, torch.ones_like(cone_g), cone_g),
                       torch.zeros_like(cone_u)).amax(dim=dims)  # (P, C)
    stuck = (violated & flat).to(torch.float64).amax(dim=dims)  # 1 where no shift along the gate helps
    need, stuck = _group_max(need, comm), _group_max(stuck.double(), comm) > 0
    need = need * (1 + 1e-9)  # rounding of sigma X u + t sigma X g stays on the feasible side
    t = torch.where(stuck, torch.zeros_like(need), need)
    u = torch.where(stuck.reshape(P, C, *([1] * (u.ndim - 2))), torch.zeros_like(u), u)
    shift = t.reshape(P, C, *([1] * (u.ndim - 2))) * along_g[0]
    v = torch.stack([u + shift, shift])  # (2, P, C, ...)
    norms = torch.linalg.vector_norm(v.reshape(2, P, C, -1), dim=-1).sum(dim=0)  # (P, C): ||v_g|| + ||w_g||
    masks = _masks(relu_operator)
    if masks is not None:  # one scale per group, s >= 0, by the quadratic the objective is in s
        picked = cone_u * masks.to(cone_u)[:, :, None]  # (N, P, C, *spatial): D_i X u_ic, group by group
        scales = torch.stack([_group_scales(picked[:, :, c], y[:, c].double(), beta * norms[:, c], comm)
                              for c in range(C)], dim=1)  # (P, C)
    else:  # streamed masks not cached: one scale for all groups
        scales = torch.ones(P, C, dtype=torch.float64, device=u.device)
    v = v * scales.reshape(1, P, C, *([1] * (u.ndim - 2)))
    pred = op.forward(v.reshape(op.var_shape))[0]
    y64 = y.double()
    fit = comm.sum(float(torch.sum(pred * pred)))
    penalty = beta * float(torch.linalg.vector_norm(v.reshape(2 * P * C, -1), dim=1).sum())
    scale = 0.0 if fit <= 0 else max((comm.sum(float(torch.sum(pred * y64))) - penalty) / fit, 0.0)
    residual = comm.sum(float(torch.sum((scale * pred - y64) ** 2)))
    objective = 0.5 * residual + scale * penalty
    kept = (scales * scale > 0) & ~stuck
    shifted = int(((t > 0) & kept).sum())
    nonzero = torch.linalg.vector_norm(gated.double().reshape(P, C, -1), dim=-1) > 0
    rows = max(comm.sum(float(cone_u[:, 0, 0].numel())), 1.0)  # N H W of every group, all ranks
    share = _group_sum(violated.to(torch.float64).sum(dim=dims), comm) / rows
    ratio = torch.where(stuck, torch.full_like(need, math.inf),
                        need * torch.linalg.vector_norm(gates.double().reshape(P, 1, -1), dim=-1)
                        / torch.linalg.vector_norm(gated.double().reshape(P, C, -1), dim=-1).clamp(min=1e-300))
    found = ((float(share[nonzero].median()), float(ratio[nonzero].median())) if bool(nonzero.any())
             else (math.nan, math.nan))
    return (scale * v).reshape(op.var_shape).to(gated.dtype), shifted, int((~kept).sum()), scale, objective, found


def _masks(operator) -> Tensor | None:
    """The arrangement masks ``(N, P, *spatial)`` of an operator (None where a streamed one does not cache them)."""
    masks = getattr(operator, "masks", None)
    if masks is None and getattr(operator, "_masks", None) is not None:
        masks = torch.cat(operator._masks)
    return masks


def _group_scales(picked: Tensor, y: Tensor, penalties: Tensor, comm: Local, steps: int = 300) -> Tensor:
    """``argmin_{s >= 0} 1/2 ||sum_g s_g p_g - y||^2 + sum_g s_g penalty_g`` for group predictions ``picked``
    ``(N, G, *spatial)`` (``p_g`` = ``picked[:, g]``) and one output ``y (N, *spatial)``: a ``G``-square
    non-negative QP, by projected accelerated gradient steps."""
    G = picked.shape[1]
    flat = picked.transpose(0, 1).reshape(G, -1)
    Q = comm.sum_tensor(flat @ flat.T)
    b = comm.sum_tensor(flat @ y.reshape(-1)) - penalties
    top = float(torch.linalg.eigvalsh(Q).max()) if G else 0.0
    s = torch.zeros(G, dtype=Q.dtype, device=Q.device)
    if top <= 0:
        return s
    z, momentum = s, 1.0
    for _ in range(steps):
        following = torch.clamp(z - (Q @ z - b) / top, min=0.0)
        nxt = 0.5 * (1 + (1 + 4 * momentum * momentum) ** 0.5)
        z = following + (momentum - 1) / nxt * (following - s)
        s, momentum = following, nxt
    return s


def _group_sum(values: Tensor, comm: Local) -> Tensor:
    """Entry-wise sum of ``values`` over the ranks of ``comm``."""
    return values if comm.world_size <= 1 else comm.sum_tensor(values)


def _group_max(values: Tensor, comm: Local) -> Tensor:
    """Entry-wise maximum of ``values`` over the ranks of ``comm`` (one reduction per entry: ``P C`` numbers)."""
    if comm.world_size <= 1:
        return values
    flat = values.reshape(-1)
    return torch.tensor([comm.max(float(a)) for a in flat], dtype=values.dtype,
                        device=values.device).reshape(values.shape)
