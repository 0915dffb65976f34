"""scripts/bench/allocator: peak memory and page faults per step under allocator settings, in fresh processes."""
import json

import pytest

from scripts.bench import allocator
from util.process import cpu_allocator


def test_a_malformed_setting_is_refused_with_the_forms_it_takes(capsys):
    with pytest.raises(SystemExit):
        allocator.parse_args(["--settings", "reuse,bounded:128"])
    assert "bounded:MMAP_MB:TRIM_MB" in capsys.readouterr().err


@pytest.mark.slow  # starts two training processes
@pytest.mark.skipif(cpu_allocator.glibc_version() is None, reason="the C library is not glibc")
def test_reuse_faults_fewer_pages_per_step_than_system(tmp_path):
    out = tmp_path / "alloc.json"
    # 256x256: activations above glibc's largest mmap threshold (32 MB), which system maps afresh every step
    allocator.main(["--size", "256", "--batch_size", "2", "--steps", "3", "--settings", "reuse,system",
                    "--out", str(out)])
    rows = {r["setting"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["reuse"]["peak_rss_gb"] > 0.1 and rows["system"]["peak_rss_gb"] > 0.1
    assert rows["reuse"]["faults_per_step"] < rows["system"]["faults_per_step"]

