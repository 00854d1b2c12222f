r"""Layer-wise convex training of the reconstruction network (``docs/design.md`` §9; the paper's Fig. 1).

With ``h_0 = x_0`` (zero-filled image) and residual target ``r = y - x_0``,
block ``i = 1..K`` solves the convex program of a two-layer block on
``(h_{i-1}, r)`` with :func:`~convexrecon.block.fit.fit_layer`,

.. math:: \min\ \tfrac12\|\mathrm{second}_i(\sigma(\mathrm{first}_i(h_{i-1}))) - r\|^2
          + \tfrac\beta2(\|W_{\mathrm{first}_i}\|^2 + \|W_{\mathrm{second}_i}\|^2),

keeps ``first_i``, drops ``second_i`` (except the last) and sets
``h_i = sigma(first_i(h_{i-1}))``. The network after block ``i`` is
:class:`~convexrecon.stack.network.ReconNet` ``(first_1..first_i, second_i)``.

Features ``h_{i-1}`` are recomputed through the frozen layers ``chunk_size``
slices at a time; when ``patch_size`` is set, only a seeded set of
``patches_per_slice`` windows per slice is kept (the convex fit then sees
zero padding at the window borders). After every block the trainer evaluates
PSNR/SSIM on the validation slices and writes ``block_XX.pt`` atomically into
``checkpoint_dir``; the same call on the same directory resumes after the last
finished block and ends with the same model. :meth:`LayerwiseResult.best` keeps the
depth with the best validation PSNR.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexrecon.block import guard
from convexrecon.block.fit import fit_layer, fit_layer_path
from convexrecon.block.module import ConvexBlock
from convexrecon.block.options import FitOptions
from convexrecon.checks import check_images, check_same_device
from convexrecon.metrics import validation_metrics
from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, restoring, run_payload, save_checkpoint
from convexrecon.stack.network import HiddenLayer, ReconNet
from convexrecon.stack.run import RunOptions, with_keywords
from convexrecon.stack.settings import (BlockSettings, ValidationSet, block_beta, block_record, check_blocks,
                                        holdout_of, warn_choice_at_edge)

__all__ = ["BlockSettings", "LayerwiseResult", "ValidationSet", "block_beta", "block_problem", "check_same_device",
           "sample_windows", "select_beta_ratio", "train_layerwise"]

VALIDATION_KEYWORDS = ("val_inputs", "val_targets", "val_scales", "val_volumes")


@dataclass
class LayerwiseResult:
    """The trained network, one record per block (metrics, β, gap, status, timing) and every block's output layer.

    ``second_layers[i]`` is block ``i + 1``'s ``1 x 1`` read-out, so the network after ``j`` blocks is
    :meth:`truncated` ``(j)``.
    """

    network: ReconNet
    records: list[dict[str, Any]]
    second_layers: list[nn.Module] = field(default_factory=list)

    def truncated(self, depth: int) -> ReconNet:
        """The network of the first ``depth`` blocks, ``ReconNet(layers[:depth], second_layers[depth - 1])``.

        Its config is the full network's (every trained block's record stays in ``blocks``) with
        ``"kept_blocks": depth``.
        """
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= len(self.second_layers):
            raise ValueError(f"The 'depth' parameter must be an int in [1, {len(self.second_layers)}]. Got {depth!r}.")
        config = {**self.network.config, "kept_blocks": depth}
        return ReconNet(list(self.network.layers)[:depth], self.second_layers[depth - 1], config)

    def best_depth(self) -> int:
        """The number of blocks with the best validation PSNR (the first of equals)."""
        if not self.records or any("psnr" not in r for r in self.records):
            raise ValueError("The best depth needs validation PSNR after every block: train with a validation set.")
        return 1 + max(range(len(self.records)), key=lambda j: self.records[j]["psnr"])

    def best(self, keep_all: bool = False) -> ReconNet:
        """The network at :meth:`best_depth` (all blocks when ``keep_all``), its config's ``kept_blocks`` set.

        The validation PSNR chose the depth, so it is an optimistic estimate of that network's quality.
        """
        depth = len(self.records) if keep_all else self.best_depth()
        if depth < len(self.records):
            return self.truncated(depth)
        self.network.config["kept_blocks"] = self.network.num_blocks
        return self.network


def sample_windows(num_slices: int, height: int, width: int, patch_size: int, per_slice: int,
                   seed: int, *, depth: int | None = None) -> np.ndarray:
    """Seeded top-left corners ``(num_slices, per_slice, 2)`` of ``patch_size`` windows.

    With ``depth`` (volumes), corners ``(num_slices, per_slice, 3)`` in ``(d, h, w)`` order of cubes.
    """
    sizes = (height, width) if depth is None else (depth, height, width)
    if patch_size > min(sizes):
        raise ValueError(f"The 'patch_size' must be at most the image size {sizes}. Got {patch_size}.")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, height - patch_size + 1, size=(num_slices, per_slice))
    cols = rng.integers(0, width - patch_size + 1, size=(num_slices, per_slice))
    if depth is None:
        return np.stack([rows, cols], axis=-1)
    depths = rng.integers(0, depth - patch_size + 1, size=(num_slices, per_slice))
    return np.stack([depths, rows, cols], axis=-1)


@torch.no_grad()
def block_problem(layers: Sequence[nn.Module], inputs: Tensor, targets: Tensor, windows: np.ndarray | None,
                  patch_size: int | None, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Features ``h_{i-1}`` and residual targets of a block, computed chunk by chunk.

    Only the windows (or whole slices when ``windows`` is None) are kept, on the device of ``inputs``:
    with CUDA inputs the features never pass through host memory. ``layers`` must be on that device.
    """
    check_same_device(inputs=inputs, targets=targets,
                      **{f"layer {j + 1}": p for j, layer in enumerate(layers) for p in list(layer.parameters())[:1]})
    xs, ys = [], []
    for start in range(0, len(inputs), chunk_size):
        x0 = inputs[start:start + chunk_size]
        h = x0
        for layer in layers:
            h = layer(h)
        r = targets[start:start + chunk_size] - x0
        if windows is None:
            xs.append(h)
            ys.append(r)
            continue
        assert patch_size is not None
        for j in range(len(x0)):
            for corner in windows[start + j]:
                window = (slice(j, j + 1), slice(None), *(slice(c, c + patch_size) for c in corner))
                xs.append(h[window])
                ys.append(r[window])
    return torch.cat(xs), torch.cat(ys)


