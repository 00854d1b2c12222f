"""``train --recommended``: the recommended network named by one flag; the paper's CNN stays the plain default."""

from __future__ import annotations

import json

import pytest

from convexrecon.cli import build_parser, main
from convexrecon.cli.train import RECOMMENDED, apply_preset
from convexrecon.data.synthetic import make_synthetic
from convexrecon.stack.persist import load_network

BASE = ["train", "--data", "D", "--mask", "poisson", "--out", "M"]


def _args(*flags: str):
    parser = build_parser()
    args = parser.parse_args([*BASE, *flags])
    return apply_preset(args, parser)


def test_recommended_sets_the_unrolled_network_and_flags_beside_it_override() -> None:
    args = _args("--recommended")
    assert (args.architecture, args.blocks, args.cs_start) == ("unrolled", 2, 100)
    assert args.cs_inputs == [(0.15, "db4"), (1.5, "db4"), (0.5, "haar"), (0.5, "sym8")]
    assert (args.cs_relative, args.cs_start_lambda) == ("noise", 0.5)
    assert args.stage_bias and args.no_stage_zero_filled and args.stage_sense and args.stage_residual
    assert not args.no_keep_start and args.dc_relative == "noise"
    assert _args("--recommended", "--dc-relative", "fixed").dc_relative == "fixed"
    args = _args("--recommended", "--blocks", "3", "--cs-inputs", "0.01:haar")
    assert (args.architecture, args.blocks, args.cs_start, args.cs_inputs) == ("unrolled", 3, 100, [(0.01, "haar")])
    assert _args("--recommended", "--cs-start", "0").cs_start == 0


def test_without_recommended_train_trains_the_papers_cnn_as_before() -> None:
    args = _args()
    assert (args.architecture, args.blocks, args.cs_start, args.cs_inputs) == ("layerwise-cnn", 4, 0, [])
    assert not (args.stage_bias or args.no_stage_zero_filled or args.stage_sense)
    assert (args.cs_relative, args.cs_start_lambda, args.dc_relative) == ("max", 0.003, "fixed")
    noise = _args("--architecture", "unrolled", "--cs-start", "10", "--cs-relative", "noise")
    assert (noise.cs_relative, noise.cs_start_lambda) == ("noise", 0.5)  # the default weight in noise units
    assert _args("--architecture", "unrolled", "--cs-relative", "noise", "--cs-start-lambda", "2").cs_start_lambda == 2
    assert _args("--architecture", "seed").architecture == "layerwise-cnn"
    assert _args("--architecture", "unrolled", "--blocks", "3").blocks == 3


def test_recommended_refuses_the_cnn(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        _args("--recommended", "--architecture", "seed")
    assert exit_.value.code == 2
    assert "argument --recommended: expected without --architecture or with --architecture unrolled" in \
        capsys.readouterr().err


def test_help_names_the_recommended_network_first(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    description = text[text.index("The ``train`` command"):]
    assert description.index("--recommended") < description.index("The first ``--val-volumes``")
    assert "--no-stage-zero-filled --stage-bias" in text and RECOMMENDED["architecture"] == "unrolled"


def test_recommended_trains_certified_stages_on_a_tiny_set(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    make_synthetic(data, volumes=3, slices=2, coils=4, seed=0, shape=(64, 45), recon=(32, 32), snr=40.0)
    assert main(["train", "--data", str(data), "--mask", "poisson", "--out", str(tmp_path / "m"), "--recommended",
                 "--crop", "32", "--kernel-size", "3", "--arrangements", "4", "--lambdas", "0.1", "1", "--device",
                 "cpu", "--cache-dir", str(tmp_path / "cache"), "--no-classical"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "unrolled convex stages" in captured.err and "fit_layer" not in captured.err  # solver bars: --verbose
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["method"], summary["architecture"]) == ("unrolled_convex", "unrolled")  # the tables' name
    assert summary["stage_solver"] == "interior_point"
    net = load_network(tmp_path / "m")
    assert type(net).__name__ == "UnrolledNet" and len(net.stages) == 2 and net.cs_iterations == 100
    assert len(net.cs_inputs) == 4 and net.bias and not net.concat_input
    assert net.stage_inputs.sense_input and net.stage_inputs.cs_relative == "noise" and net.stage_inputs.residual
    assert net.config["training"]["keep_start"]
    # DC weights hold at the training slices' median noise level over max |zero-filled| (printed)
    assert 0 < net.stage_inputs.dc_noise < 1 and f"= {net.stage_inputs.dc_noise:.4g} (the median" in out
    # with a Poisson mask the CS weights shrink on cleaner scans below that same level (printed)
    assert net.stage_inputs.cs_noise == net.stage_inputs.dc_noise and "shrink with its noise level" in out
    # every stage is certified, or the identity (every candidate scored below its input on the held-out volume)
    assert net.config["stages"][0]["status"] == "optimal"
    assert all(s["status"] == "optimal" or (s.get("identity") and s["status"] is None) for s in net.config["stages"])
    assert "Every block the model keeps is certified" in out


def test_recommended_keeps_the_cs_weights_on_lines_and_refuses_cs_clean_without_a_cs_start(tmp_path, capsys) -> None:
    """On lines the best CS weight follows the aliasing, not the noise: --recommended leaves --cs-clean at keep."""
    from convexrecon.cli.train import RECOMMENDED_CS_CLEAN

    parser = build_parser()
    args = apply_preset(parser.parse_args(["train", "--data", "D", "--mask", "lines", "--out", "M", "--recommended"]),
                        parser)
    assert args.cs_clean == "keep" and RECOMMENDED_CS_CLEAN == {"poisson": "shrink"}
    assert _args("--recommended").cs_clean == "shrink" and _args().cs_clean == "keep"
    data = tmp_path / "data"
    make_synthetic(data, volumes=3, slices=1, coils=4, seed=0, shape=(64, 45), recon=(32, 32))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data", str(data), "--mask", "poisson", "--out", str(tmp_path / "m"), "--architecture",
              "unrolled", "--cs-clean", "shrink"])
    assert exit_info.value.code == 2 and "argument --cs-clean: expected shrink with --cs-start N > 0" in \
        capsys.readouterr().err
