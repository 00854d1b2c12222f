"""The stacked network and how it is trained (the seed's Fig. 1).

* :mod:`~convexrecon.stack.network` — :class:`ReconNet` (kept layers + final 1×1 conv + skip);
* :mod:`~convexrecon.stack.layerwise` — convex layer-wise training (:func:`train_layerwise`);
* :mod:`~convexrecon.stack.baselines` — end-to-end and layer-wise Adam on the same architecture;
* :mod:`~convexrecon.stack.persist` — saving and loading a trained network;
* :mod:`~convexrecon.stack.checkpoint` — crash-safe per-block / per-epoch checkpoints.
"""

from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.stack.layerwise import BlockSettings, LayerwiseResult, train_layerwise
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.persist import load_network, save_network

__all__ = ["BlockSettings", "HiddenLayer", "LayerwiseResult", "ReconNet", "load_network", "save_network",
           "train_end_to_end", "train_layerwise", "train_layerwise_adam"]
