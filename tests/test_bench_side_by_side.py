"""scripts/bench/side_by_side: the repository against itself as the baseline, and the refusals."""
import json
import math

import pytest

from scripts.bench import side_by_side
from scripts.bench.common import ROOT

TINY_ATME = "--dim 8 --init_dim 8 --dim_mults 1,2 --groups 4 --ndf 8 --n_layers_D 1 --netD n_layers"


@pytest.mark.slow  # starts two worker processes
def test_against_itself_both_workers_run_and_start_from_the_same_losses(tmp_path, capsys):
    out = tmp_path / "side.json"
    side_by_side.main(["--baseline", ROOT, "--model", "atme", "--size", "32", "--batch_size", "2", "--rounds", "2",
                       "--steps", "1", "--warmup", "1", "--extra", TINY_ATME, "--out", str(out), "--top", "5",
                       "--scale_batches", "1,2", "--scale_size", "32", "--scale_sizes", "32,64", "--scale_batch", "1"])
    result = json.loads(out.read_text())
    assert result["kind"] == "side_by_side" and result["cpu"] and isinstance(result["cpu_native_bf16"], bool)
    assert result["orders"] == [["baseline", "current"], ["current", "baseline"]]  # ABBA
    versions = result["versions"]
    for label in ("baseline", "current"):
        v = versions[label]
        assert v["models_file"].startswith(ROOT)  # each worker imported the checkout's code, not the bench folder's
        assert v["images"] == 2 and v["commit"] == versions["current"]["commit"]
        assert len(v["train_round_s_per_img"]) == 2 and len(v["infer_round_s_per_img"]) == 2
        assert v["train_s_per_img"] > 0 and v["infer_s_per_img"] > 0
    # same code, same data, same seed: the first step is the same computation
    assert versions["baseline"]["first_losses"] == versions["current"]["first_losses"]
    assert set(versions["current"]["first_losses"]) >= {"G_GAN", "G_L1", "D_real", "D_fake"}
    assert result["first_losses_equal"] is True
    for kind in ("train", "infer"):
        ratios = result["speedup"][kind]["rounds"]
        assert len(ratios) == 2 and all(math.isfinite(r) and r > 0 for r in ratios)
        assert result["speedup"][kind]["min"] <= result["speedup"][kind]["median"] <= result["speedup"][kind]["max"]
    table = capsys.readouterr().out
    assert f"CPU: {result['cpu']}" in table
    assert f"| baseline ({ROOT}) | {versions['baseline']['commit']} |" in table
    assert "| current (" in table and "speed-up, baseline/current" in table
    # peak memory of each side, the profile's top ops, the scaling rows
    for label in ("baseline", "current"):
        assert versions[label]["max_rss_mb"] > 50
        assert f"{versions[label]['max_rss_mb'] / 1024:.2f} |" in table
    ops = result["profile"]["current"]
    assert len(ops) > 5 and ops[0][1] >= ops[1][1] >= ops[4][1] > 0
    assert any(name == "aten::convolution_backward" for name, _, _ in ops)
    assert "top 5 ops of this checkout's training step" in table and f"| {ops[0][0]} |" in table
    assert [(r["size"], r["batch"]) for r in result["scaling"]] == [(32, 1), (32, 2), (64, 1)]
    assert all(r["s_per_img"] > 0 and r["us_per_pixel"] > 0 for r in result["scaling"])
    assert "| batch 2 |" in table and "| 64x64 |" in table


@pytest.mark.slow  # starts worker processes
def test_a_worker_that_dies_is_reported_with_its_stderr(tmp_path):
    out = tmp_path / "side.json"
    with pytest.raises(RuntimeError, match=r"(?s)the baseline worker .* exited with code 1 during 'init'.*no_such_net"):
        side_by_side.main(["--baseline", ROOT, "--model", "pix2pix", "--size", "32", "--batch_size", "1",
                           "--rounds", "1", "--extra", "--netD no_such_net", "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "not a directory"),
    (lambda tmp: tmp, "not a checkout of this project (no train.py or models)"),
])
def test_a_baseline_that_is_not_a_checkout_is_refused_in_one_line(tmp_path, capsys, make, message):
    out = tmp_path / "side.json"
    with pytest.raises(SystemExit):
        side_by_side.main(["--baseline", str(make(tmp_path)), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--baseline" in err and message in err and "git worktree add" in err
    assert not out.exists()


def test_an_unknown_mode_lists_the_modes(capsys):
    with pytest.raises(SystemExit):
        side_by_side.main(["--baseline", ROOT, "--mode", "fp8"])
    err = capsys.readouterr().err
    assert "unknown mode 'fp8'" in err and "fp32, bf16, cl" in err


def test_the_baseline_mode_defaults_to_the_mode_and_is_checked(capsys):
    assert side_by_side.parse_args(["--baseline", ROOT, "--mode", "cl"]).baseline_mode == "cl"
    args = side_by_side.parse_args(["--baseline", ROOT, "--mode", "bf16+cl", "--baseline_mode", "fp32"])
    assert (args.mode, args.baseline_mode) == ("bf16+cl", "fp32")
    with pytest.raises(SystemExit):
        side_by_side.main(["--baseline", ROOT, "--baseline_mode", "fp8"])
    assert "--baseline_mode: unknown mode 'fp8'" in capsys.readouterr().err


def test_scaling_lists_refuse_zero(capsys):
    with pytest.raises(SystemExit):
        side_by_side.parse_args(["--baseline", ROOT, "--scale_batches", "1,0"])
    assert "--scale_batches" in capsys.readouterr().err


@pytest.mark.slow  # runs git
def test_git_commit_names_a_folder_outside_git(tmp_path):
    assert side_by_side.git_commit(str(tmp_path)) == "not a git checkout"
    assert side_by_side.git_commit(ROOT).split()[0].isalnum()
