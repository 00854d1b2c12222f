"""One adjoint check for every operator in the project (see test_adjoint.py)."""

from __future__ import annotations

import torch


def assert_adjoint(forward, adjoint, v: torch.Tensor, r, *, rtol: float) -> None:
    """Dot-product test ``<A v, r> = <v, A^T r>`` (``r`` may be a tuple of parts).

    Complex tensors use the real inner product ``Re <a, b>``, for which the
    Hermitian adjoint is the adjoint.
    """
    av = forward(v)
    av = av if isinstance(av, tuple) else (av,)
    r = r if isinstance(r, tuple) else (r,)
    atr = adjoint(*r)
    lhs = sum(_dot(a, b) for a, b in zip(av, r))
    rhs = _dot(v, atr)
    scale = max(abs(lhs), abs(rhs), 1e-300)
    assert abs(lhs - rhs) <= rtol * scale, f"<Av, r> = {lhs!r} but <v, A^T r> = {rhs!r} (relative error {abs(lhs - rhs) / scale:.3g} > {rtol})"


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.is_complex() or b.is_complex():
        return float(torch.sum(a.conj() * b).real)
    return float(torch.sum(a.double() * b.double()))
