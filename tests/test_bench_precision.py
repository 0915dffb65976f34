"""scripts/bench/precision: a speed mode's generator output against fp32's on one fixed batch."""
from scripts.bench import precision


def test_precision_of_fp32_against_itself_is_exact(capsys):
    result = precision.main(["--size", "32", "--batch_size", "1", "--mode", "fp32"])
    assert result["relative_l2_error"] == 0.0 and result["max_abs_error"] == 0.0
    assert "relative L2 error 0" in capsys.readouterr().out
