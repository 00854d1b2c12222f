"""One status vocabulary and one report for every solver in the project.

Every solver (FISTA, the augmented Lagrangian, the cvxpy reference) returns a
:class:`SolveReport`; its ``status`` is a :class:`Status`, never a raw string.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Status(str, Enum):
    """Outcome of a solve.

    ``OPTIMAL``: the certified relative duality gap (and, for constrained
    programs, the relative constraint violation) is within tolerance.
    ``INACCURATE``: the solver stopped making progress before reaching the
    tolerance (typically the working precision is exhausted); the certificate
    in the report is still valid, only larger than asked for.
    ``MAX_ITER``: the iteration budget ran out first.
    ``DIVERGED``: the iterates became non-finite.
    """

    OPTIMAL = "optimal"
    INACCURATE = "inaccurate"
    MAX_ITER = "max_iter"
    DIVERGED = "diverged"

    def __str__(self) -> str:  # plain value in messages and JSON
        return self.value


class ConvergenceWarning(UserWarning):
    """A solve ended without reaching its tolerance (status other than optimal)."""


class SolverError(RuntimeError):
    """A solver failed outright; the message names the solver."""


@dataclass(frozen=True)
class IterationRecord:
    """One certificate evaluation during a solve."""

    iteration: int
    seconds: float
    primal: float
    dual: float
    gap: float
    relative_gap: float
    max_violation: float


@dataclass(frozen=True)
class SolveReport:
    """Result of one solve, with its optimality certificate.

    Attributes
    ----------
    solver
        Name of the method (``"fista"``, ``"augmented_lagrangian"``,
        ``"cvxpy:CLARABEL"``...).
    status
        See :class:`Status`.
    primal
        Objective value at the returned point.
    dual
        Value of a dual-feasible point; ``primal - dual`` bounds the
        suboptimality ``primal - p*`` whenever the returned point is feasible.
    gap, relative_gap
        ``primal - dual`` and ``gap / max(|primal|, tiny)``.
    max_violation
        Largest constraint violation, relative to the largest target magnitude
        (0 for unconstrained programs).
    iterations, seconds
        Work done (iterations of the innermost method) and wall-clock time.
    history
        Certificate evaluations made during the solve.
    message
        Free-form detail (why the solver stopped).
    """

    solver: str
    status: Status
    primal: float
    dual: float
    gap: float
    relative_gap: float
    max_violation: float
    iterations: int
    seconds: float
    history: tuple[IterationRecord, ...] = field(default_factory=tuple)
    message: str = ""

    @property
    def optimal(self) -> bool:
        return self.status is Status.OPTIMAL

    def to_dict(self, with_history: bool = False) -> dict[str, Any]:
        """JSON-friendly dictionary (non-finite floats become ``None``)."""
        out = asdict(self)
        out["status"] = self.status.value
        if not with_history:
            out.pop("history")
        else:
            out["history"] = [asdict(h) for h in self.history]
        return _finite_or_none(out)


def relative(gap: float, primal: float) -> float:
    """``gap / |primal|`` guarded against a zero objective."""
    return gap / max(abs(primal), 1e-300)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj
