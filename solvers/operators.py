"""The tiny linear-operator protocol that the solvers work with.

A solver variable ``v`` is a tensor whose leading axis indexes groups
(``v[g]`` is group ``g``, of any trailing shape). A data operator maps ``v``
to a prediction of any shape; a cone operator maps ``v`` to constraint values
that must be non-negative. Solvers only call ``forward`` and ``adjoint``; the
operator owns its data, device and dtype.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class LinearOperator(Protocol):
    """``forward(v) = A v`` and ``adjoint(r) = A^T r``."""

    def forward(self, v: Tensor) -> Tensor: ...

    def adjoint(self, r: Tensor) -> Tensor: ...


@runtime_checkable
class ConstrainedOperator(Protocol):
    """A data operator ``A`` and a cone operator ``C`` sharing one variable.

    ``forward(v) = (A v, C v)`` and ``adjoint(r, mu) = A^T r + C^T mu``; an
    implementation may fuse the two (the convolutional block computes both from
    one convolution).
    """

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]: ...

    def adjoint(self, r: Tensor, mu: Tensor) -> Tensor: ...


class MatrixOperator:
    """A dense (or sparse) matrix acting on a grouped variable.

    Parameters
    ----------
    matrix
        ``(m, G * d)`` matrix; the variable has shape ``var_shape = (G, d...)``
        and is flattened in row-major order.
    var_shape
        Shape of the variable, leading axis = groups.
    """

    def __init__(self, matrix: Tensor, var_shape: tuple[int, ...]) -> None:
        numel = 1
        for s in var_shape:
            numel *= s
        if matrix.ndim != 2 or matrix.shape[1] != numel:
            raise ValueError(
                f"matrix must have shape (m, {numel}) for var_shape {tuple(var_shape)}; "
                f"got {tuple(matrix.shape)}"
            )
        self.matrix = matrix
        self.var_shape = tuple(var_shape)

    def forward(self, v: Tensor) -> Tensor:
        return self.matrix @ v.reshape(-1)

    def adjoint(self, r: Tensor) -> Tensor:
        return (self.matrix.T @ r.reshape(-1)).reshape(self.var_shape)


class StackedOperator:
    """``ConstrainedOperator`` built from two separate linear operators."""

    def __init__(self, data: LinearOperator, cone: LinearOperator) -> None:
        self.data = data
        self.cone = cone

    def forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.data.forward(v), self.cone.forward(v)

    def adjoint(self, r: Tensor, mu: Tensor) -> Tensor:
        return self.data.adjoint(r) + self.cone.adjoint(mu)


def operator_norm_sq(
    forward, adjoint, var_like: Tensor, *, iterations: int = 30, seed: int = 0
) -> float:
    """Estimate ``||A||_2^2`` (largest eigenvalue of ``A^T A``) by power iteration.

    The estimate approaches the true value from below; callers add a safety
    margin or backtrack.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(var_like.shape, generator=gen, dtype=var_like.dtype).to(var_like.device)
    v = v / v.norm()
    estimate = 0.0
    for _ in range(iterations):
        w = adjoint(forward(v))
        norm = float(w.norm())
        if norm == 0.0 or not torch.isfinite(torch.tensor(norm)):
            return norm
        estimate = norm
        v = w / norm
    return estimate
