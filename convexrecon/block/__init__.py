"""One two-layer block and its convex program (the seed's building unit).

* :mod:`~convexrecon.block.arrangements` — gates, arrangement masks and the masked-conv operator;
* :mod:`~convexrecon.block.options` — every setting of a block solve (:class:`FitOptions`);
* :mod:`~convexrecon.block.fit` — :func:`fit_layer`, :func:`fit_layer_path`, :func:`global_check`;
* :mod:`~convexrecon.block.module` — the solved block as a torch module (:class:`ConvexBlock`);
* :mod:`~convexrecon.block.streaming` — data larger than memory, read chunk by chunk;
* :mod:`~convexrecon.block.guard` — the memory estimate checked before a solve.
"""

from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates, patch_problem
from convexrecon.block.fit import GlobalCheck, beta_max, fit_layer, fit_layer_path, global_check, problem_beta_max
from convexrecon.block.module import ConvexBlock, block_from_solution
from convexrecon.block.options import FitOptions

__all__ = ["ArrangementConv", "ConvexBlock", "FitOptions", "GlobalCheck", "arrangement_masks", "beta_max",
           "block_from_solution", "draw_gates", "fit_layer", "fit_layer_path", "global_check", "patch_problem",
           "problem_beta_max"]
