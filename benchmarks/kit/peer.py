r"""The external learned peer: fastMRI's end-to-end variational network (VarNet; Sriram et al., 2020) on our data.

fastMRI's ``VarNet`` cascades (``VarNetBlock`` with a ``NormUnet`` regulariser) run with *our* physics: the
ESPIRiT maps, sampling masks and per-slice scale of :class:`~convexrecon.mri.consistency.MeasuredData` (its
k-space is already divided by the slice's scale) replace fastMRI's learned sensitivity model, so the peer sees
exactly the measurements the package's networks see. fastMRI's VarNet and not deepinv's MoDL: deepinv imports
torchvision, whose wheels for the pinned torch are CUDA builds that fail to import next to the CPU torch, while
``fastmri.models.varnet`` imports only torch (and ``fastmri.data``: pandas, requests). Install with the
``peers`` extra: ``pip install -c constraints.txt -e ".[peers]"``.

**Conventions.** fastMRI's ``fft2c`` is ours (:mod:`convexrecon.mri.fft`): centred and orthonormal,
``fftshift(fft2(ifftshift(x), norm="ortho"))`` over the two image axes, on a real view whose last axis holds
(real, imaginary). The conversion is therefore :func:`torch.view_as_real` / :func:`torch.view_as_complex` and
nothing else; ``tests/test_peer.py`` checks that the peer's operator equals
:class:`~convexrecon.mri.sense.SenseOperator`. A cascade maps the k-space estimate :math:`k` to

.. math:: k - \eta\, M (k - k_0) - F S\, R\Big(\sum_c \overline{S_c} F^{-1} k_c\Big),

with :math:`k_0` the measured (masked) k-space, :math:`\eta` the cascade's learned DC weight, :math:`M` the
(binary) mask and :math:`R` its NormUnet on the full-grid SENSE image. The first cascade starts at :math:`k_0`.
The output is the SENSE combination :math:`\sum_c \overline{S_c} F^{-1} k_c` of the last cascade, centre-cropped
to ``data.crop``, as 2 channels at the stored scale: the contract of ``UnrolledNet.predict``. (fastMRI's VarNet
returns the root-sum-of-squares magnitude instead; our targets are complex SENSE images.)

fastMRI is imported lazily: this module imports without the extra, and :func:`available` says whether the peer
can run.
"""

from __future__ import annotations

import copy
import importlib.util
import time
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from convexrecon.checks import positive_int
from convexrecon.data.splits import holdout_mask
from convexrecon.mri.consistency import MeasuredData, crop_center
from convexrecon.mri.fft import complex_to_channels, data_device
from convexrecon.stack.adam import AdamSettings, TrainingRule, train_by_rule

# Small defaults for the CPU budgets of the benchmarks (quick: 96x368 k-space, 6 coils, crop 48): ~0.1 s per
# Adam step of two slices on one thread. fastMRI's own knee VarNet has 12 cascades of chans 18, pools 4.
CASCADES = 3
CHANS = 8
POOLS = 2


def available() -> bool:
    """Whether fastMRI's VarNet can be imported (the ``peers`` extra is installed)."""
    if importlib.util.find_spec("fastmri") is None:
        return False
    try:
        import fastmri.models.varnet  # noqa: F401
    except ImportError:
        return False
    return True


def _varnet() -> Any:
    try:
        from fastmri.models import varnet
    except ImportError as exc:
        raise ImportError("The VarNet peer needs fastMRI: install the 'peers' extra "
                          "(pip install -c constraints.txt -e '.[peers]'). "
                          f"Importing fastmri.models.varnet failed: {exc}") from exc
    return varnet


