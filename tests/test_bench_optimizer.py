"""scripts.bench.optimizer times both Adam kernels on a model's own parameters and reports their ratio."""
import json

from scripts.bench import optimizer


def test_both_kernels_are_timed_on_the_models_parameters(tmp_path, capsys):
    out = tmp_path / "adam.json"
    optimizer.main(["--model", "pix2pix", "--rounds", "2", "--extra", "--ngf 8 --ndf 8", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["parameters"]) == {"G", "D"} and all(c > 0 for c in result["parameters"].values())
    assert all(s > 0 for s in result["s_per_step"].values())
    assert result["fused_speedup"] == result["s_per_step"]["foreach"] / result["s_per_step"]["fused"]
    assert "| fused |" in capsys.readouterr().out


def test_interleaved_steps_move_the_parameters():
    import torch
    params = [torch.nn.Parameter(torch.zeros(10))]
    optimizer.time_kernels(params, rounds=2)
    assert params[0].abs().sum() > 0
