"""scripts/benchmark.py: one tiny run of each kind writes a table and JSON with one row per mode / pool size."""
import importlib.util
import json
import os

from conftest import ROOT


def load_benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(ROOT, "scripts", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_benchmark_rows_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    load_benchmark().main(["--model", "pix2pix", "--size", "32", "--batch_size", "2", "--modes", "fp32,bf16+cl",
                           "--warmup", "0", "--repeats", "1", "--extra", "--ngf 8 --ndf 8", "--out", str(out)])
    result = json.loads(out.read_text())
    assert [r["mode"] for r in result["rows"]] == ["fp32", "bf16+cl"]
    assert result["rows"][0]["train_speedup"] == 1.0 and result["rows"][0]["infer_speedup"] == 1.0
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 for r in result["rows"])
    assert "| bf16+cl |" in capsys.readouterr().out


def test_pool_benchmark(tmp_path):
    out = tmp_path / "pool.json"
    load_benchmark().main(["--pool", "--pool_sizes", "10,100", "--pool_map", "4", "--pool_batches", "5",
                           "--batch_size", "2", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [r["images"] for r in rows] == [10, 100]
    assert rows[1]["file_mb"] > rows[0]["file_mb"]
