"""util/process/devices: the hardware facts that decide which speed flags pay off, and the bf16 warning."""
import logging

import pytest
import torch

from util.process import devices


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns(native, monkeypatch, caplog):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level(logging.WARNING, logger="util.process.devices"):
        dtype = devices.amp_dtype("bf16", torch.device("cpu"))
    assert dtype is torch.bfloat16  # the numerics are allowed either way
    warned = [r.getMessage() for r in caplog.records if "--amp bf16" in r.getMessage()]
    if native:
        assert not warned
    else:
        assert len(warned) == 1 and "SLOWER than fp32" in warned[0] and "AMX" in warned[0]


def test_no_amp_and_fp16_on_cpu(caplog):
    assert devices.amp_dtype("none", torch.device("cpu")) is None
    with pytest.raises(ValueError, match="--amp fp16 needs a CUDA device"):
        devices.amp_dtype("fp16", torch.device("cpu"))


def test_hardware_info_names_the_cpu_and_the_threads_in_use(one_thread):
    info = devices.hardware_info()
    assert isinstance(info["cpu"], str) and info["cpu"]
    assert info["cpu_capability"] in ("DEFAULT", "NO AVX", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256")
    assert isinstance(info["cpu_native_bf16"], bool) and info["torch"] == torch.__version__
    assert info["threads"] == 1  # what the run set (one_thread), not the machine's cores
    torch.set_num_threads(2)
    assert devices.hardware_info()["threads"] == 2
