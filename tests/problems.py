"""Small known-answer block problems shared by the solver tests."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from convexrecon.block.arrangements import arrangement_masks, conv_functions, draw_gates, patch_problem
from solvers.reference import ReferenceSolution, solve_arrangement_program


@dataclass(frozen=True)
class BlockProblem:
    inputs: torch.Tensor
    targets: torch.Tensor
    gates: torch.Tensor
    kernel_size: int
    beta: float
    activation: str


def make_problem(seed: int, *, c_out: int, k: int, activation: str, num_gates: int = 4, shape=(7, 5)) -> BlockProblem:
    """A planted two-layer ReLU net plus noise on odd-sized random images (``shape`` of 3 ints: volumes)."""
    gen = torch.Generator().manual_seed(seed)
    conv, _ = conv_functions(len(shape))
    x = torch.randn(2, 2, *shape, generator=gen, dtype=torch.float64)
    teacher = torch.randn((3, 2) + (k,) * len(shape), generator=gen, dtype=torch.float64)
    hidden = torch.relu(conv(x, teacher, padding=k // 2))
    y = torch.einsum("nm...,mc->nc...", hidden, torch.randn(3, c_out, generator=gen, dtype=torch.float64))
    y = y + 0.1 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    gates = draw_gates(num_gates, 2, k, seed=seed + 100, spatial_dims=len(shape))
    return BlockProblem(x, y, gates, k, 0.5, activation)


@lru_cache(maxsize=None)
def reference(seed: int, c_out: int, k: int, activation: str, shape=(7, 5)) -> tuple[BlockProblem, ReferenceSolution]:
    p = make_problem(seed, c_out=c_out, k=k, activation=activation, shape=shape)
    X, D, Y = patch_problem(p.inputs, arrangement_masks(p.inputs, p.gates), p.targets, k)
    return p, solve_arrangement_program(X, D, Y, p.beta, activation)


CASES = [
    (seed, c_out, k, act)
    for seed, (c_out, k) in enumerate([(1, 3), (2, 3), (1, 5), (2, 5)])
    for act in ("gated", "relu")
]

# tiny volumes (N = 2, 6 x 7 x 5, k = 3): mostly gated, one relu (cvxpy's relu solve is the slow one)
VOLUME_SHAPE = (6, 7, 5)
VOLUME_CASES = [(20, 1, 3, "gated"), (21, 2, 3, "gated"), (22, 1, 3, "relu")]
