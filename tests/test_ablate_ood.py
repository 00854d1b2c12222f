"""benchmarks/ablate_ood.py refuses what it cannot run with a usage error naming the argument."""

import pytest

from benchmarks import ablate_ood


@pytest.mark.parametrize("argv, message", [
    (["--variants", "{"], "argument --variants: expected a JSON list of objects"),
    (["--variants", "[1]"], "argument --variants: expected a JSON list of objects"),
    (["--variants", '[{"nope": 1}]'], "unknown settings ['nope']"),
    (["--run", "/nonexistent/run"], "argument --run: expected a finished run_knee --config default directory"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ablate_ood.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_run_without_its_data_is_refused(tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"out_of_distribution": {"poisson": {}}, "masks": {"poisson": '
                                           '{"cs_l1_wavelet": {"lambda": 0.003}, "unrolled_convex": {"psnr_mean": 30}}}}')
    with pytest.raises(SystemExit) as exit_:
        ablate_ood.main(["--run", str(tmp_path)])
    assert exit_.value.code == 2 and "expected its data in" in capsys.readouterr().err