class VarNetPeer(nn.Module):
    """``cascades`` fastMRI ``VarNetBlock(NormUnet(chans, pools))`` on k-space with our maps, masks and scale.

    Parameters
    ----------
    cascades, chans, pools
        Number of cascades; channels of the first convolution and pooling levels of each cascade's NormUnet.
    """

    needs_measurements = True  # scored on the measurements (MeasuredData), as UnrolledNet

    def __init__(self, cascades: int = CASCADES, chans: int = CHANS, pools: int = POOLS) -> None:
        super().__init__()
        varnet = _varnet()
        self.settings = {"cascades": positive_int("cascades", cascades), "chans": positive_int("chans", chans),
                         "pools": positive_int("pools", pools)}
        self.cascades = nn.ModuleList([varnet.VarNetBlock(varnet.NormUnet(chans, pools)) for _ in range(cascades)])

    # ---- the physics, in our complex convention, through fastMRI's own sens_expand / sens_reduce ----------------

    def _real(self, x: Tensor) -> Tensor:
        """Complex → fastMRI's real view ``(..., 2)`` in the dtype of the parameters."""
        dtype = torch.complex128 if self.cascades[0].dc_weight.dtype == torch.float64 else torch.complex64
        return torch.view_as_real(x.to(dtype).contiguous())

    @staticmethod
    def _mask(mask: Tensor) -> Tensor:
        """``(B, H, W)`` 0/1 mask → fastMRI's boolean ``(B, 1, H, W, 1)`` (its soft DC selects, it does not weigh)."""
        if not torch.is_tensor(mask) or mask.ndim != 3:
            raise ValueError(f"The 'mask' parameter must be a (B, H, W) tensor. "
                             f"Got {type(mask).__name__} {tuple(getattr(mask, 'shape', ()))} instead.")
        binary = mask != 0
        if not bool((mask[binary] == 1).all()):
            raise ValueError("The 'mask' parameter must hold 0 and 1 only (VarNet's data consistency selects the "
                             "sampled points). Got other values.")
        return binary[:, None, :, :, None]

    def operator(self, image: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
        """:math:`A x = M F (S_c x)`: images ``(B, H, W)`` complex → masked k-space ``(B, C, H, W)`` complex
        (fastMRI's ``sens_expand``, then the mask)."""
        k = self.cascades[0].sens_expand(self._real(image)[:, None], self._real(maps))
        return torch.view_as_complex(torch.where(self._mask(mask), k, torch.zeros_like(k)).contiguous())

    def adjoint(self, kspace: Tensor, maps: Tensor, mask: Tensor) -> Tensor:
        """:math:`A^H y = \\sum_c \\overline{S_c} F^{-1} (M y_c)`: ``(B, C, H, W)`` → ``(B, H, W)`` complex
        (the mask, then fastMRI's ``sens_reduce``)."""
        y = self._real(kspace)
        y = torch.where(self._mask(mask), y, torch.zeros_like(y))
        return torch.view_as_complex(self.cascades[0].sens_reduce(y, self._real(maps))[:, 0].contiguous())

    # ---- the network --------------------------------------------------------------------------------------------

    def forward(self, kspace: Tensor, maps: Tensor, mask: Tensor, crop: int) -> Tensor:
        """Measured k-space ``(B, C, H, W)`` (masked, divided by the slice scale), maps ``(B, C, H, W)`` and mask
        ``(B, H, W)`` → the cropped SENSE image of the last cascade, ``(B, 2, crop, crop)``."""
        if not torch.is_tensor(kspace) or not kspace.is_complex() or kspace.ndim != 4:
            raise ValueError(f"The 'kspace' parameter must be a complex (B, C, H, W) tensor. "
                             f"Got {getattr(kspace, 'dtype', type(kspace).__name__)} "
                             f"{tuple(getattr(kspace, 'shape', ()))} instead.")
        if not torch.is_tensor(maps) or not maps.is_complex() or maps.shape != kspace.shape:
            raise ValueError(f"The 'maps' parameter must be complex with the k-space's shape {tuple(kspace.shape)}. "
                             f"Got {getattr(maps, 'dtype', None)} {tuple(getattr(maps, 'shape', ()))} instead.")
        if tuple(getattr(mask, "shape", ())) != (kspace.shape[0], *kspace.shape[-2:]):
            raise ValueError(f"The 'mask' parameter must have shape {(kspace.shape[0], *kspace.shape[-2:])}. "
                             f"Got {tuple(getattr(mask, 'shape', ()))} instead.")
        k0, s, m = self._real(kspace), self._real(maps), self._mask(mask)
        k = k0
        for cascade in self.cascades:
            k = cascade(k, k0, m, s)
        image = torch.view_as_complex(self.cascades[0].sens_reduce(k, s)[:, 0].contiguous())
        return complex_to_channels(crop_center(image, crop))

    @torch.no_grad()
    def predict(self, data: MeasuredData, chunk_size: int = 4) -> Tensor:
        """Cropped outputs ``(N, 2, crop, crop)`` of all slices of ``data``, chunk by chunk, without autograd, on the
        data's device (computed on the network's)."""
        device = self.cascades[0].dc_weight.device
        chunk_size = positive_int("chunk_size", chunk_size)
        out = [self(data.kspace[i:i + chunk_size].to(device), data.maps[i:i + chunk_size].to(device),
                    data.mask[i:i + chunk_size].to(device), data.crop) for i in range(0, len(data), chunk_size)]
        return torch.cat(out).to(data.kspace.device)


def _training_rule(rule: Any, snapshot_seconds: float | None) -> TrainingRule:
    """A :class:`TrainingRule` from a benchmark ``RuleConfig`` (``training_rule``) or a rule itself."""
    if isinstance(rule, TrainingRule):
        return rule if snapshot_seconds is None else replace(rule, snapshot_seconds=snapshot_seconds)
    if callable(getattr(rule, "training_rule", None)):
        return rule.training_rule(snapshot_seconds)
    raise ValueError(f"The 'rule' parameter must be a TrainingRule or a RuleConfig. Got {type(rule).__name__} instead.")


def train_peer(split: dict[str, Any], rule: Any, adam_batch: int, seed: int, holdout_volumes: int,
               device: Any = None, *, cascades: int = CASCADES, chans: int = CHANS, pools: int = POOLS,
               weight_decay: float = 0.0, snapshot_seconds: float | None = None,
               progress: bool = False) -> tuple[VarNetPeer, dict[str, Any]]:
    """Train a :class:`VarNetPeer` on ``split["train"]`` by the library's training rule.

    Parameters
    ----------
    split
        :func:`benchmarks.kit.data.measured_split`'s split; only ``split["train"]`` (``data``, ``targets``,
        ``volumes``) is read: the validation part is never seen.
    rule
        A ``RuleConfig`` (e.g. ``CONFIGS["quick"].unrolled.rule``) or a :class:`TrainingRule`: lr (and weight decay
        factors of ``weight_decay``) chosen by the loss on the last ``holdout_volumes`` training volumes, early
        stopping on it, the checkpoint of best held-out loss kept (:func:`train_by_rule`).
    adam_batch, seed
        Adam's batch size; the seed of the initialisation and of the batch order.
    device
        Where to train (None: the CPU); the network stays there.
    cascades, chans, pools
        The architecture (:class:`VarNetPeer`).
    weight_decay
        The base weight decay the rule's ``decay_factors`` multiply (fastMRI trains VarNet without).
    snapshot_seconds
        When set, the record's ``"snapshot_net"`` is the peer at this wall time of the chosen run (the rule's
        snapshot: a baseline at another method's time); pop it before writing the record as JSON.

    Returns
    -------
    (VarNetPeer, dict)
        The trained peer (its best held-out checkpoint) and :meth:`RuleResult.to_dict` (``epochs``, ``converged``,
        ``lr``, ``weight_decay``, ``best_epoch``, ``seconds``, the chosen run's ``curve`` of ``held_loss`` against
        ``seconds``, ``candidates``, ...: what ``benchmarks.kit.evidence.adam_effort`` and ``curve_of`` read) with
        ``"architecture"`` added.
    """
    training_rule = _training_rule(rule, snapshot_seconds)
    device = data_device(device)
    train = split["train"]
    data: MeasuredData = train["data"].to(device)
    targets: Tensor = train["targets"].to(device)
    if tuple(targets.shape) != (len(data), 2, data.crop, data.crop):
        raise ValueError(f"The split's training 'targets' must have shape {(len(data), 2, data.crop, data.crop)} "
                         f"(one per measured slice). Got {tuple(targets.shape)} instead.")
    held = holdout_mask(train["volumes"], holdout_volumes).to(device)
    with torch.random.fork_rng(devices=[]):  # the initialisation by ``seed``, without touching the global stream
        torch.manual_seed(seed)
        net = VarNetPeer(cascades, chans, pools)
    net.to(device)
    index = torch.arange(len(data), device=device)  # train_by_rule batches the inputs: slice indices

    def forward(ids: Tensor) -> Tensor:
        part = data.subset(ids)
        return net(part.kspace, part.maps, part.mask, data.crop)

    adam = AdamSettings(batch_size=positive_int("adam_batch", adam_batch), weight_decay=weight_decay)
    result = train_by_rule(net, forward, index[~held], targets[~held], index[held], targets[held], adam,
                           training_rule, seed=seed, desc="VarNet peer (Adam, rule)", progress=progress)
    record = {**result.to_dict(), "architecture": {
        **net.settings, "parameters": sum(p.numel() for p in net.parameters()),
        "model": "fastmri.models.varnet.VarNetBlock(NormUnet) with our ESPIRiT maps, masks and scale"}}
    if snapshot_seconds is not None:
        snapshot = None
        if result.snapshot_state is not None:
            snapshot = copy.deepcopy(net)
            snapshot.load_state_dict(result.snapshot_state)
        record["snapshot_net"] = snapshot
    return net, record


def peer_row(split: dict[str, Any], rule: Any, adam_batch: int, seed: int, holdout_volumes: int, device: Any,
             convex_seconds: float) -> tuple[VarNetPeer, dict[str, Any]]:
    """The peer trained by :func:`train_peer` and its ``results.json`` entry on the validation slices: scores, train
    seconds, epochs and converged, the held-out curve and the scores at ``convex_seconds`` (the unrolled convex
    network's training time)."""
    from benchmarks.kit.evidence import adam_effort, curve_of, slice_scores

    start = time.perf_counter()
    net, record = train_peer(split, rule, adam_batch, seed, holdout_volumes, device, snapshot_seconds=convex_seconds,
                             progress=True)
    seconds = time.perf_counter() - start
    snapshot = record.pop("snapshot_net", None)
    va = split["val"]
    entry = {**slice_scores(va, net.predict(va["data"]).cpu()), "train_seconds": seconds, "peak_memory_bytes": 0,
             **adam_effort([record]), "curve": curve_of([record]), "architecture": record["architecture"]}
    if snapshot is not None:
        entry["at_convex_time"] = {**slice_scores(va, snapshot.predict(va["data"]).cpu()),
                                   **(record.get("snapshot") or {})}
    return net, entry
