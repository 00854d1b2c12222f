"""One two-layer block and its convex program (the layer-wise network's building unit).

* :mod:`~convexrecon.block.arrangements` — gates, arrangement masks and the masked-conv operator;
* :mod:`~convexrecon.block.options` — every setting of a block solve (:class:`FitOptions`);
* :mod:`~convexrecon.block.problem` — the program posed from the data (:func:`block_program`, :func:`beta_max`);
* :mod:`~convexrecon.block.dispatch` — which solver runs it, and the interior point's ADMM fallback;
* :mod:`~convexrecon.block.fit` — :func:`fit_layer`, :func:`fit_layer_path`, :func:`global_check`;
* :mod:`~convexrecon.block.module` — the solved block as a torch module (:class:`ConvexBlock`);
* :mod:`~convexrecon.block.relu_split` — the patch structure of the exact-ReLU ADMM;
* :mod:`~convexrecon.block.streaming` — data larger than memory, read chunk by chunk;
* :mod:`~convexrecon.block.guard` — the memory estimate checked before a solve;
* :mod:`~convexrecon.block.precision` — the TF32 switch every solver and trainer sets.
"""

from convexrecon.block.arrangements import ArrangementConv, arrangement_masks, draw_gates, patch_problem
from convexrecon.block.fit import GlobalCheck, fit_layer, fit_layer_path, global_check, problem_beta_max
from convexrecon.block.module import ConvexBlock, block_from_solution
from convexrecon.block.options import FitOptions
from convexrecon.block.problem import BlockProgram, beta_max, block_program

__all__ = ["ArrangementConv", "BlockProgram", "ConvexBlock", "FitOptions", "GlobalCheck", "arrangement_masks",
           "beta_max", "block_from_solution", "block_program", "draw_gates", "fit_layer", "fit_layer_path",
           "global_check", "patch_problem", "problem_beta_max"]