def select_beta_ratio(settings: BlockSettings, x: Tensor, y: Tensor, held: Tensor, seed: int, *, last: bool,
                      chunk_size: int, solve_chunk_size: int | None,
                      progress: bool, allow_tf32: bool = False) -> tuple[float | None, dict[str, Any], ConvexBlock]:
    """Solve a block on the slices outside ``held`` for each candidate β and score it on ``held``.

    The candidates are ``settings.beta_ratios`` (or the single ``beta_ratio``, or the
    explicit ``beta``) times ``beta_max`` of the fit slices, solved as one warm-started
    path (:func:`~convexrecon.block.fit.fit_layer_path`, same gates). The score is the squared
    error of the block's residual prediction on the held-out slices, i.e. the held-out
    error of the network ending with this block, provided ``x`` holds features of
    layers that never saw the held-out slices. Candidates without hidden channels are
    skipped unless ``last`` (the next block needs features). Returns the chosen ratio
    (None for an explicit ``beta``), the scores, and the chosen block (fit slices only).
    """
    fit_x, fit_y, out_x, out_y = x[~held], y[~held], x[held], y[held]
    check_same_device(x=x, y=y, held=held)
    options = settings.fit_options(seed=seed, chunk_size=solve_chunk_size, progress=progress, device=x.device,
                                   allow_tf32=allow_tf32)
    if settings.beta is not None:
        ratios: list[float | None] = [None]
        blocks = fit_layer_path(fit_x, fit_y, [float(settings.beta)], options=options)
    else:  # the ratios times beta_max of the fit slices, on the path's own operator
        ratios = list(settings.beta_ratios or (settings.beta_ratio,))
        blocks = fit_layer_path(fit_x, fit_y, beta_ratios=ratios, options=options)
    errors = []
    with torch.no_grad():
        for block in blocks:
            total = sum(float((block(out_x[j:j + chunk_size]) - out_y[j:j + chunk_size]).double().pow(2).sum())
                        for j in range(0, len(out_x), chunk_size))
            errors.append(total if (last or block.width > 0) else math.inf)
    if not any(math.isfinite(e) for e in errors):
        raise ValueError(f"Every candidate β {tuple(ratios)} gives a block without hidden channels on the fit "
                         f"slices, so the next block would get no features. Add smaller 'beta_ratios'.")
    best = int(np.argmin(errors))
    energy = float(out_y.double().pow(2).sum())
    return ratios[best], {"beta_ratios": ratios, "holdout_sq_error": errors, "holdout_target_energy": energy,
                          "widths": [b.width for b in blocks],
                          "statuses": [None if b.report is None else str(b.report.status) for b in blocks],
                          "chosen_ratio": ratios[best], "fit_slices": int((~held).sum()),
                          "holdout_slices": int(held.sum())}, blocks[best]


