"""scripts/bench: one tiny run of each benchmark writes a table and JSON with one row per mode / pool size."""
import json
import os

import pytest
import torch

from scripts.bench import common, loop, models, pool
from util.process.devices import cpu_has_native_bf16


def test_model_benchmark_rows_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    models.main(["--model", "pix2pix", "--size", "32", "--batch_size", "2", "--modes", "fp32,bf16+cl",
                 "--warmup", "0", "--repeats", "1", "--extra", "--ngf 8 --ndf 8", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["rows"]] == ["fp32", "bf16+cl"]
    assert result["rows"][0]["train_speedup"] == 1.0 and result["rows"][0]["infer_speedup"] == 1.0
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 for r in result["rows"])
    assert "| bf16+cl |" in capsys.readouterr().out


def test_ratios_name_the_mode_they_are_taken_against(tmp_path, capsys):
    """Without fp32 among the modes the ratios are against the first one run, and the table says so."""
    out = tmp_path / "bench.json"
    models.main(["--model", "pix2pix", "--size", "32", "--batch_size", "2", "--modes", "cl", "--warmup", "0",
                 "--repeats", "1", "--extra", "--ngf 8 --ndf 8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| mode | train img/s | x cl |" in printed and "x fp32" not in printed
    assert json.loads(out.read_text())["rows"][0]["reference_mode"] == "cl"


def test_pool_benchmark(tmp_path):
    out = tmp_path / "pool.json"
    pool.main(["--pool_sizes", "10,100", "--pool_map", "4", "--pool_batches", "5",
               "--batch_size", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["images"] for r in rows] == [10, 100]
    assert rows[1]["file_mb"] > rows[0]["file_mb"]


def test_model_benchmark_times_the_first_step_apart_and_names_the_hardware(tmp_path, capsys):
    out = tmp_path / "bench.json"
    models.main(["--model", "atme", "--size", "32", "--batch_size", "1", "--modes", "fp32,cl",
                 "--warmup", "1", "--repeats", "1", "--extra",
                 "--dim 8 --init_dim 8 --dim_mults 1,2 --groups 4 --ndf 8", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["cpu"] and isinstance(result["cpu_native_bf16"], bool) and result["cpu_capability"]
    for row in result["rows"]:
        assert row["train_first_step_s"] > 0 and row["infer_first_step_s"] > 0
        assert row["compile_s"] is None  # no compile mode ran
    best = max(result["rows"], key=lambda r: r["train_img_s"])["mode"]
    assert result["fastest_train"] == best
    assert f"fastest train mode here: {best}" in capsys.readouterr().out


def test_compile_modes_need_a_warmup_step():
    with pytest.raises(SystemExit):
        models.parse_args(["--modes", "fp32,compile", "--warmup", "0"])


@pytest.mark.slow
def test_loop_benchmark_trains_with_train_py_and_reports_data_wait_and_l1(tmp_path, demo_root):
    out = tmp_path / "loop.json"
    result = loop.main(["--model", "pix2pix", "--dataroot", demo_root, "--size", "32",
                        "--batch_size", "2", "--epochs", "1", "--print_steps", "1", "--modes", "fp32,cl",
                        "--num_threads", "1", "--gpu_ids", "-1", "--extra", "--ngf 8 --ndf 8", "--out", str(out)])
    assert json.loads(out.read_text())["kind"] == "loop"
    fp32, cl = result["rows"]
    assert [fp32["mode"], cl["mode"]] == ["fp32", "cl"]
    assert fp32["log_rows"] == 4  # 8 images, batch 2, a row per step
    for row in (fp32, cl):
        assert 0 <= row["data_wait_share"] < 1 and row["loop_img_s"] > 0
        assert row["final_train_L1"] > 0 and 0 < row["val_L1"] < 2  # the demo data has a val split
    assert fp32["final_train_L1_vs_reference"] == 0.0
    # channels_last only reorders sums: the same seed ends at nearly the same losses
    assert abs(cl["final_train_L1_vs_reference"]) < 0.01 and abs(cl["val_L1_vs_reference"]) < 0.01


@pytest.mark.slow
def test_loop_benchmark_reports_a_failed_run(tmp_path, demo_root):
    with pytest.raises(RuntimeError, match="(?s)train.py failed in mode fp32.*no_such_net"):
        loop.main(["--model", "pix2pix", "--dataroot", demo_root, "--size", "32", "--modes", "fp32",
                   "--extra", "--netD no_such_net"])


def test_loop_without_gpu_ids_leaves_the_device_to_train_py(demo_root, tmp_path):
    # An explicit --gpu_ids 0 is refused on a machine without that GPU, so the default passes none.
    args = loop.parse_args(["--dataroot", demo_root])
    assert "--gpu_ids" not in loop.training_command(args, "fp32", str(tmp_path))
    args = loop.parse_args(["--dataroot", demo_root, "--gpu_ids", "-1"])
    command = loop.training_command(args, "fp32", str(tmp_path))
    assert command[command.index("--gpu_ids") + 1] == "-1"


def test_default_modes_follow_the_hardware():
    assert common.default_modes(False, native_bf16=True) == "fp32,bf16,cl,bf16+cl"
    assert common.default_modes(False, native_bf16=False) == "fp32,cl"
    assert common.default_modes(True, native_bf16=False) == "fp32,cl,compile,cl+compile"
    assert common.default_modes(True, native_bf16=True).endswith(",compile,bf16+cl+compile")
    args = models.parse_args([])
    native = torch.cuda.is_available() or cpu_has_native_bf16()
    assert ("bf16" in args.modes.split(",")) == native
    assert all(mode in common.MODE_FLAGS for mode in args.modes.split(","))


def test_loop_dataroot_relative_to_the_callers_directory(demo_root, monkeypatch):
    monkeypatch.chdir(os.path.dirname(demo_root))  # train.py then runs from the repository root
    args = loop.parse_args(["--dataroot", os.path.basename(demo_root)])
    assert args.dataroot == os.path.abspath(demo_root)


def test_the_profiled_steps_run_with_the_allocator_train_py_sets(monkeypatch, tmp_path):
    """Profiled without it, every large block is mapped afresh and the page faults are blamed on the op that first
    writes the block; the table must describe the step training runs."""
    from scripts.bench import profile_step
    from util.process import cpu_allocator
    seen = []

    def fake_profile_rows(run_step, steps):
        run_step()
        seen.append(cpu_allocator.in_effect())
        return [["aten::mkldnn_convolution", 1.0, 1]]

    monkeypatch.setattr(profile_step, "profile_rows", fake_profile_rows)
    before = cpu_allocator.in_effect()
    profile_step.profile_model("pix2pix", 32, 1, "fp32", steps=1, warmup=0,
                               extra=["--ngf", "8", "--ndf", "8", "--cpu_allocator", "auto"])
    expected = "reuse" if cpu_allocator.glibc_version() else "system"
    assert seen == [expected]
    assert cpu_allocator.in_effect() == before  # put back when the profile ends
