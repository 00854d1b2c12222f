"""convexrecon: convex, layer-wise training of neural MRI reconstruction.

Each two-layer block ``k x k conv -> ReLU -> 1 x 1 conv`` is trained by
solving its convex reformulation to a certified global optimum
(:func:`fit_layer`), then used as an ordinary torch module
(:class:`ConvexBlock`); blocks are stacked into a :class:`ReconNet` by
:func:`train_layerwise`, or into the stages of an :class:`UnrolledNet` with
data consistency by :func:`train_unrolled`. The layout follows the paper's concepts:
:mod:`convexrecon.block` (one block), :mod:`convexrecon.stack` (the networks
and their training), :mod:`convexrecon.mri` (SENSE, data consistency, sparsity,
classical reconstructions), :mod:`convexrecon.data` (fastMRI files, masks, datasets),
:mod:`convexrecon.recon` (k-space to image), :mod:`convexrecon.metrics`,
:mod:`convexrecon.analysis`, :mod:`convexrecon.cli`. The mathematics is in
``docs/design.md``.
"""

from solvers.report import SolveReport, Status

from convexrecon.block import (ArrangementConv, ConvexBlock, FitOptions, GlobalCheck, arrangement_masks, beta_max,
                               block_from_solution, draw_gates, fit_layer, fit_layer_path, global_check,
                               patch_problem, problem_beta_max)
from convexrecon.errors import (CheckpointError, ConvergenceWarning, DataWarning, MemoryBudgetError, PerformanceWarning,
                                SelectionWarning, SolverError)
from convexrecon.metrics import evaluate, nmse, psnr, ssim, validation_metrics
from convexrecon.recon import reconstruct_slice
from convexrecon.data.problems import measured_data
from convexrecon.mri.consistency import MeasuredData, data_consistency
from convexrecon.stack import (AdamSettings, BlockSettings, HiddenLayer, LayerwiseResult, ReconNet, RunOptions,
                               StageInputs, UnrolledNet, ValidationSet, load_network, save_network, train_end_to_end,
                               train_layerwise, train_layerwise_adam, train_unrolled, train_unrolled_end_to_end,
                               train_unrolled_layerwise_adam, unrolled_plain)

__all__ = [
    "AdamSettings", "ArrangementConv", "BlockSettings", "CheckpointError", "ConvergenceWarning", "ConvexBlock", "DataWarning",
    "FitOptions", "GlobalCheck", "HiddenLayer", "LayerwiseResult", "MeasuredData", "MemoryBudgetError",
    "PerformanceWarning", "ReconNet", "RunOptions", "SelectionWarning",
    "SolveReport", "StageInputs", "UnrolledNet", "ValidationSet", "data_consistency", "measured_data", "train_unrolled", "train_unrolled_end_to_end",
    "train_unrolled_layerwise_adam", "unrolled_plain",
    "SolverError", "Status", "arrangement_masks", "beta_max", "block_from_solution", "draw_gates", "evaluate",
    "fit_layer", "fit_layer_path", "global_check", "load_network", "nmse", "patch_problem", "problem_beta_max", "psnr",
    "reconstruct_slice", "save_network", "ssim", "train_end_to_end", "train_layerwise", "train_layerwise_adam",
    "validation_metrics",
]
__version__ = "0.1.0"