def train_layerwise(
    inputs: Tensor,
    targets: Tensor,
    blocks: Sequence[BlockSettings],
    *,
    validation: ValidationSet | tuple | None = None,
    holdout: Any = None,
    patch_size: int | None = None,
    patches_per_slice: int = 1,
    chunk_size: int = 8,
    solve_chunk_size: int | None = None,
    solve_progress: bool | None = None,
    config: dict[str, Any] | None = None,
    run: RunOptions | None = None,
    **keywords: Any,
) -> LayerwiseResult:
    """Train ``len(blocks)`` convex blocks one after the other.

    Parameters
    ----------
    inputs, targets
        Training zero-filled images and targets ``(N, 2, H, W)`` (stored scale), or
        volumes ``(N, 2, D, H, W)``: then every block is a ``Conv3d`` block, windows are
        ``patch_size`` cubes and validation scores the ``D`` slices of every volume.
    blocks
        One :class:`BlockSettings` per block (``K = len(blocks)``).
    validation
        Validation slices (:class:`~convexrecon.stack.settings.ValidationSet`, or the keywords
        ``val_inputs``, ``val_targets``, ``val_scales``, ``val_volumes``); metrics after every block.
    holdout
        Boolean per training slice (length ``N``): the slices that score the candidates
        of blocks with ``beta_ratios`` (hold out whole volumes, e.g. the last training
        volume). Needed when any block has ``beta_ratios``; the chosen block is then
        solved on all ``N`` slices.
    patch_size, patches_per_slice
        Fit on ``patches_per_slice`` seeded ``patch_size`` windows per slice (None: whole slices).
    chunk_size
        Slices per chunk when recomputing features and evaluating.
    solve_chunk_size
        Images (patches) per chunk inside ``fit_layer``'s operator (None: all at once;
        chunking bounds memory but costs time).
    solve_progress
        Progress bars inside every solve (default: ``run.progress``).
    config
        Extra metadata stored in the network's config (e.g. data settings).
    run
        :class:`~convexrecon.stack.run.RunOptions` (or its fields as keywords): ``seed`` seeds the
        windows and the gates of block ``i`` (``seed + i``); ``block_XX.pt`` go to ``checkpoint_dir``
        (existing ones of the same run are reused); ``stop_after`` blocks; ``progress`` bars over the
        blocks. ``device``: where features are computed, blocks solved and validation run (None: where
        ``inputs`` are; an explicit device moves the data once and a resumed checkpoint is loaded onto
        it; the returned network lives there). ``allow_tf32``: TF32 for the solves, the features and
        the validation (CUDA only, off by default as everywhere in the package).

    Returns
    -------
    LayerwiseResult
    """
    validation = ValidationSet.of(validation, **{k: keywords.pop(k) for k in VALIDATION_KEYWORDS if k in keywords})
    (run,) = with_keywords("train_layerwise", keywords, run or RunOptions())
    device = run.device_of(validation, inputs=inputs, targets=targets)
    inputs, targets = check_images("inputs", inputs).to(device), check_images("targets", targets).to(device)
    if inputs.shape != targets.shape:
        raise ValueError(f"The 'targets' must have the shape of 'inputs' {tuple(inputs.shape)}. "
                         f"Got {tuple(targets.shape)} instead.")
    check_blocks("blocks", blocks)
    if patch_size is not None and (not isinstance(patch_size, int) or patch_size < 1):
        raise ValueError(f"The 'patch_size' parameter must be an int > 0 or None. Got {patch_size!r} instead.")
    if not isinstance(patches_per_slice, int) or patches_per_slice < 1:
        raise ValueError(f"The 'patches_per_slice' parameter must be an int > 0. Got {patches_per_slice!r} instead.")
    if validation is not None:
        validation = validation.checked().to(device)
    selecting = [i + 1 for i, b in enumerate(blocks) if b.beta_ratios is not None]
    held = holdout_of(holdout, len(inputs), inputs.device,
                      f"Blocks {selecting} have 'beta_ratios' to select from" if selecting else None)
    stacker = _Stacker(inputs=inputs, targets=targets, blocks=list(blocks), held=held, validation=validation,
                       patch_size=patch_size, patches_per_slice=patches_per_slice, chunk_size=chunk_size,
                       solve_chunk_size=solve_chunk_size, run=run,
                       solve_progress=run.progress if solve_progress is None else bool(solve_progress))
    with run.precision():  # the whole training at one precision, restored after
        records = stacker.train()
    meta = {"method": "layerwise_convex", "training": stacker.settings,
            "device": {"type": inputs.device.type, "allow_tf32": run.allow_tf32},
            "blocks": [{k: v for k, v in r.items() if k != "report"} for r in records],
            "solve_reports": [r["report"] for r in records], **(config or {})}
    return LayerwiseResult(ReconNet(stacker.layers, stacker.read_outs[-1], meta), records, stacker.read_outs)


