"""convexrecon: convex, layer-wise training of neural MRI reconstruction.

Each two-layer block ``k x k conv -> ReLU -> 1 x 1 conv`` is trained by
solving its convex reformulation to a certified global optimum
(:func:`fit_layer`), then used as an ordinary torch module
(:class:`ConvexBlock`).
"""

from solvers.report import ConvergenceWarning, SolveReport, Status

from .arrangements import ArrangementConv, arrangement_masks, draw_gates, patch_problem
from .block import ConvexBlock, block_from_solution
from .fit import GlobalCheck, beta_max, fit_layer, fit_layer_path, global_check

__all__ = [
    "ArrangementConv", "ConvergenceWarning", "ConvexBlock", "GlobalCheck", "SolveReport", "Status",
    "arrangement_masks", "beta_max", "block_from_solution", "draw_gates", "fit_layer", "fit_layer_path", "global_check",
    "patch_problem",
]
__version__ = "0.1.0"
