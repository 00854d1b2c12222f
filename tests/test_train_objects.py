"""The trainers' option objects: ValidationSet, RunOptions, AdamSettings, StageInputs, the best depth, model kinds."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import convexrecon as cr
from convexrecon.cli import build_parser
from convexrecon.stack.layerwise import LayerwiseResult
from convexrecon.stack.run import with_keywords


def _data(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 8, 8, generator=g)
    return x, x + 0.1 * torch.randn(n, 2, 8, 8, generator=g)


def test_validation_set_accepts_every_form_once() -> None:
    x, y = _data()
    scales = torch.ones(2)
    from_keywords = cr.ValidationSet.of(val_inputs=x[:2], val_targets=y[:2], val_scales=scales)
    from_tuple = cr.ValidationSet.of((x[:2], y[:2], scales, None))
    assert from_keywords.volumes == from_tuple.volumes == ["val", "val"]
    assert cr.ValidationSet.of(from_tuple) is from_tuple and cr.ValidationSet.of(None) is None
    with pytest.raises(ValueError, match="'validation' parameter must be a ValidationSet"):
        cr.ValidationSet.of((x, y))
    with pytest.raises(ValueError, match="not both"):
        cr.ValidationSet.of(from_tuple, val_inputs=x)


def test_trainers_take_objects_or_their_fields_as_keywords() -> None:
    x, y = _data()
    val = cr.ValidationSet(x[:2], y[:2], torch.ones(2), ["a", "b"])
    nets = [cr.ReconNet.plain([3], 3, seed=1) for _ in range(2)]
    a = cr.train_end_to_end(nets[0], x, y, adam=cr.AdamSettings(epochs=2, batch_size=2, lr=1e-3),
                            run=cr.RunOptions(seed=4), validation=val)
    b = cr.train_end_to_end(nets[1], x, y, epochs=2, batch_size=2, lr=1e-3, seed=4, validation=tuple(
        [val.inputs, val.targets, val.scales, val.volumes]))
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and a[-1]["psnr"] == b[-1]["psnr"]
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    assert nets[0].config["training"]["epochs"] == 2
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        cr.train_end_to_end(nets[0], x, y, epoch=2)


def test_adam_defaults_come_from_the_library() -> None:
    x, y = _data()
    net, _ = cr.train_layerwise_adam(x, y, [3], 3, adam=cr.AdamSettings(epochs=None, batch_size=4), epochs=1)
    assert net.config["training"]["epochs_per_block"] == 1
    with pytest.raises(ValueError, match="'halve_every' parameter must be an int > 0"):
        cr.AdamSettings(halve_every=0)
    with pytest.raises(ValueError, match="'weight_decay' parameter must be >= 0. Got -1"):
        cr.AdamSettings(weight_decay=[0.0, -1.0])
    assert cr.AdamSettings(weight_decay=0.5).decays(2) == [0.5, 0.5]


def test_with_keywords_replaces_fields_in_order() -> None:
    adam, run = with_keywords("f", {"lr": 0.5, "seed": 3}, cr.AdamSettings(), cr.RunOptions())
    assert adam.lr == 0.5 and run.seed == 3 and run.last(5) == 5
    assert cr.RunOptions(stop_after=2).last(5) == 2
    with pytest.raises(TypeError, match="'allow_tf32' parameter must be a bool"):
        cr.RunOptions(allow_tf32=1)


def test_stage_inputs_parse_in_one_place() -> None:
    assert cr.StageInputs.parse_cs_input("0.003:haar") == (0.003, "haar")
    assert cr.StageInputs.parse_cs_input("0.01") == (0.01, "db4")
    with pytest.raises(ValueError, match="expected L or L:WAVELET"):
        cr.StageInputs.parse_cs_input("0:haar")
    relative = cr.StageInputs.from_options(bias=True, cs_iterations=5, cs_lambda=0.01, cs_inputs=[2, (3, "haar")],
                                           relative=True)
    assert relative.cs_inputs == ((2 * 0.01, "db4"), (3 * 0.01, "haar")) and relative.bias is True
    text = cr.StageInputs.from_options(cs_iterations=5, cs_lambda=0.01, cs_inputs=["0.02:sym8"])
    assert text.cs_inputs == ((0.02, "sym8"),)
    plain = cr.StageInputs.from_options(shrink=[0.01], cs_lambda=0.003, cs_inputs=["0.02"])  # no CS start: dropped
    assert plain == cr.StageInputs(shrink=(0.01,)) and plain.channels(True) == 6
    assert plain.settings() == {"bias": False, "shrink": [0.01], "cs_iterations": 0, "cs_lambda": 0.0,
                                "cs_inputs": []}
    with pytest.raises(ValueError, match="'cs_inputs' parameter needs 'cs_iterations' > 0"):
        cr.StageInputs(cs_inputs=(0.01,))


def test_best_depth_is_the_library_rule(tmp_path) -> None:
    x, y = _data(6)
    block = cr.BlockSettings(kernel_size=3, num_arrangements=2, tol=1e-3, max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cr.train_layerwise(x, y, [block] * 3, val_inputs=x[:2], val_targets=y[:2], val_scales=torch.ones(2))
    psnrs = [r["psnr"] for r in result.records]
    depth = result.best_depth()
    assert depth == 1 + psnrs.index(max(psnrs))
    assert result.best().num_blocks == depth and result.best().config["kept_blocks"] == depth
    assert result.best(keep_all=True).num_blocks == 3
    with pytest.raises(ValueError, match="validation"):
        LayerwiseResult(result.network, [{"block": 1}], result.second_layers).best_depth()


def test_saved_models_load_under_the_old_architecture_name(tmp_path) -> None:
    net = cr.ReconNet.plain([3], 3, seed=2)
    net.save(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architecture"]["kind"] == "layerwise-cnn"
    x, _ = _data()
    for kind in ("seed", None):  # the alias, and model files whose config has no kind
        if kind is None:
            config["architecture"].pop("kind")
        else:
            config["architecture"]["kind"] = kind
        (tmp_path / "config.json").write_text(json.dumps(config))
        assert torch.equal(cr.load_network(tmp_path).predict(x), net.predict(x))
    config["architecture"]["kind"] = "transformer"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="corrupt or not written.*'kind' must be one of"):
        cr.load_network(tmp_path)


def test_cli_architecture_alias() -> None:
    from convexrecon.cli.train import apply_preset

    parser = build_parser()
    common = ["train", "--data", "d", "--mask", "poisson", "--out", "o"]

    def architecture(*extra: str) -> str:
        return apply_preset(parser.parse_args([*common, *extra]), parser).architecture

    assert architecture("--architecture", "seed") == "layerwise-cnn"
    assert architecture() == "layerwise-cnn"  # the plain default stays the paper's CNN
    assert architecture("--recommended") == "unrolled"
    assert architecture("--architecture", "unrolled") == "unrolled"