@dataclass
class _Stacker:
    """One run of :func:`train_layerwise` on checked tensors on one device: the blocks so far, solved or resumed."""

    inputs: Tensor
    targets: Tensor
    blocks: list[BlockSettings]
    held: Tensor | None
    validation: ValidationSet | None
    patch_size: int | None
    patches_per_slice: int
    chunk_size: int
    solve_chunk_size: int | None
    run: RunOptions
    solve_progress: bool
    layers: list[HiddenLayer] = field(default_factory=list)
    selection_layers: list[HiddenLayer] = field(default_factory=list)  # the chain that never saw the hold-out
    read_outs: list[nn.Module] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = {"blocks": [asdict(b) for b in self.blocks], "patch_size": self.patch_size,
                         "patches_per_slice": self.patches_per_slice, "seed": self.run.seed,
                         "holdout": None if self.held is None else self.held.nonzero().flatten().tolist()}
        self.key = fingerprint(self.inputs, self.targets)

    def train(self) -> list[dict[str, Any]]:
        """Solve (or resume) every block in order; returns one record per block."""
        ckpt = Path(self.run.checkpoint_dir) if self.run.checkpoint_dir is not None else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        bar = tqdm(range(self.run.last(len(self.blocks))), desc="layer-wise convex blocks", unit="block",
                   disable=not self.run.progress)
        for i in bar:
            path = ckpt / f"block_{i + 1:02d}.pt" if ckpt is not None else None
            if path is not None and path.is_file():
                records.append(self.resume(i, path))
                continue
            layer, second, record, selection_layer = self.solve(i)
            if self.validation is not None:
                v = self.validation
                record.update(validation_metrics(ReconNet(list(self.layers), second), v.inputs, v.targets, v.scales,
                                                 v.volumes, self.chunk_size))
                bar.set_postfix(psnr=f"{record['psnr']:.2f}")
            records.append(record)
            if path is not None:
                save_checkpoint(path, run_payload(
                    self.settings, self.key, layer_spec=layer.spec(), layer_state=layer.state_dict(),
                    second_state=second.state_dict(), record=record,
                    selection_layer=None if selection_layer is None else (selection_layer.spec(),
                                                                           selection_layer.state_dict())))
        return records

    def resume(self, i: int, path: Path) -> dict[str, Any]:
        """Block ``i`` from its checkpoint ``path`` (refused when another run wrote it), onto the run's device."""
        payload = load_checkpoint(path, self.settings, self.key, ("layer_spec", "layer_state", "second_state",
                                                                  "record", "selection_layer"))
        device = self.inputs.device
        with restoring(path, f"to recompute block {i + 1}"):
            layer = HiddenLayer.from_spec(payload["layer_spec"])
            layer.load_state_dict(payload["layer_state"])
            if payload["selection_layer"] is not None:
                spec, state = payload["selection_layer"]
                selection = HiddenLayer.from_spec(spec)
                selection.load_state_dict(state)
                self.selection_layers.append(selection.to(device))
            second = type(layer.first)(layer.first.out_channels, 2, 1, bias=False)
            second.load_state_dict(payload["second_state"])
        self.layers.append(layer.to(device))
        self.read_outs.append(second.to(device))
        return payload["record"]

    def solve(self, i: int) -> tuple[HiddenLayer, nn.Module, dict[str, Any], HiddenLayer | None]:
        """Block ``i`` by its convex program (β chosen on the hold-out first when it selects)."""
        b, seed, inputs, targets = self.blocks[i], self.run.seed + i, self.inputs, self.targets
        n, height, width = inputs.shape[0], inputs.shape[-2], inputs.shape[-1]
        depth = inputs.shape[2] if inputs.ndim == 5 else None
        windows = None if self.patch_size is None else sample_windows(n, height, width, self.patch_size,
                                                                      self.patches_per_slice, seed, depth=depth)
        last_selecting = max((j for j, s in enumerate(self.blocks) if s.beta_ratios is not None), default=-1)
        selecting = self.held is not None and i <= last_selecting
        _check_feature_memory(i, self.layers, inputs, windows, self.patch_size, self.chunk_size,
                              copies=2 if selecting else 1)
        start = time.perf_counter()
        selection, ratio, selection_layer = None, None, None
        x, y = block_problem(self.layers, inputs, targets, windows, self.patch_size, self.chunk_size)
        if selecting:
            assert self.held is not None
            # the selection chain: blocks solved on the fit slices only, so that the held-out
            # slices stay unseen by every layer that produces the features being scored
            # (before the first block both chains are the network input: same features)
            per_sample = self.held if windows is None else self.held.repeat_interleave(windows.shape[1])
            xs, ys = (x, y) if i == 0 else block_problem(self.selection_layers, inputs, targets, windows,
                                                         self.patch_size, self.chunk_size)
            ratio, selection, chosen = select_beta_ratio(b, xs, ys, per_sample, seed, last=i + 1 == len(self.blocks),
                                                         chunk_size=self.chunk_size,
                                                         solve_chunk_size=self.solve_chunk_size,
                                                         progress=self.solve_progress, allow_tf32=self.run.allow_tf32)
            del xs, ys
            if b.beta_ratios is None:
                ratio = None  # a fixed β: the path only extended the selection chain
            else:
                warn_choice_at_edge(f"Block {i + 1}", "β ratio", ratio, b.beta_ratios, "beta_ratios", stacklevel=5)
            if chosen.width > 0:
                selection_layer = HiddenLayer.from_block(chosen)
                self.selection_layers.append(selection_layer)
        options = b.fit_options(seed=seed, chunk_size=self.solve_chunk_size, progress=self.solve_progress,
                                device=x.device, allow_tf32=self.run.allow_tf32)
        if ratio is not None:
            options = FitOptions.of(options, beta_ratio=ratio)
        block = fit_layer(x, y, beta=b.beta, options=options)
        seconds = time.perf_counter() - start
        if block.width == 0 and i + 1 < len(self.blocks):
            raise ValueError(
                f"Block {i + 1} has zero hidden channels: every group of its convex program is zero at beta "
                f"{block.beta:.4g}, so the next block would get no features. Lower 'beta' (or 'beta_ratio', now "
                f"{b.beta_ratio:g}) of block {i + 1}."
            )
        layer, second = HiddenLayer.from_block(block), block.second
        self.layers.append(layer)
        self.read_outs.append(second)
        record: dict[str, Any] = {"block": i + 1, **block_record(block, b, seed, y, ratio, selection, seconds),
                                  "num_patches": int(y.shape[0])}
        return layer, second, record, selection_layer




