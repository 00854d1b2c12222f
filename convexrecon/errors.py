"""Every exception and warning the package raises, in one place.

Messages follow one style: they name the parameter (or file, or setting), what was
expected and what was found, e.g. ``"The 'kernel_size' parameter must be odd ... Got 4 instead."``.

``SolverError`` and ``ConvergenceWarning`` are defined in :mod:`solvers.report`
(the solvers know nothing of this package) and re-exported here, so user code
needs one import for everything it may catch.
"""

from __future__ import annotations

from solvers.report import ConvergenceWarning, SolverError


class DataWarning(UserWarning):
    """A data file or directory had a problem the reader could work around, or a choice made on the data may be
    poor (named in the message)."""


class SelectionWarning(DataWarning):
    """A value chosen on held-out data (a block's β ratio, a data-consistency λ, CS's λ) is the smallest or largest
    of its candidates: the best value may lie outside them; the message names the setting to extend."""


def grid_edge(chosen: float, candidates) -> tuple[str, str] | None:
    """``("smallest", "smaller")`` or ``("largest", "larger")`` when ``chosen`` is that end of two or more distinct
    ``candidates``, else None: the test behind every :class:`SelectionWarning`."""
    values = sorted({float(c) for c in candidates})
    if len(values) < 2 or float(chosen) not in (values[0], values[-1]):
        return None
    return ("smallest", "smaller") if float(chosen) == values[0] else ("largest", "larger")


class PerformanceWarning(UserWarning):
    """A setting will make a computation far slower than an alternative the message names."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or was written by a run with other settings or data."""


class MemoryBudgetError(MemoryError):
    """A computation would need more memory than is available (the message says which setting to reduce)."""


__all__ = ["CheckpointError", "ConvergenceWarning", "DataWarning", "MemoryBudgetError", "PerformanceWarning",
           "SelectionWarning", "SolverError"]
