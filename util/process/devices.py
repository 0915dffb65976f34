"""Device, precision and seeding helpers: CUDA when present, else CPU, with no flag needed."""
import contextlib
import logging
import os
import random

import numpy as np
import torch

log = logging.getLogger(__name__)


def resolve_device(request=None, local_rank=None):
    """The torch.device to run on: CUDA when present, else the CPU.

    `request` is a list of GPU ids (--gpu_ids; empty forces the CPU; the process of local rank r takes the
    r-th id) or a device name: None or 'auto', 'cpu', 'cuda', 'cuda:N' (the metric scripts' --device).
    """
    if isinstance(request, (list, tuple)):
        if not request or not torch.cuda.is_available():
            if request:
                log.info("no CUDA device: running on the CPU (--gpu_ids -1 says so explicitly)")
            return torch.device("cpu")
        index = request[local_rank] if local_rank is not None and local_rank < len(request) else request[0]
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if request in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(request)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} asked for CUDA, which is not available here: use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device}")
    return device


def usable_cores(limit=8):
    """The CPU cores this process may run on (its affinity), at most `limit`: the data loader's default workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(int(limit), cores))


def available_devices():
    """What this machine offers, for messages: 'cpu' and one 'cuda:N (name)' per visible GPU."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    return found


def missing_gpus(ids):
    """Why the GPUs `ids` (from --gpu_ids) cannot be used here, or None when they all can."""
    if not ids:
        return None
    if not torch.cuda.is_available():
        return (f"this machine has no CUDA device (devices found: {', '.join(available_devices())}); pass "
                f"--gpu_ids -1 for the CPU, or leave --gpu_ids out to use a GPU when there is one")
    absent = [i for i in ids if i >= torch.cuda.device_count()]
    if absent:
        return (f"no GPU {absent[0]} here (devices found: {', '.join(available_devices())}); list GPUs that "
                f"exist, or -1 for the CPU")
    return None


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def _read_number(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory(device):
    """Bytes this process may still allocate on `device`: the GPU's free memory (torch.cuda.mem_get_info) on CUDA;
    on the CPU, MemAvailable from /proc/meminfo, or what is left below this process's cgroup limit when that is
    lower. None when it cannot be told (no /proc)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:
            found.append(max(0, limit - usage))
    return min(found) if found else None


def cpu_has_native_bf16():
    """Whether oneDNN runs bf16 convolutions and matmuls natively here (AVX512-BF16 / AMX class CPUs).

    Without it, bf16 convolutions on the CPU fall back to a slow reference kernel.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def onednn_isa_cap():
    """The instruction-set cap oneDNN was started with (ONEDNN_MAX_CPU_ISA, e.g. AVX512_CORE_BF16), or None.

    AVX512_CORE_BF16 on a CPU with AMX makes oneDNN run the kernels a CPU with AVX512-BF16 and no AMX gets; the
    cores stay this machine's, so its speed is not another CPU's (docs/speed.md measures the difference)."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap if cap and cap not in ("ALL", "DEFAULT") else None


def cpu_has_amx():
    """Whether oneDNN may use AMX here: the CPU has AMX tiles and ONEDNN_MAX_CPU_ISA does not exclude them."""
    cap = onednn_isa_cap()
    if cap is not None and "AMX" not in cap:
        return False
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def hardware_info():
    """What decides which speed flags pay off on this machine, for logs and benchmark results."""
    return {"cpu": cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_native_bf16": cpu_has_native_bf16(), "cpu_amx": cpu_has_amx(), "onednn_isa_cap": onednn_isa_cap(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def amp_dtype(name, device):
    """torch dtype for --amp; fp16 on the CPU is refused with a hint to use bf16.

    bf16 on a CPU without native bf16 is allowed (the numerics are the same) but warned about: it is slower
    than fp32 there, not faster.
    """
    if name in (None, "none"):
        return None
    if name == "bf16":
        if device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("--amp bf16: this CPU (%s, %s) has no native bf16 (AVX512-BF16 or AMX), so bf16 "
                        "convolutions take a slow fallback kernel: training and inference run from several to "
                        "tens of times SLOWER than fp32. Drop --amp here; it pays off on CUDA and on CPUs with "
                        "AVX512-BF16/AMX. `python -m scripts.bench.benchmark` measures every mode on this machine.",
                        cpu_model(), torch.backends.cpu.get_cpu_capability())
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise ValueError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16")
        return torch.float16
    raise ValueError(f"--amp must be none, bf16 or fp16, got {name!r}")


def fused_adam_devices():
    """Device types for which this torch has a fused Adam kernel (CUDA and, since torch 2.4, the CPU)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # a torch without the query: CUDA has had the kernel longest
        return {"cuda"}
    return set(_get_fused_kernels_supported_devices())


def autocast(device, dtype):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed, rank=0):
    """Seed Python, NumPy and torch; each rank gets its own stream."""
    if seed is None:
        return
    seed = int(seed) + int(rank)
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def rng_state():
    """Every generator's state in tensors and plain values (a training state loads with weights_only=True)."""
    algorithm, key, pos, has_gauss, cached_gaussian = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (algorithm, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached_gaussian),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    algorithm, key, *rest = state["numpy"]
    np.random.set_state((algorithm, np.asarray(key, dtype=np.int64).astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
