r"""The pieces both interior-point methods of :mod:`solvers.interior` share.

* the group norms smoothed by the second-order-cone barrier with ``t`` eliminated,
  ``h_\mu(u) = \beta t - \mu\log(t^2 - \|u\|^2)`` at its minimising
  ``t = (\mu + \sqrt{\mu^2 + \beta^2\|u\|^2})/\beta`` (:func:`soc_t`, :func:`soc_barrier`);
* the data term of their Newton systems, ``B_p^T B_p`` (:func:`data_gram`), and the Cholesky
  factorisation that survives rounding (:func:`cholesky`);
* the whole-program certificate as a sum of per-output ones (:func:`certify_outputs`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .certificate import Certificate, certify


def data_gram(X: Tensor, D: Tensor, blocks: int = 8) -> Tensor:
    """``B_p^T B_p = [X^T D_i D_j X]_{ij}`` of size ``(P d, P d)`` for patches ``X (n, d)`` and masks ``D (n, P)``
    (0/1, the dtype of ``X``), accumulated over row chunks.

    It is the data term of the exact-ReLU method's reduced system in ``p_i = v_i - w_i`` (the only combination
    the prediction sees), and the whole data term of the gated program: the fixed cost of any direct Newton
    method on a block. Only the lower triangle is multiplied (row blocks, as in
    :func:`solvers.interior_relu.lower_gram`: 9/16 of the products), then mirrored.
    """
    n, d = X.shape
    Pd = D.shape[1] * d
    out = torch.zeros(Pd, Pd, dtype=X.dtype, device=X.device)
    blocks = blocks if Pd >= 1024 else 1  # small blocks of rows multiply slower than one product
    edges = [round(Pd * b / blocks) for b in range(blocks + 1)]
    step = max(1, 2**22 // max(Pd, 1))
    for start in range(0, n, step):
        Xc, Dc = X[start:start + step], D[start:start + step]
        Ft = (Dc[:, :, None] * Xc[:, None, :]).reshape(Xc.shape[0], Pd).T  # (P d, m)
        for lo, hi in zip(edges[:-1], edges[1:]):
            if hi > lo:
                out[lo:hi, :hi].addmm_(Ft[lo:hi], Ft[:hi].T)
    return torch.tril(out) + torch.tril(out, -1).T


def certify_outputs(U: Tensor, theta: Tensor, Y: Tensor, direction: Tensor, beta: float,
                    violation: float = 0.0) -> Certificate:
    """Certificate of the whole program from ``U, direction (G, c, d)`` and ``theta, Y (n, c)``: the outputs
    share no group, so the program is a sum of ``c`` independent ones and the sum of their own (separately
    scaled) dual bounds is a bound; one scaling of ``theta`` for all outputs would be a weaker one."""
    certs = [certify(U[:, o], theta[:, o], Y[:, o], direction[:, o], beta) for o in range(Y.shape[1])]
    return Certificate(sum(cert.primal for cert in certs), sum(cert.dual for cert in certs), violation)


def soc_t(u: Tensor, beta: float, mu: float) -> tuple[Tensor, Tensor, Tensor]:
    """``|u_g|``, ``root = sqrt(mu^2 + beta^2 |u_g|^2)`` and the ``t = (mu + root) / beta`` that minimises
    ``beta t - mu log(t^2 - |u_g|^2)``, per group."""
    norms = u.norm(dim=1)
    root = torch.sqrt(mu**2 + (beta * norms) ** 2)
    return norms, root, (mu + root) / beta


def soc_barrier(u: Tensor, beta: float, mu: float) -> tuple[Tensor, Tensor]:
    """Gradient ``(G, d)`` and Hessian blocks ``(G, d, d)`` of ``h_mu(u_g) = beta t - mu log(t^2 - |u_g|^2)`` at its
    minimising ``t`` (:func:`soc_t`): gradient ``beta u / t``."""
    norms, root, t = soc_t(u, beta, mu)
    # Hessian: (beta/t) I - beta^2 / (t^2 root) u u^T = a (I - w w^T) + b w w^T with w = u / |u|, a = beta / t
    # and the curvature along u, b = beta^2 mu / ((mu + root) root), written without the cancellation of
    # a - beta^2 |u|^2 / (t^2 root) (which goes negative in rounding as mu -> 0)
    a = beta / t
    b = beta**2 * mu / ((mu + root) * root)
    w = u / norms.clamp(min=1e-300)[:, None]
    eye = torch.eye(u.shape[1], dtype=u.dtype, device=u.device)
    return beta * u / t[:, None], a[:, None, None] * eye + (b - a)[:, None, None] * w[:, :, None] * w[:, None, :]


def cholesky(A: Tensor) -> Tensor:
    """Cholesky factor, with a growing diagonal shift when rounding makes ``A`` look indefinite.

    Raises ``ValueError`` when even the largest shift leaves ``A`` indefinite; both methods then stop at their
    best iterate (the data are as ill-conditioned as the precision allows).
    """
    L, info = torch.linalg.cholesky_ex(A)
    if not bool((info != 0).any()):
        return L
    scale = A.diagonal(dim1=-2, dim2=-1).abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(A.dtype).tiny)
    # shifts from ~50 units of rounding up (float32's 1e-6..1e-4 regularise the early, low-precision systems)
    for shift in ((1e-14, 1e-12, 1e-10, 1e-8) if A.dtype == torch.float64 else (1e-6, 1e-5, 1e-4)):
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        L, info = torch.linalg.cholesky_ex(A + (shift * scale)[..., None] * eye)
        if not bool((info != 0).any()):
            return L
    raise ValueError("interior point: the Newton system is not positive definite (data too ill-conditioned)")
