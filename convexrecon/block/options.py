"""Every setting of a block solve, with its default, in one frozen object.

:func:`~convexrecon.block.fit.fit_layer` takes these as keyword arguments
(``fit_layer(x, y, kernel_size=5, tol=1e-4)``) or as one object
(``fit_layer(x, y, options=FitOptions(kernel_size=5, tol=1e-4))``); both are
validated here, once, with messages that name the setting, what was expected
and what was found. The layer-wise trainer builds one per block from its
:class:`~convexrecon.stack.layerwise.BlockSettings`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch

from convexrecon import checks
from convexrecon.block.arrangements import GATE_SAMPLINGS

ACTIVATIONS = ("relu", "gated")
RELU_METHODS = ("auto", "admm", "pdhg", "interior_point")
GATED_METHODS = ("fista", "interior_point")
DEFAULT_BETA_RATIO = 1e-3
"""``beta = DEFAULT_BETA_RATIO * beta_max`` when no ``beta`` is given to ``fit_layer`` or ``BlockSettings``."""
CLI_BETA_RATIO = 1e-2
"""The ``train`` command's default ratio: its blocks are fitted on small windows (24 px, P = 8) within a
400-iteration budget, where the larger weight regularises more and converges faster. Kept from the earlier
CLI default, not re-tuned; ``--beta-ratios`` chooses per block on held-out volumes instead."""


@dataclass(frozen=True)
class FitOptions:
    """How one two-layer block is posed and solved.

    Attributes
    ----------
    kernel_size
        Odd ``k`` of the first layer (zero padding ``k // 2``).
    num_arrangements
        ``P``, number of sampled gates (ignored when ``gates`` are given).
    activation
        ``"relu"`` (the exact, cone-constrained program) or ``"gated"`` (its relaxation).
    seed
        Seed of the gates.
    gate_sampling
        ``"gaussian"`` (i.i.d.) or ``"antithetic"`` (pairs ``g, -g``), see
        :func:`~convexrecon.block.arrangements.draw_gates`.
    beta_ratio
        ``beta = beta_ratio * beta_max`` when no explicit ``beta`` is given.
    device, dtype
        Where and in which precision to solve (float32 or float64); the final
        certificate is always evaluated in float64. ``device=None`` is the CPU.
    tol
        Relative duality-gap tolerance (and relative violation tolerance for relu).
    max_iter
        Iteration budget (None: 10,000 gated, 50,000 relu; 200 Newton steps per
        output for the interior-point methods).
    progress
        Show a progress bar with the relative gap.
    chunk_size, gate_chunk
        Images per chunk inside the operator, and arrangements per convolution
        (see :func:`~convexrecon.block.fit.fit_layer`).
    shard
        Treat the inputs as this process's shard of a ``torch.distributed`` data set
        (None: when a process group of more than one rank is initialized).
    relu_method, gated_method
        Solvers of the exact and of the gated program.
    allow_tf32
        Let CUDA float32 convolutions and products run in TF32 during the solve.
    """

    kernel_size: int = 7
    num_arrangements: int = 64
    activation: str = "relu"
    seed: int = 0
    gate_sampling: str = "gaussian"
    beta_ratio: float = DEFAULT_BETA_RATIO
    device: Any = None
    dtype: torch.dtype = torch.float32
    tol: float = 1e-6
    max_iter: int | None = None
    progress: bool = False
    chunk_size: int | None = None
    gate_chunk: int | None = None
    shard: bool | None = None
    relu_method: str = "auto"
    gated_method: str = "fista"
    allow_tf32: bool = False

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("kernel_size", checks.positive_int("kernel_size", self.kernel_size, odd=True))
        fix("num_arrangements", checks.positive_int("num_arrangements", self.num_arrangements))
        fix("activation", checks.choice("activation", self.activation, ACTIVATIONS))
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral):
            raise TypeError(f"The 'seed' parameter must be an int. Got {type(self.seed).__name__} {self.seed!r} instead.")
        fix("seed", int(self.seed))
        fix("gate_sampling", checks.choice("gate_sampling", self.gate_sampling, GATE_SAMPLINGS))
        fix("beta_ratio", checks.positive_float("beta_ratio", self.beta_ratio))
        fix("device", checks.device_of(self.device))
        fix("dtype", checks.float_dtype(self.dtype))
        fix("tol", checks.positive_float("tol", self.tol))
        for name in ("max_iter", "chunk_size", "gate_chunk"):
            if getattr(self, name) is not None:
                fix(name, checks.positive_int(name, getattr(self, name)))
        for name in ("progress", "allow_tf32"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"The '{name}' parameter must be True or False. Got {getattr(self, name)!r} instead.")
        if self.shard is not None and not isinstance(self.shard, bool):
            raise TypeError(f"The 'shard' parameter must be True, False or None. Got {self.shard!r} instead.")
        fix("relu_method", checks.choice("relu_method", self.relu_method, RELU_METHODS))
        fix("gated_method", checks.choice("gated_method", self.gated_method, GATED_METHODS))

    @property
    def relu(self) -> bool:
        return self.activation == "relu"

    @classmethod
    def of(cls, options: FitOptions | None = None, **changes: Any) -> FitOptions:
        """``options`` (default: all defaults) with ``changes`` applied; unknown names raise ``TypeError``."""
        if options is not None and not isinstance(options, cls):
            raise TypeError(f"The 'options' parameter must be a FitOptions or None. Got {type(options).__name__} instead.")
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}; the settings of a "
                            f"block solve are the fields of FitOptions")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **changes) if changes else base
