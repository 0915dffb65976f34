"""Which backend runs test.py's generator: the one `--backend` names, or with `--backend auto` the fastest fp32
backend measured here on one image (util.export.backends lists them).

`auto` times one backend at a time: torch's module, then each runtime, opened, warmed up (OpenVINO compiles for
the shape, the others allocate) and timed over a few calls (the median). A runtime that is not the fastest so far
is released before the next one opens, so at most the fastest so far and the one being timed are open at once,
and none stays open when torch wins. On CUDA every timed call is bracketed by `torch.cuda.synchronize`, so the
clock reads the work, not its queueing.
"""
import gc
import logging
import statistics
import time

import torch

from util.arithmetic import round_up
from util.export.backends import AUTO, RUNTIMES
from util.export.onnx_export import open_graph

log = logging.getLogger(__name__)


def synchronizer(device):
    """A callable that waits for `device`'s queued work (CUDA), or does nothing (CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def median_seconds(run, feeds, calls, synchronize):
    """The median wall time of `calls` calls of `run(feeds)` after one untimed warm-up call."""
    run(feeds)
    times = []
    for _ in range(calls):
        synchronize()
        begin = time.perf_counter()
        run(feeds)
        synchronize()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def fastest_backend(torch_run, open_runtime, feeds, calls=2, device="cpu", runtimes=RUNTIMES):
    """(name, runner or None for torch, {name: median seconds}): the fastest of torch (`torch_run`) and each of
    `runtimes` (`open_runtime(name)` -> runner), timed one at a time on `feeds` (see the module docstring)."""
    synchronize = synchronizer(device)
    medians = {"torch": median_seconds(torch_run, feeds, calls, synchronize)}
    best, best_runner = "torch", None
    for name in runtimes:
        runner = open_runtime(name)
        medians[name] = median_seconds(runner, feeds, calls, synchronize)
        if medians[name] < medians[best]:
            best, best_runner = name, runner  # the earlier best is released here
        del runner
        gc.collect()  # a released session's memory goes back before the next one opens
    return best, best_runner, medians


def open_backend(graph_path, backend, precision, export_command, spec, side=256, device="cpu"):
    """(the backend's name, runner or None for torch) for test.py's `--backend`. `graph_path` is the checked
    export (util.export.onnx_export.load_export); `spec` the model's GraphSpec, which `auto` times on one
    `side` x `side` image (rounded up to the size rule) on `device`."""
    if backend == "torch":
        return backend, None
    if backend != AUTO:
        return backend, open_graph(graph_path, backend, precision, export_command)
    rule = spec.size_rule
    side = max(rule.min_size, round_up(side, rule.multiple))
    feeds = {name: tensor.to(device) for name, tensor in spec.example_inputs(1, side, side).items()}
    best, runner, medians = fastest_backend(
        spec.torch_runner(), lambda name: open_graph(graph_path, name, "fp32", export_command), feeds,
        device=device)
    log.info("--backend auto: %s (seconds per %dx%d image: %s)", best, side, side,
             ", ".join(f"{name} {t:.3f}" for name, t in medians.items()))
    return best, runner
