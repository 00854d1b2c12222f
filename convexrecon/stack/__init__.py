"""The stacked networks and how they are trained (the paper's Fig. 1, and the unrolled variant).

Modules, bottom to top (each imports only modules above it in this list, never one below):

* :mod:`~convexrecon.stack.modelfiles` — ``model.pt`` + ``config.json`` of a saved model (no model class);
* :mod:`~convexrecon.stack.checkpoint` — crash-safe per-block / per-epoch checkpoints of a run;
* :mod:`~convexrecon.stack.run` — :class:`RunOptions`: seed, checkpoints, device and precision of a run;
* :mod:`~convexrecon.stack.settings` — :class:`BlockSettings`, :class:`ValidationSet`, the hold-out and choice rules;
* :mod:`~convexrecon.stack.adam` — :class:`AdamSettings`, the Adam loop of every baseline and its training rule;
* :mod:`~convexrecon.stack.network` — :class:`ReconNet`, the layer-wise CNN (kept layers + 1×1 conv + skip);
* :mod:`~convexrecon.stack.stage_inputs` — :class:`StageInputs`, the unrolled blocks' further inputs;
* :mod:`~convexrecon.stack.unrolled` — :class:`UnrolledNet`: convex stages with data consistency;
* :mod:`~convexrecon.stack.persist` — :func:`load_network` for either architecture;
* :mod:`~convexrecon.stack.layerwise` — convex layer-wise training (:func:`train_layerwise`);
* :mod:`~convexrecon.stack.baselines` — end-to-end and layer-wise Adam on the layer-wise CNN;
* :mod:`~convexrecon.stack.unrolled_train` — convex stage-by-stage training (:func:`train_unrolled`);
* :mod:`~convexrecon.stack.unrolled_baselines` — end-to-end and layer-wise Adam on the unrolled network.
"""

from convexrecon.stack.adam import AdamSettings, RuleResult, TrainingRule, train_by_rule
from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import LayerwiseResult, train_layerwise
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.persist import load_network, load_unrolled, save_network
from convexrecon.stack.run import RunOptions
from convexrecon.stack.settings import BlockSettings, ValidationSet
from convexrecon.stack.stage_inputs import StageInputs
from convexrecon.stack.unrolled import UnrolledNet, initial_estimates, unrolled_metrics, unrolled_plain
from convexrecon.stack.unrolled_baselines import train_unrolled_end_to_end, train_unrolled_layerwise_adam
from convexrecon.stack.unrolled_train import DEFAULT_LAMBDAS, UnrolledResult, train_unrolled

__all__ = ["AdamSettings", "BlockSettings", "DEFAULT_LAMBDAS", "HiddenLayer", "LayerwiseResult", "ReconNet",
           "RuleResult", "RunOptions", "StageInputs", "TrainingRule", "UnrolledNet", "UnrolledResult",
           "ValidationSet", "initial_estimates", "load_network", "load_unrolled", "save_network", "train_by_rule",
           "train_end_to_end", "train_layerwise", "train_layerwise_adam", "train_unrolled",
           "train_unrolled_end_to_end", "train_unrolled_layerwise_adam", "unrolled_metrics", "unrolled_plain"]
