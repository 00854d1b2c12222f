"""Duality-gap certificates and the bookkeeping shared by the solvers."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .comm import Local
from .groups import group_norms, group_penalty, scaled_dual_value
from .report import ConvergenceWarning, IterationRecord, SolveReport, Status, relative


@dataclass(frozen=True)
class Certificate:
    """Primal value, a dual lower bound, and the constraint violation at one point."""

    primal: float
    dual: float
    max_violation: float = 0.0

    @property
    def gap(self) -> float:
        return self.primal - self.dual

    @property
    def relative_gap(self) -> float:
        return relative(self.gap, self.primal)


def certify(v: Tensor, residual: Tensor, y: Tensor, dual_direction: Tensor, beta: float,
            max_violation: float = 0.0, comm: Local | None = None) -> Certificate:
    """Certificate at ``v`` from its residual ``theta = y - A v``.

    ``dual_direction`` is ``A^T theta (+ C^T lambda)``, shaped like ``v``
    (already summed over shards). Sums are accumulated in float64 whatever the
    working precision; ``comm`` sums ``||theta||^2`` and ``theta^T y`` over
    shards.
    """
    comm = comm or Local()
    theta_sq = comm.sum(float(torch.sum(residual * residual, dtype=torch.float64)))
    theta_dot_y = comm.sum(float(torch.sum(residual * y, dtype=torch.float64)))
    max_norm = float(group_norms(dual_direction.double()).max()) if dual_direction.numel() else 0.0
    primal = 0.5 * theta_sq + beta * float(group_penalty(v))
    dual, _ = scaled_dual_value(theta_dot_y, theta_sq, max_norm, beta)
    return Certificate(primal, dual, max_violation)


class Monitor:
    """Collects certificates, decides convergence, and builds the report.

    A run is ``optimal`` once the relative gap is at most ``tol`` and the
    violation at most ``feas_tol``; ``inaccurate`` when the gap has not
    improved for ``patience`` checks while already within a few thousand
    machine epsilons (the working precision is exhausted).
    """

    def __init__(self, solver: str, tol: float, feas_tol: float, dtype: torch.dtype,
                 callback: Callable[[IterationRecord], None] | None = None, patience: int = 30) -> None:
        self.solver = solver
        self.tol = tol
        self.feas_tol = feas_tol
        self.callback = callback
        self.patience = patience
        self.precision_floor = 1e3 * torch.finfo(dtype).eps
        self.start = time.perf_counter()
        self.history: list[IterationRecord] = []
        self.best = math.inf
        self.since_best = 0

    def record(self, iteration: int, cert: Certificate) -> IterationRecord:
        rec = IterationRecord(iteration, time.perf_counter() - self.start, cert.primal, cert.dual,
                              cert.gap, cert.relative_gap, cert.max_violation)
        self.history.append(rec)
        if self.callback is not None:
            self.callback(rec)
        score = max(cert.relative_gap, cert.max_violation)
        if score < 0.99 * self.best:
            self.best, self.since_best = score, 0
        else:
            self.since_best += 1
        return rec

    def converged(self, cert: Certificate) -> bool:
        return cert.relative_gap <= self.tol and cert.max_violation <= self.feas_tol

    def stalled(self, cert: Certificate) -> bool:
        return self.since_best >= self.patience and max(cert.relative_gap, cert.max_violation) <= self.precision_floor

    def report(self, cert: Certificate, iterations: int, status: Status, message: str = "") -> SolveReport:
        if not all(map(math.isfinite, (cert.primal, cert.dual))):
            status = Status.DIVERGED
        rep = SolveReport(
            solver=self.solver, status=status, primal=cert.primal, dual=cert.dual, gap=cert.gap,
            relative_gap=cert.relative_gap, max_violation=cert.max_violation, iterations=iterations,
            seconds=time.perf_counter() - self.start, history=tuple(self.history), message=message,
        )
        if status is not Status.OPTIMAL:
            warnings.warn(
                f"{self.solver} stopped with status '{status}' after {iterations} iterations: "
                f"relative gap {cert.relative_gap:.3g} (tol {self.tol:.3g}), relative violation "
                f"{cert.max_violation:.3g} (tol {self.feas_tol:.3g}). {message}",
                ConvergenceWarning, stacklevel=3,
            )
        return rep


def status_of(reason: str, monitor: Monitor, cert: Certificate) -> Status:
    """The report status of a first-order solve that stopped for ``reason`` with certificate ``cert``."""
    if reason == "diverged" or not math.isfinite(cert.primal):
        return Status.DIVERGED
    if monitor.converged(cert):
        return Status.OPTIMAL
    if reason in ("checked", "stalled", "precision"):  # stopped by a stall test or the working precision
        return Status.INACCURATE
    return Status.MAX_ITER
