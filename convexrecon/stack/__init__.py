"""The stacked network and how it is trained (the seed's Fig. 1).

* :mod:`~convexrecon.stack.network` — :class:`ReconNet` (kept layers + final 1×1 conv + skip);
* :mod:`~convexrecon.stack.layerwise` — convex layer-wise training (:func:`train_layerwise`);
* :mod:`~convexrecon.stack.baselines` — end-to-end and layer-wise Adam on the same architecture;
* :mod:`~convexrecon.stack.unrolled` — the unrolled variant: convex stages with data consistency;
* :mod:`~convexrecon.stack.persist` — saving and loading a trained network;
* :mod:`~convexrecon.stack.checkpoint` — crash-safe per-block / per-epoch checkpoints.
"""

from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import BlockSettings, LayerwiseResult, train_layerwise
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.persist import load_network, save_network
from convexrecon.stack.unrolled import (UnrolledNet, train_unrolled, train_unrolled_end_to_end,
                                        train_unrolled_layerwise_adam, unrolled_plain)

__all__ = ["BlockSettings", "HiddenLayer", "LayerwiseResult", "ReconNet", "UnrolledNet", "load_network",
           "save_network", "train_end_to_end", "train_layerwise", "train_layerwise_adam", "train_unrolled",
           "train_unrolled_end_to_end", "train_unrolled_layerwise_adam", "unrolled_plain"]
