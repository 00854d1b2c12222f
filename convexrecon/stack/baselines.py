r"""Non-convex baselines on the same architecture (``docs/design.md`` §9, Baselines).

* **End-to-end**: the whole :class:`~convexrecon.stack.network.ReconNet` trained by
  Adam (lr ``1e-4`` halved every ``halve_every`` epochs; the seed's schedule is every 10) on

  .. math:: \frac{1}{n}\sum_{\text{pixels}} \tfrac12\|\hat x - y\|^2 + \tfrac{\lambda}{2}\|W\|^2,

  i.e. the convex blocks' objective divided by the number of pixels ``n``,
  so ``weight_decay = beta / n`` matches a block's ``beta`` (Adam's
  ``weight_decay`` adds ``lambda W`` to the gradient).
* **Non-convex layer-wise** (Belilovsky et al., ICML 2019): block ``i``
  (``first_i -> relu -> second_i``) trained by Adam on the same objective
  on ``(h_{i-1}, y - x_0)``, then frozen; ``second_i`` kept only for the last block.

Both run on one device: ``device=None`` trains where the inputs are (every tensor given on that
device), an explicit ``device`` moves the data and the network there once. TF32 is off unless
``allow_tf32=True`` (the package's default everywhere, so the methods compare at one precision).
bfloat16 autocast is not offered: its effect on the reached PSNR cannot be checked on a CPU.

Both write a checkpoint atomically after every epoch (model, optimizer,
scheduler, epoch); the same call on the same directory resumes there. Batches
are shuffled by a generator seeded with ``(seed, epoch)``, so a resumed run
ends with the same model as an uninterrupted one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexrecon.errors import CheckpointError
from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, run_payload, save_checkpoint
from convexrecon.block.precision import tf32_mode
from convexrecon.checks import bool_flag, check_images, training_device
from convexrecon.metrics import validation_metrics
from convexrecon.stack.network import HiddenLayer, ReconNet


def pixel_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """``1/2 * sum of squares / number of pixels`` (channels summed, pixels (voxels) averaged)."""
    return 0.5 * (prediction - target).pow(2).sum() / prediction[:, 0].numel()


def adam_train(
    module: nn.Module,
    forward: Callable[[Tensor], Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    halve_every: int = 10,
    seed: int = 0,
    checkpoint: Path | None = None,
    stop_after: int | None = None,
    desc: str = "Adam",
    progress: bool = False,
    on_epoch: Callable[[int], dict[str, float]] | None = None,
    data_key: str | None = None,
) -> list[dict[str, float]]:
    """Train ``module`` by Adam on ``pixel_loss(forward(x), y)``; returns one record per epoch.

    ``checkpoint`` is a file rewritten atomically after every epoch and read on a restart; it is
    refused when the settings or the data differ. The data are identified by the hash of
    ``inputs`` and ``targets``, or by ``data_key`` when given: a fingerprint of what the inputs are
    computed from, for inputs that a restart cannot reproduce bit for bit (e.g. the estimates of an
    unrolled network's earlier stages, computed through FFTs whose multithreaded rounding may vary).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("halve_every", halve_every)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"The '{name}' parameter must be an int > 0. Got {value!r} instead.")
    if not lr > 0:
        raise ValueError(f"The 'lr' parameter must be > 0. Got {lr!r} instead.")
    if not weight_decay >= 0:
        raise ValueError(f"The 'weight_decay' parameter must be >= 0. Got {weight_decay!r} instead.")
    params = list(module.parameters())
    if params and params[0].device != inputs.device:
        raise ValueError(f"The module and the 'inputs' must be on one device. Got the module on {params[0].device}, "
                         f"'inputs' on {inputs.device} instead.")
    optimizer = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=halve_every, gamma=0.5)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "halve_every": halve_every, "seed": seed}
    key = fingerprint(inputs, targets) if data_key is None else str(data_key)
    history: list[dict[str, float]] = []
    first_epoch = 0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, settings, key, ("module", "optimizer", "scheduler", "epoch", "history"))
        try:
            module.load_state_dict(state["module"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"The checkpoint {checkpoint} is corrupt ({type(error).__name__}: {error}); "
                                  f"delete it to restart this training.") from None
        first_epoch, history = int(state["epoch"]), list(state["history"])
    last = epochs if stop_after is None else min(epochs, int(stop_after))
    n = len(inputs)
    bar = tqdm(range(first_epoch, last), desc=desc, unit="epoch", disable=not progress)
    for epoch in bar:
        start = time.perf_counter()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        total = 0.0
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = pixel_loss(forward(inputs[idx]), targets[idx])
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": total / n, "seconds": time.perf_counter() - start}
        if on_epoch is not None:
            record.update(on_epoch(epoch + 1))
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3g}")
        if checkpoint is not None:
            save_checkpoint(checkpoint, run_payload(settings, key, module=module.state_dict(),
                                                    optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                                    epoch=epoch + 1, history=history))
    return history


