r"""Layer-wise convex training of the reconstruction network (``docs/design.md`` §9; the seed's Fig. 1).

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
finished block and ends with the same model.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from convexrecon.block import guard
from convexrecon.errors import CheckpointError, SelectionWarning, grid_edge
from convexrecon.stack.checkpoint import fingerprint, load_checkpoint, run_payload, save_checkpoint
from convexrecon.block.fit import fit_layer, fit_layer_path, problem_beta_max
from convexrecon.block.precision import tf32_mode
from convexrecon.block.options import DEFAULT_BETA_RATIO, FitOptions
from convexrecon.checks import bool_flag, check_images, check_same_device, training_device
from convexrecon.metrics import validation_metrics
from convexrecon.block.module import ConvexBlock
from convexrecon.stack.network import HiddenLayer, ReconNet


@dataclass(frozen=True)
class BlockSettings:
    """Settings of one convex block.

    Attributes
    ----------
    kernel_size
        Odd ``k`` of ``first_i``.
    num_arrangements
        ``P`` gates; hidden width at most ``P * 2`` (gated) or ``4 P`` (relu) for 2 output channels.
    activation
        ``"gated"`` (fast relaxation) or ``"relu"`` (exact, cone-constrained; slow).
    beta
        Group-norm weight; None: ``beta_ratio * beta_max`` of the block's data.
    beta_ratio
        Used when ``beta`` is None; ``beta_max = max_{i,c} ||X^T D_i y_c||`` is the
        smallest weight with a zero gated solution (1e-3 is ``fit_layer``'s default;
        larger values converge faster and regularise more).
    beta_ratios
        Candidate ratios (replacing ``beta_ratio``): the block is solved for each on the
        training slices outside ``train_layerwise``'s ``holdout``, the ratio whose network
        has the smallest squared error on the held-out slices is kept, and the block is
        solved again with it on all training slices. The candidates are scored on features
        of a *selection chain* (earlier blocks solved on the fit slices only), so no layer
        that produces them has seen the held-out slices. The validation split is never used.
    gate_sampling
        ``"antithetic"`` (default here): gates in complementary pairs ``g, -g``, so each
        block holds every linear convolution of its input, including the previous
        block's read-out — an added block can always reproduce its predecessor's
        prediction. ``"gaussian"``: i.i.d. gates (``fit_layer``'s default). See
        :func:`~convexrecon.block.arrangements.draw_gates`.
    tol, max_iter
        Passed to :func:`fit_layer`.
    """

    kernel_size: int = 5
    num_arrangements: int = 8
    activation: str = "gated"
    beta: float | None = None
    beta_ratio: float = DEFAULT_BETA_RATIO
    beta_ratios: tuple[float, ...] | None = None
    gate_sampling: str = "antithetic"
    tol: float = 1e-4
    max_iter: int | None = None

    def __post_init__(self) -> None:
        self.fit_options()  # validates the settings shared with fit_layer, with fit_layer's messages
        if self.beta_ratios is not None:
            ratios = self.beta_ratios
            valid = lambda r: isinstance(r, (int, float)) and not isinstance(r, bool) and r > 0 and math.isfinite(r)  # noqa: E731
            if (isinstance(ratios, (str, bytes)) or not hasattr(ratios, "__len__") or len(ratios) == 0
                    or not all(valid(r) for r in ratios)):
                raise ValueError(f"The 'beta_ratios' setting must be a non-empty sequence of finite numbers > 0 or "
                                 f"None. Got {ratios!r} instead.")
            if self.beta is not None:
                raise ValueError("The 'beta' and 'beta_ratios' settings exclude each other: an explicit 'beta' "
                                 f"leaves nothing to select. Got beta={self.beta!r}, beta_ratios={ratios!r}.")
            object.__setattr__(self, "beta_ratios", tuple(float(r) for r in ratios))
        if self.beta is not None and not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"The 'beta' setting must be a finite number > 0 or None. Got {self.beta!r} instead.")

    def fit_options(self, **solve: Any) -> FitOptions:
        """The :class:`~convexrecon.block.options.FitOptions` of this block (float32), with ``solve`` settings
        (seed, device, chunk_size, progress, ...) added."""
        return FitOptions(kernel_size=self.kernel_size, num_arrangements=self.num_arrangements,
                          activation=self.activation, gate_sampling=self.gate_sampling, beta_ratio=self.beta_ratio,
                          tol=self.tol, max_iter=self.max_iter, dtype=torch.float32, **solve)


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


def block_record(block: ConvexBlock, settings: BlockSettings, gates_seed: int, targets: Tensor, ratio: float | None,
                 selection: dict[str, Any] | None, seconds: float) -> dict[str, Any]:
    """What a trainer records of one solved block: β, width, its certificate and how β was chosen."""
    report = block.report
    return {
        "beta": block.beta, "width": block.width, "activation": settings.activation, "gates_seed": gates_seed,
        "num_pixels": int(targets[:, 0].numel()), "seconds": seconds,
        "solver": None if report is None else report.solver,
        "duality_gap": None if report is None else report.gap,
        "relative_gap": None if report is None else report.relative_gap,
        "status": None if report is None else str(report.status),
        "iterations": None if report is None else report.iterations,
        "report": None if report is None else report.to_dict(),
        "beta_ratio": ratio if ratio is not None else (None if settings.beta is not None else settings.beta_ratio),
        "selection": selection,
    }


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


def block_beta(settings: BlockSettings, x: Tensor, y: Tensor, seed: int, chunk_size: int | None = None,
               ratio: float | None = None) -> float:
    """``settings.beta``, or ``ratio`` (default ``settings.beta_ratio``) ``* beta_max`` on ``(x, y)`` with the
    block's gates (:func:`~convexrecon.block.fit.problem_beta_max`)."""
    if settings.beta is not None:
        return float(settings.beta)
    options = settings.fit_options(seed=seed, chunk_size=chunk_size, device=x.device)
    value = (settings.beta_ratio if ratio is None else ratio) * problem_beta_max(x, y, options=options)
    if not value > 0:
        raise ValueError("The block's targets are zero on every arrangement: pass an explicit 'beta'.")
    return value


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


def warn_choice_at_edge(where: str, what: str, chosen: float, candidates: Sequence[float], setting: str,
                        stacklevel: int = 3) -> bool:
    """Warn (:class:`~convexrecon.errors.SelectionWarning`) when ``chosen`` is the smallest or largest of two or more
    ``candidates``; returns whether it is. Exact-ReLU blocks of the quick knee benchmark chose the smallest β ratio
    of [3e-3, 3e-2] and lost 2 dB to gated blocks; given candidates down to 1e-4 they gained 1.4 dB over them.
    ``stacklevel`` 3 points at the caller of the function that calls this one."""
    edge = grid_edge(chosen, candidates)
    if edge is None:
        return False
    side, other = edge
    warnings.warn(f"{where}: the {what} chosen on the held-out slices is {chosen:g}, the {side} of the candidates "
                  f"{[float(f'{v:g}') for v in sorted({float(c) for c in candidates})]}: the best value may lie outside them; add {other} values to "
                  f"'{setting}'.", SelectionWarning, stacklevel=stacklevel)
    return True


def train_layerwise(
    inputs: Tensor,
    targets: Tensor,
    blocks: Sequence[BlockSettings],
    *,
    val_inputs: Tensor | None = None,
    val_targets: Tensor | None = None,
    val_scales: Tensor | None = None,
    val_volumes: Sequence[str] | None = None,
    patch_size: int | None = None,
    patches_per_slice: int = 1,
    seed: int = 0,
    chunk_size: int = 8,
    solve_chunk_size: int | None = None,
    checkpoint_dir: str | Path | None = None,
    stop_after: int | None = None,
    progress: bool = False,
    config: dict[str, Any] | None = None,
    holdout: Any = None,
    solve_progress: bool | None = None,
    device: Any = None,
    allow_tf32: bool = False,
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
    val_inputs, val_targets, val_scales, val_volumes
        Validation slices, their scale factors and volume names; metrics after every block.
    patch_size, patches_per_slice
        Fit on ``patches_per_slice`` seeded ``patch_size`` windows per slice (None: whole slices).
    seed
        Seeds the windows (``seed + i``) and the gates of block ``i`` (``seed + i``).
    chunk_size
        Slices per chunk when recomputing features and evaluating.
    solve_chunk_size
        Images (patches) per chunk inside ``fit_layer``'s operator (None: all at once;
        chunking bounds memory but costs time).
    checkpoint_dir
        Where ``block_XX.pt`` are written; existing ones of the same run are reused.
    stop_after
        Stop after this many blocks (simulates an interruption; the result holds them).
    progress
        Progress bar over the blocks (and, unless ``solve_progress`` says otherwise, the solves').
    solve_progress
        Progress bars inside every solve (default: ``progress``).
    config
        Extra metadata stored in the network's config (e.g. data settings).
    holdout
        Boolean per training slice (length ``N``): the slices that score the candidates
        of blocks with ``beta_ratios`` (hold out whole volumes, e.g. the last training
        volume). Needed when any block has ``beta_ratios``; the chosen block is then
        solved on all ``N`` slices.
    device
        Where features are computed, blocks solved and validation run. None: where ``inputs``
        are (every tensor given must then be on that one device, else ``ValueError`` naming
        them). An explicit device (``"cpu"``, ``"cuda:0"``) moves the training and validation
        tensors there once; the data then stay on it from block to block, and a resumed
        checkpoint is loaded onto it. The returned network lives on this device.
    allow_tf32
        TF32 for the solves, the feature computation and the validation (CUDA only; the package's
        default False everywhere, as in :func:`~convexrecon.block.fit.fit_layer` and the Adam
        baselines, so methods compare at the same precision).

    Returns
    -------
    LayerwiseResult
    """
    run_device = training_device(device, inputs=inputs, targets=targets, val_inputs=val_inputs,
                                 val_targets=val_targets)
    allow_tf32 = bool_flag("allow_tf32", allow_tf32)
    inputs, targets = check_images("inputs", inputs), check_images("targets", targets)
    inputs, targets = inputs.to(run_device), targets.to(run_device)
    if val_inputs is not None:
        val_inputs = check_images("val_inputs", val_inputs).to(run_device)
    if isinstance(val_targets, Tensor):
        val_targets = val_targets.to(run_device)
    solve_progress = progress if solve_progress is None else bool(solve_progress)
    with tf32_mode(allow_tf32):  # the whole training at one precision, restored after
        if inputs.shape != targets.shape:
            raise ValueError(f"The 'targets' must have the shape of 'inputs' {tuple(inputs.shape)}. "
                             f"Got {tuple(targets.shape)} instead.")
        if len(blocks) == 0 or not all(isinstance(b, BlockSettings) for b in blocks):
            raise ValueError("The 'blocks' parameter must be a non-empty sequence of BlockSettings.")
        if patch_size is not None and (not isinstance(patch_size, int) or patch_size < 1):
            raise ValueError(f"The 'patch_size' parameter must be an int > 0 or None. Got {patch_size!r} instead.")
        if not isinstance(patches_per_slice, int) or patches_per_slice < 1:
            raise ValueError(f"The 'patches_per_slice' parameter must be an int > 0. "
                             f"Got {patches_per_slice!r} instead.")
        validate = val_inputs is not None
        if validate:
            check_images("val_inputs", val_inputs)
            if val_targets is None or val_scales is None:
                raise ValueError("With 'val_inputs', 'val_targets' and 'val_scales' must be given too.")
            check_images("val_targets", val_targets)
            if val_targets.shape != val_inputs.shape:
                raise ValueError(f"The 'val_targets' must have the shape of 'val_inputs' {tuple(val_inputs.shape)}. "
                                 f"Got {tuple(val_targets.shape)} instead.")
            val_volumes = list(val_volumes) if val_volumes is not None else ["val"] * len(val_inputs)
        check_same_device(inputs=inputs, targets=targets, val_inputs=val_inputs, val_targets=val_targets)
        held = _check_holdout(holdout, blocks, len(inputs), inputs.device)
        settings = {"blocks": [asdict(b) for b in blocks], "patch_size": patch_size,
                    "patches_per_slice": patches_per_slice, "seed": seed,
                    "holdout": None if held is None else held.nonzero().flatten().tolist()}
        key = fingerprint(inputs, targets)
        ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
        n, height, width = inputs.shape[0], inputs.shape[-2], inputs.shape[-1]
        depth = inputs.shape[2] if inputs.ndim == 5 else None
        layers: list[HiddenLayer] = []
        selection_layers: list[HiddenLayer] = []
        last_selecting = max((j for j, b in enumerate(blocks) if b.beta_ratios is not None), default=-1)
        records: list[dict[str, Any]] = []
        read_outs: list[nn.Module] = []
        second: nn.Conv2d | None = None
        last = len(blocks) if stop_after is None else min(len(blocks), int(stop_after))
        bar = tqdm(range(last), desc="layer-wise convex blocks", unit="block", disable=not progress)
        for i in bar:
            path = ckpt / f"block_{i + 1:02d}.pt" if ckpt is not None else None
            if path is not None and path.is_file():
                payload = load_checkpoint(path, settings, key, ("layer_spec", "layer_state", "second_state", "record",
                                                                "selection_layer"))
                try:
                    layer = HiddenLayer.from_spec(payload["layer_spec"])
                    layer.load_state_dict(payload["layer_state"])
                    if payload["selection_layer"] is not None:
                        spec, state = payload["selection_layer"]
                        selection_layers.append(HiddenLayer.from_spec(spec))
                        selection_layers[-1].load_state_dict(state)
                    second = type(layer.first)(layer.first.out_channels, 2, 1, bias=False)
                    second.load_state_dict(payload["second_state"])
                    layer, second = layer.to(inputs.device), second.to(inputs.device)  # resumed onto the run's device
                    if selection_layers:
                        selection_layers[-1] = selection_layers[-1].to(inputs.device)
                except (KeyError, TypeError, ValueError, RuntimeError) as error:
                    raise CheckpointError(f"The checkpoint {path} is corrupt ({type(error).__name__}: {error}); "
                                          f"delete it to recompute block {i + 1}.") from None
                layers.append(layer)
                read_outs.append(second)
                records.append(payload["record"])
                continue
            b = blocks[i]
            windows = None if patch_size is None else sample_windows(n, height, width, patch_size,
                                                                      patches_per_slice, seed + i, depth=depth)
            selecting = held is not None and i <= last_selecting
            _check_feature_memory(i, layers, inputs, windows, patch_size, chunk_size, copies=2 if selecting else 1)
            start = time.perf_counter()
            selection, ratio, selection_layer = None, None, None
            x, y = block_problem(layers, inputs, targets, windows, patch_size, chunk_size)
            if selecting:
                # the selection chain: blocks solved on the fit slices only, so that the held-out
                # slices stay unseen by every layer that produces the features being scored
                # (before the first block both chains are the network input: same features)
                per_sample = held if windows is None else held.repeat_interleave(windows.shape[1])
                xs, ys = (x, y) if i == 0 else block_problem(selection_layers, inputs, targets, windows, patch_size,
                                                             chunk_size)
                ratio, selection, chosen = select_beta_ratio(b, xs, ys, per_sample, seed + i,
                                                             last=i + 1 == len(blocks), chunk_size=chunk_size,
                                                             solve_chunk_size=solve_chunk_size, progress=solve_progress,
                                                             allow_tf32=allow_tf32)
                del xs, ys
                if b.beta_ratios is None:
                    ratio = None  # a fixed β: the path only extended the selection chain
                else:
                    warn_choice_at_edge(f"Block {i + 1}", "β ratio", ratio, b.beta_ratios, "beta_ratios")
                if chosen.width > 0:
                    selection_layer = HiddenLayer.from_block(chosen)
                    selection_layers.append(selection_layer)
            options = b.fit_options(seed=seed + i, chunk_size=solve_chunk_size, progress=solve_progress,
                                    device=x.device, allow_tf32=allow_tf32)
            if ratio is not None:
                options = FitOptions.of(options, beta_ratio=ratio)
            block = fit_layer(x, y, beta=b.beta, options=options)
            seconds = time.perf_counter() - start
            if block.width == 0 and i + 1 < len(blocks):
                raise ValueError(
                    f"Block {i + 1} has zero hidden channels: every group of its convex program is zero at beta "
                    f"{block.beta:.4g}, so the next block would get no features. Lower 'beta' (or 'beta_ratio', now "
                    f"{b.beta_ratio:g}) of block {i + 1}."
                )
            layer, second = HiddenLayer.from_block(block), block.second
            layers.append(layer)
            read_outs.append(second)
            record: dict[str, Any] = {"block": i + 1, **block_record(block, b, seed + i, y, ratio, selection, seconds),
                                      "num_patches": int(y.shape[0])}
            if validate:
                net_i = ReconNet(list(layers), second)
                record.update(validation_metrics(net_i, val_inputs, val_targets, val_scales, val_volumes, chunk_size))
                bar.set_postfix(psnr=f"{record['psnr']:.2f}")
            records.append(record)
            if path is not None:
                save_checkpoint(path, run_payload(settings, key, layer_spec=layer.spec(), layer_state=layer.state_dict(),
                                                  second_state=second.state_dict(), record=record,
                                                  selection_layer=None if selection_layer is None else
                                                  (selection_layer.spec(), selection_layer.state_dict())))
        assert second is not None
        meta = {"method": "layerwise_convex", "training": settings,
                "device": {"type": inputs.device.type, "allow_tf32": allow_tf32},
                "blocks": [{k: v for k, v in r.items() if k != "report"} for r in records],
                "solve_reports": [r["report"] for r in records], **(config or {})}
        return LayerwiseResult(ReconNet(layers, second, meta), records, read_outs)


def _check_holdout(holdout: Any, blocks: Sequence[BlockSettings], n: int, device: torch.device) -> Tensor | None:
    """The ``holdout`` mask as a bool tensor on ``device``, or None when no block selects ``beta``."""
    selecting = [i + 1 for i, b in enumerate(blocks) if b.beta_ratios is not None]
    if holdout is None:
        if selecting:
            raise ValueError(f"Blocks {selecting} have 'beta_ratios' to select from: pass 'holdout', a boolean per "
                             f"training slice marking the slices that score the candidates.")
        return None
    held = torch.as_tensor(holdout)
    if held.dtype != torch.bool or held.shape != (n,):
        raise ValueError(f"The 'holdout' parameter must be a boolean per training slice, shape ({n},). "
                         f"Got dtype {held.dtype}, shape {tuple(held.shape)} instead.")
    if not 0 < int(held.sum()) < n:
        raise ValueError(f"The 'holdout' parameter must mark some but not all of the {n} training slices. "
                         f"Got {int(held.sum())} marked.")
    return held.to(device)


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