def _check_feature_memory(i: int, layers: Sequence[HiddenLayer], inputs: Tensor, windows: np.ndarray | None,
                          patch_size: int | None, chunk_size: int, copies: int = 1) -> None:
    """Raise :class:`~convexrecon.errors.MemoryBudgetError` if block ``i``'s features will not fit."""
    n, spatial = inputs.shape[0], inputs.shape[2:]  # images (H, W) or volumes (D, H, W)
    pixels = math.prod(spatial)
    channels = layers[-1].first.out_channels if layers else inputs.shape[1]
    b = inputs.element_size()
    kept = n * pixels if windows is None else windows.shape[0] * windows.shape[1] * patch_size ** len(spatial)
    terms = {"features h_(i-1) and residual targets": copies * kept * (channels + 2) * b,
             "per-chunk activations": 2 * min(chunk_size, n) * pixels * max(
                 [channels] + [layer.first.out_channels for layer in layers]) * b}
    where = "patch_size or patches_per_slice" if windows is not None else "the number of training slices, or set patch_size"
    advice = {"features h_(i-1) and residual targets": f"{where} (block {i + 1} has {channels} input channels)",
              "per-chunk activations": f"chunk_size (now {chunk_size})"}
    guard.check_buffer_memory(f"train_layerwise block {i + 1}", terms, advice, inputs.device)