def train_end_to_end(
    net: ReconNet,
    inputs: Tensor,
    targets: Tensor,
    *,
    epochs: int = 40,
    batch_size: int = 4,
    lr: float = 1e-4,
    halve_every: int = 10,
    weight_decay: float = 0.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    validation: tuple[Tensor, Tensor, Tensor, Sequence[str]] | None = None,
    progress: bool = False,
    device: Any = None,
    allow_tf32: bool = False,
) -> list[dict[str, float]]:
    """Train ``net`` (in place) end to end; returns per-epoch loss (and validation PSNR/SSIM).

    Parameters
    ----------
    halve_every
        Epochs between halvings of the learning rate (the seed's 10).
    validation
        ``(inputs, targets, scales, volumes)``; evaluated after every epoch when given.
    device
        None: train where ``inputs`` are (``targets`` and the validation tensors must be on the
        same device); ``net`` is moved there. An explicit device moves the data and ``net`` there
        once. ``net`` stays on this device afterwards.
    allow_tf32
        TF32 convolutions and matrix products (CUDA only; default False, as in every trainer).
    """
    inputs, targets, validation, run_device, allow_tf32 = _prepare(inputs, targets, validation, device, allow_tf32)
    net.to(run_device)
    ckpt = _checkpoint_file(checkpoint_dir, "end_to_end.pt")
    on_epoch = None if validation is None else (lambda e: validation_metrics(net, *validation))
    with tf32_mode(allow_tf32):
        history = adam_train(net, net, inputs, targets, epochs=epochs, batch_size=batch_size, lr=lr,
                             halve_every=halve_every, weight_decay=weight_decay, seed=seed, checkpoint=ckpt,
                             stop_after=stop_after,
                             desc="end-to-end (Adam)", progress=progress, on_epoch=on_epoch)
    net.config.update({"method": "end_to_end", "training": {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
        "halve_every": halve_every, "schedule": f"lr halved every {halve_every} epochs"}, "history": history})
    return history


def train_layerwise_adam(
    inputs: Tensor,
    targets: Tensor,
    widths: Sequence[int],
    kernel_size: int,
    *,
    epochs: int = 30,
    batch_size: int = 4,
    lr: float = 1e-4,
    halve_every: int = 10,
    weight_decay: float | Sequence[float] = 0.0,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    validation: tuple[Tensor, Tensor, Tensor, Sequence[str]] | None = None,
    progress: bool = False,
    device: Any = None,
    allow_tf32: bool = False,
) -> tuple[ReconNet, list[dict[str, Any]]]:
    """Non-convex layer-wise training: each two-layer block by Adam, then frozen.

    ``device`` and ``allow_tf32`` as in :func:`train_end_to_end`: None trains where ``inputs``
    are; the features of every block stay on that device; the network is returned on it.

    Returns the network and one record per block (validation metrics when
    ``validation`` is given, seconds, final loss).
    """
    inputs, targets, validation, run_device, allow_tf32 = _prepare(inputs, targets, validation, device, allow_tf32)
    with tf32_mode(allow_tf32):
        return _train_layerwise_adam(inputs, targets, widths, kernel_size, epochs, batch_size, lr, halve_every,
                                     weight_decay, seed, checkpoint_dir, validation, progress)


