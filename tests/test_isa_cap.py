"""ONEDNN_MAX_CPU_ISA caps oneDNN's kernels (e.g. at AVX512-BF16 without AMX): the benchmarks' header says the
cap is on and what it leaves (AMX, native bf16)."""
import os
import subprocess
import sys

import pytest
import torch

from scripts.bench.common import hardware_line
from util.process import devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_cap_below_amx_turns_amx_off_in_the_header(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx512_core_bf16")
    assert devices.onednn_isa_cap() == "AVX512_CORE_BF16"
    assert devices.cpu_has_amx() is False
    line = hardware_line(devices.hardware_info())
    assert "AMX: no" in line and "oneDNN capped at AVX512_CORE_BF16" in line


def test_without_a_cap_amx_is_what_the_cpu_has(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert devices.onednn_isa_cap() is None
    assert devices.cpu_has_amx() == bool(torch.cpu._is_amx_tile_supported())
    assert "capped" not in hardware_line(devices.hardware_info())


@pytest.mark.slow
def test_a_cap_below_avx512_bf16_makes_bf16_not_native():
    """oneDNN reads the cap when it starts, so this runs in a fresh process."""
    code = "from util.process.devices import cpu_has_native_bf16 as f; print(f())"
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
