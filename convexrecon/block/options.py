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
RELU_STARTS = ("cold", "gated")
DEFAULT_BETA_RATIO = 1e-3
"""``beta = DEFAULT_BETA_RATIO * beta_max`` when no ``beta`` is given to ``fit_layer`` or ``BlockSettings``."""
CLI_BETA_RATIO = 1e-2
"""The ``train`` command's default ratio: its blocks are fitted on small windows (24 px, P = 8) within a
400-iteration budget, where the larger weight regularises more and converges faster. It is not tuned on
held-out data; ``--beta-ratios`` chooses per block on held-out volumes instead."""


@dataclass(frozen=True)
class FitOptions:
    """How one two-layer block is posed and solved: the one description of every setting of
    :func:`~convexrecon.block.fit.fit_layer` and :func:`~convexrecon.block.fit.fit_layer_path`.

    Attributes
    ----------
    kernel_size
        Odd ``k`` of the first layer (zero padding ``k // 2``).
    num_arrangements
        ``P``, number of sampled gates (ignored when ``gates`` are given). The hidden width is at most
        ``2 P C_out`` (relu) or ``P C_out`` (gated).
    activation
        ``"relu"`` (the exact, cone-constrained program) or ``"gated"`` (its relaxation).
    seed
        Seed of the default gates.
    gate_sampling
        How the default gates are drawn: ``"gaussian"`` (i.i.d.) or ``"antithetic"`` (complementary pairs
        ``g, -g``), see :func:`~convexrecon.block.arrangements.draw_gates`.
    beta_ratio
        ``beta = beta_ratio * beta_max`` when no explicit ``beta`` is given (default
        :data:`DEFAULT_BETA_RATIO`).
    device, dtype
        Where and in which precision to solve (float32 or float64); the final
        certificate is always evaluated in float64. ``device=None`` is the CPU.
    tol
        Relative duality-gap tolerance (and relative violation tolerance for relu).
    max_iter
        Iteration budget. None: the solver's own default
        (:data:`~convexrecon.block.dispatch.DEFAULT_MAX_ITER`: 10,000 gated FISTA, 20,000 relu ADMM,
        50,000 relu PDHG, 200 Newton steps per output for the interior-point methods). For gated FISTA
        the conjugate-gradient iterations of its Newton steps count too (each is one forward and one
        adjoint, like a FISTA iteration).
    progress
        Show a progress bar with the relative gap.
    chunk_size
        Images per chunk inside the operator (bounds temporary memory; default about 2 MiB of conv
        intermediate per chunk, see :func:`~convexrecon.block.arrangements.default_chunk_size`); for an
        ``h5py.Dataset`` input, images read per chunk (default 8).
    gate_chunk
        Arrangements per convolution (in-memory inputs): bounds the conv intermediate to
        ``S * gate_chunk * C_out`` channels and keeps the masks as booleans only — for one large volume,
        where ``chunk_size`` cannot help. Default: all gates at once.
    shard
        Treat the inputs and targets as this process's shard of one data set spread over a
        ``torch.distributed`` process group: the objective is the sum over all ranks, every reduction
        (objective, gradient, dual certificate) is all-reduced, and every rank returns the same block,
        equal up to rounding to a single-process solve on all the data. Default (None): True when
        ``torch.distributed`` is initialized with more than one rank. Every rank must call ``fit_layer``
        with the same settings; shards may hold different numbers and sizes of images. Gates come from
        ``seed`` (or rank 0's ``gates``).
    relu_method
        Solver of the exact-ReLU program (ignored for gated blocks; the choice is made by
        :func:`~convexrecon.block.dispatch.choose_solver`).

        * ``"auto"``: the interior point where it fits (in-memory data in one process within the limits
          of :func:`solvers.interior.fits_interior_point`, the Newton-system limit raised to
          :data:`solvers.interior.STRETCH_NEWTON_UNKNOWNS` where its dense matrices fit in half the
          available memory: :func:`~convexrecon.block.dispatch.newton_limit`), ADMM otherwise and for ``beta >= beta_max``
          (zero block). When the interior point ends without certifying (it stalls on some small
          over-parameterised blocks, ``P C_in k^2`` far above ``N H W``), ADMM solves the block too and
          the better certified of the two is returned
          (:func:`~convexrecon.block.dispatch.keep_better_certified`: ``report.message`` says so,
          ``report.solver`` says whose block it is; one ``ConvergenceWarning`` when neither reached
          ``tol``).
        * ``"admm"``: ADMM on the cone values ``z = C v`` (:mod:`solvers.admm`): matrix-free with the
          masked conv, streaming (with cached masks), sharding and on a GPU like the gated path, plus
          the ``C_in k^2``-square Gram matrix of the patches and about eight cone-sized buffers
          ``(N, 2, P, C_out, H, W)``. Its ``report.primal`` is the returned block's own objective and its
          dual comes from the cone multipliers, so ``primal - p* <= gap`` always; it is ``optimal`` only
          with both the block's and the program's value within ``tol`` above the dual bound and
          violations within ``tol / 100``.
        * ``"pdhg"``: matrix-free restarted PDHG (:mod:`solvers.pdhg`; slower than ADMM on conv blocks,
          kept for comparison).
        * ``"interior_point"``: a primal-dual interior-point method on the explicit patch matrix, float64
          (:func:`solvers.interior.solve_relu_program_ipm`), for in-memory problems within its size limits
          (:data:`solvers.interior.MAX_NEWTON_UNKNOWNS` unknowns in the Newton system
          ``min(N H W, P C_in k^2)``, or the memory-dependent stretch of
          :func:`~convexrecon.block.dispatch.newton_limit`, :data:`~solvers.interior.MAX_CONE_ROWS` cone rows ``N H W x 2 P`` and,
          when ``N H W`` is the smaller side, :data:`~solvers.interior.MAX_ARRAY_NUMBERS` numbers in the
          Woodbury factor ``N H W x P C_in k^2``); far fewer iterations to a tight certificate, strictly
          feasible iterates.
    relu_start
        Where the exact-ReLU solve starts (ignored for gated blocks): ``"cold"`` (default: ADMM from the
        zero block, or the previous block of a path; the interior point from its gate directions) or
        ``"gated"``: the gated program is solved first on the same data and gates (``gated_method``, same
        ``tol``), its optimum split into a feasible exact-ReLU point
        (:func:`~convexrecon.block.warm_start.split_gated`: the smallest shift of each group along its gate,
        then the best scale) and the exact solver started there (the interior point a little inside the
        cones). The report is then a :class:`~convexrecon.block.warm_start.WarmStartedReport`: its
        ``seconds`` count the gated solve too, its ``warm_start`` holds the gated solve's iterations and
        seconds. The default stays ``"cold"``: on both benchmark blocks the split keeps no group (the
        gated neurons need gate shifts a median 6e3 times their norm), so the warm start costs the gated
        solve and saves no iteration (``docs/benchmarks.md`` §5).
    gated_method
        Solver of the gated program (ignored for relu blocks): ``"fista"`` (matrix-free FISTA with a
        Newton-CG tail, :mod:`solvers.group_lasso`; any size, streaming and sharding) or
        ``"interior_point"`` (a barrier Newton method on the explicit patch matrix, float64,
        :func:`solvers.interior.solve_gated_program_ipm`, for in-memory problems within
        :func:`solvers.interior.fits_gated_interior_point`: a few dozen small factorisations to a tight
        certificate).
    allow_tf32
        On CUDA, let float32 convolutions and matrix products run in TF32 (10-bit mantissa; about 3e-4
        relative error per product). Default False: TF32 is switched off for the duration of the solve
        and the previous settings are restored after (:func:`~convexrecon.block.precision.tf32_mode`), so
        GPU iterates carry float32 rounding only, as on the CPU. With True the solve is faster on
        Ampere/Hopper GPUs but its gradient no longer matches the float64 certificate to float32
        accuracy: the certificate stays honest, yet may stall above a tight ``tol``. No effect on the
        CPU or in float64.
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
    relu_start: str = "cold"
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
        fix("relu_start", checks.choice("relu_start", self.relu_start, RELU_STARTS))

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