def _train_layerwise_adam(inputs: Tensor, targets: Tensor, widths: Sequence[int], kernel_size: int, epochs: int,
                          batch_size: int, lr: float, halve_every: int, weight_decay: float | Sequence[float],
                          seed: int, checkpoint_dir: str | Path | None,
                          validation: tuple[Tensor, Tensor, Tensor, Sequence[str]] | None,
                          progress: bool) -> tuple[ReconNet, list[dict[str, Any]]]:
    """:func:`train_layerwise_adam` on validated tensors on one device."""
    decays = [float(weight_decay)] * len(widths) if isinstance(weight_decay, (int, float)) else list(weight_decay)
    template = ReconNet.plain(widths, kernel_size, seed=seed, spatial_dims=inputs.ndim - 2).to(inputs.device)
    layers: list[HiddenLayer] = []
    records: list[dict[str, Any]] = []
    residual = targets - inputs
    second = template.second
    for i, layer in enumerate(template.layers):
        with torch.no_grad():
            h = inputs
            for frozen in layers:
                h = frozen(h)
        torch.manual_seed(seed + 1000 + i)
        head = type(layer.first)(layer.first.out_channels, 2, 1, bias=False).to(inputs.device)
        block = nn.Sequential(layer, head)
        start = time.perf_counter()
        history = adam_train(block, block, h, residual, epochs=epochs, batch_size=batch_size, lr=lr,
                             halve_every=halve_every, weight_decay=decays[i], seed=seed + i,
                             checkpoint=_checkpoint_file(checkpoint_dir, f"layerwise_adam_block_{i + 1:02d}.pt"),
                             desc=f"layer-wise Adam block {i + 1}", progress=progress)
        for p in layer.parameters():
            p.requires_grad_(False)
        layers.append(layer)
        second = head
        record: dict[str, Any] = {"block": i + 1, "seconds": time.perf_counter() - start,
                                  "loss": history[-1]["loss"] if history else None}
        if validation is not None:
            record.update(validation_metrics(ReconNet(list(layers), second), *validation))
        records.append(record)
    for p in second.parameters():
        p.requires_grad_(False)
    net = ReconNet(layers, second, {"method": "layerwise_adam", "blocks": records, "training": {
        "epochs_per_block": epochs, "batch_size": batch_size, "lr": lr, "halve_every": halve_every,
        "weight_decay": decays, "seed": seed}})
    net.requires_grad_(True)
    return net, records


def _validation_tuple(validation: Any) -> tuple[Tensor, Tensor, Tensor, Sequence[str]] | None:
    if validation is None:
        return None
    if not isinstance(validation, (tuple, list)) or len(validation) != 4:
        raise ValueError("The 'validation' parameter must be a tuple (inputs, targets, scales, volumes) or None. "
                         f"Got {type(validation).__name__} instead.")
    return tuple(validation)  # type: ignore[return-value]


def _validation_on(validation: tuple[Tensor, Tensor, Tensor, Sequence[str]] | None,
                   device: torch.device) -> tuple[Tensor, Tensor, Tensor, Sequence[str]] | None:
    """The validation images moved to ``device`` once (scales and names stay where they are)."""
    if validation is None:
        return None
    val_inputs, val_targets, scales, volumes = validation
    return (check_images("val_inputs", val_inputs).to(device), check_images("val_targets", val_targets).to(device),
            scales, volumes)


def _prepare(inputs: Any, targets: Any, validation: Any, device: Any, allow_tf32: Any):
    """Validated training tensors and validation tuple on the run's device (``device``, or where the inputs
    are), the device, and the checked TF32 switch."""
    validation = _validation_tuple(validation)
    run_device = training_device(device, inputs=inputs, targets=targets,
                                 **({} if validation is None else {"val_inputs": validation[0],
                                                                   "val_targets": validation[1]}))
    allow_tf32 = bool_flag("allow_tf32", allow_tf32)
    inputs, targets = check_images("inputs", inputs), check_images("targets", targets)
    return (inputs.to(run_device), targets.to(run_device), _validation_on(validation, run_device), run_device,
            allow_tf32)


def _checkpoint_file(directory: str | Path | None, name: str) -> Path | None:
    if directory is None:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path / name
