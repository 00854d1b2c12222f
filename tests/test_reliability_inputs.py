"""Bad-input corpus (continued): fit_layer, the trainers, the command line, checkpoints, caches, models.

Complements ``test_bad_input.py`` (fit_layer's parameter table) and
``test_reliability_files.py`` (files and directories). Each case asserts the
exception type and that the message names the problem.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import convexrecon as cr
from convexrecon.cli import main
from convexrecon.stack.baselines import train_end_to_end, train_layerwise_adam
from convexrecon.errors import CheckpointError
from convexrecon.data import DataWarning, SliceDataset
from convexrecon.stack.layerwise import BlockSettings, check_same_device, train_layerwise
from convexrecon.stack.network import ReconNet
from convexrecon.stack.persist import load_network

from .conftest import CROP



pytestmark = pytest.mark.usefixtures("one_thread")  # tiny problems (conftest)


X = torch.randn(2, 2, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
Y = torch.randn(2, 1, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

FIT_CASES = [
    # (id, kwargs overriding the defaults, exception, message fragment)
    ("meta-device", dict(inputs=torch.empty(2, 2, 6, 5, device="meta")), ValueError, "'inputs' parameter must hold data.*'meta'"),
    ("bool-dtype", dict(targets=torch.ones(2, 1, 6, 5, dtype=torch.bool)), TypeError, "'targets' parameter must be a real floating"),
    ("numpy-mismatched-n", dict(targets=np.zeros((3, 1, 6, 5))), ValueError, "same number of images N. Got 2 and 3"),
    ("device-number", dict(device=3.5), ValueError, "'device' parameter must be a torch device.*3.5"),
    ("device-unknown", dict(device="tpu"), ValueError, "'device' parameter must be a torch device.*'tpu'"),
    ("arrangements-negative", dict(num_arrangements=-2), ValueError, "'num_arrangements' parameter must be an int >= 1. Got -2"),
    ("arrangements-float", dict(num_arrangements=2.5), TypeError, "'num_arrangements' parameter must be an int. Got float"),
    ("activation-none", dict(activation=None), ValueError, "'activation' parameter must be one of 'relu', 'gated'. Got None"),
    ("tol-nan", dict(tol=float("nan")), ValueError, "'tol' parameter must be a finite float > 0. Got nan"),
    ("tol-inf", dict(tol=float("inf")), ValueError, "'tol' parameter must be a finite float > 0. Got inf"),
    ("chunk-zero", dict(chunk_size=0), ValueError, "'chunk_size' parameter must be an int >= 1. Got 0"),
    ("gates-list", dict(gates=[[1.0]]), TypeError, "'gates' parameter must be a tensor of shape"),
    ("beta-bool", dict(beta=True), TypeError, "'beta' parameter must be a float > 0. Got bool"),
]


@pytest.mark.parametrize("override, exc, message", [c[1:] for c in FIT_CASES], ids=[c[0] for c in FIT_CASES])
def test_fit_layer_rejects(override, exc, message) -> None:
    kwargs = dict(inputs=X, targets=Y, kernel_size=3, num_arrangements=2, beta=0.1, dtype=torch.float64)
    kwargs.update(override)
    with pytest.raises(exc, match=message):
        cr.fit_layer(kwargs.pop("inputs"), kwargs.pop("targets"), **kwargs)


# --- trainers ----------------------------------------------------------------------------------

IMAGES = torch.randn(2, 2, 7, 6, generator=torch.Generator().manual_seed(2))
BLOCK = BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-3, max_iter=60)


def _nan_like(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t[1, 1, 2, 3] = float("nan")
    return t


TRAINER_CASES = [
    ("nan-inputs", dict(inputs=_nan_like(IMAGES)), "'inputs' parameter must be finite. Found 1 NaN/Inf"),
    ("inf-targets", dict(targets=IMAGES.clone().fill_(float("inf"))), "'targets' parameter must be finite"),
    ("empty-inputs", dict(inputs=IMAGES[:0], targets=IMAGES[:0]), "'inputs' parameter must be non-empty"),
    ("meta-targets", dict(targets=torch.empty(2, 2, 7, 6, device="meta")),
     "must be on one device. Got 'inputs' on cpu, 'targets' on meta"),
    ("meta-both", dict(inputs=torch.empty(2, 2, 7, 6, device="meta"), targets=torch.empty(2, 2, 7, 6, device="meta")),
     "'inputs' parameter must hold data"),
    ("one-channel", dict(inputs=IMAGES[:, :1]), r"'inputs' parameter must be a float tensor \(N, 2, H, W\)"),
    ("int-inputs", dict(inputs=IMAGES.long()), r"'inputs' parameter must be a float tensor"),
    ("val-without-targets", dict(val_inputs=IMAGES), "'val_targets' and 'val_scales' must be given"),
    ("val-shape", dict(val_inputs=IMAGES, val_targets=IMAGES[:1], val_scales=torch.ones(2)),
     r"'val_targets' must have the shape of 'val_inputs' \(2, 2, 7, 6\)"),
    ("val-nan", dict(val_inputs=_nan_like(IMAGES), val_targets=IMAGES, val_scales=torch.ones(2)),
     "'val_inputs' parameter must be finite"),
    ("blocks-not-settings", dict(blocks=[dict(kernel_size=3)]), "'blocks' parameter must be a non-empty sequence"),
]


@pytest.mark.parametrize("override, message", [c[1:] for c in TRAINER_CASES], ids=[c[0] for c in TRAINER_CASES])
def test_train_layerwise_rejects(override, message) -> None:
    kwargs = dict(inputs=IMAGES, targets=IMAGES, blocks=[BLOCK])
    kwargs.update(override)
    with pytest.raises(ValueError, match=message):
        train_layerwise(kwargs.pop("inputs"), kwargs.pop("targets"), kwargs.pop("blocks"), **kwargs)


def test_tensors_on_two_devices_are_refused() -> None:
    # a second real device needs CUDA; the check itself is device-agnostic, so meta stands in for it
    with pytest.raises(ValueError, match="must be on one device. Got 'inputs' on cpu, 'targets' on meta"):
        check_same_device(inputs=IMAGES, targets=torch.empty(1, device="meta"))


@pytest.mark.parametrize("kwargs, message", [
    ({"tol": 0.0}, "'tol' parameter must be a finite float > 0. Got 0.0 instead"),
    ({"tol": -1e-3}, "'tol' parameter must be a finite float > 0"),
    ({"max_iter": 0}, "'max_iter' parameter must be an int >= 1. Got 0 instead"),
    ({"beta": float("nan")}, "'beta' setting must be a finite number > 0 or None. Got nan"),
    ({"beta_ratio": float("inf")}, "'beta_ratio' parameter must be a finite float > 0. Got inf instead"),
    ({"kernel_size": 2}, "'kernel_size' parameter must be odd .*Got 2 instead"),
])
def test_block_settings_reject(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        BlockSettings(**kwargs)


def test_adam_trainers_reject() -> None:
    net = ReconNet.plain([2], 3)
    with pytest.raises(ValueError, match="'targets' parameter must be finite"):
        train_end_to_end(net, IMAGES, _nan_like(IMAGES), epochs=1)
    with pytest.raises(ValueError, match="'lr' parameter must be > 0. Got 0.0"):
        train_end_to_end(net, IMAGES, IMAGES, epochs=1, lr=0.0)
    with pytest.raises(ValueError, match="'epochs' parameter must be an int > 0. Got 0"):
        train_layerwise_adam(IMAGES, IMAGES, [2], 3, epochs=0)
    with pytest.raises(ValueError, match="'weight_decay' parameter must be >= 0. Got -1"):
        train_end_to_end(net, IMAGES, IMAGES, epochs=1, weight_decay=-1.0)


# --- checkpoints, caches, saved models ------------------------------------------------------------

def _train(directory: Path, blocks=(BLOCK, BLOCK), seed: int = 3, inputs: torch.Tensor = IMAGES, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_layerwise(inputs, inputs * 0.5, list(blocks), seed=seed, checkpoint_dir=directory, **kwargs)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ckpt")
    _train(directory, stop_after=1)
    return directory


@pytest.mark.parametrize("change, message", [
    (dict(seed=4), r"settings differ \(seed: checkpoint 3, now 4\)"),
    (dict(blocks=(BlockSettings(kernel_size=5, num_arrangements=2, tol=1e-3, max_iter=60), BLOCK)),
     r"settings differ \(blocks\[0\]\.kernel_size: checkpoint 3, now 5\)"),
    (dict(blocks=(BLOCK, BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-2, max_iter=60))),
     r"blocks\[1\]\.tol: checkpoint 0.001, now 0.01"),
    (dict(patch_size=5), r"patch_size: checkpoint None, now 5"),
    (dict(inputs=IMAGES + 1), "the training data differ"),
])
def test_checkpoint_of_another_run_names_what_differs(checkpoint_dir: Path, change, message) -> None:
    with pytest.raises(CheckpointError, match=message):
        _train(checkpoint_dir, **change)


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[: len(b) // 2], "is corrupt or truncated"),
    (lambda b: b"\x00" * 64, "is corrupt or truncated"),
    (lambda b: b"", "is corrupt or truncated"),
])
def test_corrupt_checkpoint_is_refused(checkpoint_dir: Path, tmp_path: Path, damage, message) -> None:
    good = (checkpoint_dir / "block_01.pt").read_bytes()
    (tmp_path / "block_01.pt").write_bytes(damage(good))
    with pytest.raises(CheckpointError, match=f"block_01.pt {message}.*delete it"):
        _train(tmp_path)


def test_foreign_file_in_checkpoint_dir_is_refused(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "block_01.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this trainer"):
        _train(tmp_path)


def test_adam_checkpoint_of_other_settings_is_refused(tmp_path: Path) -> None:
    net = ReconNet.plain([2], 3)
    train_end_to_end(net, IMAGES, IMAGES, epochs=2, stop_after=1, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"settings differ \(lr: checkpoint 0.0001, now 0.001\)"):
        train_end_to_end(net, IMAGES, IMAGES, epochs=2, lr=1e-3, checkpoint_dir=tmp_path)


def test_stale_or_damaged_cache_is_reported_and_recomputed(tiny_dir: Path, tmp_path: Path) -> None:
    first = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    reference = first[1].input.clone()
    victim = first.cache_file(first.index[0][0])
    first.close()
    with h5py.File(victim, "a") as handle:
        handle.attrs["settings"] = handle.attrs["settings"].replace('"crop": 31', '"crop": 29')
    with pytest.warns(DataWarning, match=r"other settings \(crop: cache 29, now 31\).*recomputed"):
        again = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    assert torch.equal(again[1].input, reference)
    again.close()
    victim.write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="cannot be read.*recomputed"):
        third = SliceDataset(tiny_dir, crop=CROP, cache_dir=tmp_path, progress=False)
    assert torch.equal(third[1].input, reference)
    third.close()


def test_corrupt_saved_model_is_reported(tmp_path: Path) -> None:
    ReconNet.plain([2], 3).save(tmp_path / "m")
    weights = tmp_path / "m" / "model.pt"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.pt is corrupt, truncated or does not match config.json"):
        load_network(tmp_path / "m")
    ReconNet.plain([2], 3).save(tmp_path / "n")
    (tmp_path / "n" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is corrupt"):
        load_network(tmp_path / "n")


# --- command line --------------------------------------------------------------------------------

def _blocked(tmp_path: Path) -> Path:
    """A path that can never be a directory (its parent is a file), even for root."""
    (tmp_path / "a_file").write_text("x")
    return tmp_path / "a_file" / "out"


TRAIN = ["train", "--mask", "poisson", "--crop", str(CROP)]
CLI_CASES = [
    # (id, argv with DATA / BLOCKED / MODEL placeholders, exit code, message fragment in stderr)
    ("train-missing-data", [*TRAIN, "--data", "/nonexistent/data", "--out", "OUT"], 2,
     "argument --data: expected a directory with .h5 files. Got /nonexistent/data"),
    ("train-unwritable-out", [*TRAIN, "--data", "DATA", "--out", "BLOCKED"], 2,
     "argument --out: The output directory '.*a_file/out' is not writable"),
    ("train-unknown-mask", ["train", "--data", "DATA", "--out", "OUT", "--mask", "radial"], 2,
     "argument --mask: invalid choice: 'radial'"),
    ("train-acceleration-1", [*TRAIN, "--data", "DATA", "--out", "OUT", "--acceleration", "1"], 2,
     "argument --acceleration: expected a number > 1. Got 1.0"),
    ("train-acceleration-0.5", [*TRAIN, "--data", "DATA", "--out", "OUT", "--acceleration", "0.5"], 2,
     "argument --acceleration: expected a number > 1. Got 0.5"),
    ("prepare-acceleration-1", ["prepare", "--data", "DATA", "--acceleration", "1"], 2,
     "argument --acceleration: must be > 1"),
    ("prepare-unwritable-json", ["prepare", "--data", "DATA", "--json", "BLOCKED/t.json"], 2,
     "argument --json: The output directory .* is not writable"),
    ("reconstruct-unwritable-out", ["reconstruct", "--model", "MODEL", "--data", "DATA", "--out", "BLOCKED"], 2,
     "argument --out: The output directory .* is not writable"),
    ("reconstruct-corrupt-model", ["reconstruct", "--model", "BADMODEL", "--data", "DATA", "--out", "OUT"], 2,
     "argument --model: The model file .*config.json is corrupt"),
    ("evaluate-missing-recon", ["evaluate", "--recon", "/nonexistent/rec", "--data", "DATA"], 2,
     "argument --recon: expected a directory"),
]


@pytest.mark.parametrize("argv, code, message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_command_line_errors(synthetic_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             argv, code, message) -> None:
    model, bad_model = tmp_path / "model", tmp_path / "bad_model"
    ReconNet.plain([2], 3).save(model)
    ReconNet.plain([2], 3).save(bad_model)
    (bad_model / "config.json").write_text("[]")
    places = {"DATA": str(synthetic_dir), "OUT": str(tmp_path / "out"), "BLOCKED": str(_blocked(tmp_path)),
              "MODEL": str(model), "BADMODEL": str(bad_model)}
    argv = [places.get(a, a) for a in argv]
    argv = [a.replace("BLOCKED", places["BLOCKED"]) for a in argv]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    assert re.search(message, capsys.readouterr().err), message


# --- API inputs: grad, dtypes, layouts, NumPy, kernel size ------------------------------------------------------

LARGE = torch.randn(2, 2, 17, 15, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("override, exc, message", [
    (dict(inputs=X.long()), TypeError, r"'inputs' parameter must be a floating tensor of dtype torch.float32 or "
                                       r"torch.float64. Got dtype torch.int64 .*convert with .float\(\)"),
    (dict(targets=Y.half()), TypeError, r"'targets' parameter must be .*Got dtype torch.float16 .*half precision"),
    (dict(inputs=X.bfloat16()), TypeError, r"'inputs' .*Got dtype torch.bfloat16 .*half precision"),
    (dict(inputs=LARGE.permute(0, 2, 3, 1), targets=LARGE[:, :1].permute(0, 2, 3, 1)), ValueError,
     r"'inputs' parameter must be channels-first \(N, C, H, W\). Got shape \(2, 17, 15, 2\).*x.permute\(0, 3, 1, 2\)"),
    (dict(inputs=LARGE, targets=LARGE[:, :1], kernel_size=31), ValueError,
     r"'kernel_size' parameter must be at most the image's smaller side 15 \(images 17x15\). Got 31 instead"),
], ids=["int64", "float16", "bfloat16", "channels-last", "kernel-larger-than-image"])
def test_fit_layer_refuses_unsupported_inputs(override, exc, message) -> None:
    kwargs = dict(inputs=X, targets=Y, kernel_size=3, num_arrangements=2, beta=0.1, dtype=torch.float64)
    kwargs.update(override)
    with pytest.raises(exc, match=message):
        cr.fit_layer(kwargs.pop("inputs"), kwargs.pop("targets"), **kwargs)


def test_inputs_that_require_grad_are_detached() -> None:
    kwargs = dict(kernel_size=3, num_arrangements=2, beta=0.1, dtype=torch.float64, max_iter=50)
    plain = cr.fit_layer(X, Y, **kwargs)
    graded = cr.fit_layer(X.clone().requires_grad_(), Y.clone().requires_grad_(), **kwargs)
    assert torch.equal(plain.first.weight, graded.first.weight)
    assert not graded.first.weight.requires_grad or graded.first.weight.grad_fn is None


def test_trainers_name_numpy_half_and_channels_last_inputs() -> None:
    with pytest.raises(TypeError, match=r"'inputs' parameter must be a float tensor \(N, 2, H, W\).*numpy.ndarray "
                                        r"float32 \(2, 2, 7, 6\).*torch.from_numpy"):
        train_layerwise(IMAGES.numpy(), IMAGES, [BLOCK])
    with pytest.raises(TypeError, match=r"'targets' .*Got dtype torch.float16 .*half precision"):
        train_layerwise(IMAGES, IMAGES.half(), [BLOCK])
    with pytest.raises(ValueError, match=r"'inputs' .*Got shape \(2, 7, 6, 2\) \(it looks channels-last: pass "
                                         r"x.permute\(0, 3, 1, 2\)\)"):
        train_layerwise(IMAGES.permute(0, 2, 3, 1), IMAGES, [BLOCK])


def test_trainers_detach_inputs_that_require_grad() -> None:
    targets = torch.randn(2, 2, 7, 6, generator=torch.Generator().manual_seed(4))
    plain = train_layerwise(IMAGES, targets, [BLOCK])
    graded = train_layerwise(IMAGES.clone().requires_grad_(), targets.clone().requires_grad_(), [BLOCK])
    first = [p for p in plain.network.parameters()]
    again = [p for p in graded.network.parameters()]
    assert len(first) == len(again) and all(torch.equal(a, b) for a, b in zip(first, again))
