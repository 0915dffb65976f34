"""The one list of backends and `--backend auto`'s choice, with stand-in runners (no runtime is loaded here)."""
import gc
import weakref

import pytest
import torch

from options.test_options import TestOptions
from util.export import runtime_choice
from util.export.backends import BACKEND_CHOICES, BACKENDS, PRECISIONS, RUNTIMES, precision_problem


class Clock:
    """A clock that only the stand-in runners move, so the timings are what each runner says it costs."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Runner:
    """A stand-in runtime session costing `cost` seconds per call; `alive` tracks the open ones."""

    def __init__(self, clock, cost, events, alive):
        self.clock, self.cost, self.events = clock, cost, events
        alive.add(self)

    def __call__(self, feeds):
        self.events.append("call")
        self.clock.now += self.cost
        return {"output": feeds["image"]}


def choose(monkeypatch, costs, torch_cost, device="cpu"):
    clock, events, alive, opened = Clock(), [], weakref.WeakSet(), []
    monkeypatch.setattr(runtime_choice.time, "perf_counter", clock)
    most_open = [0]

    def open_runtime(name):
        gc.collect()
        runner = Runner(clock, costs[name], events, alive)
        opened.append(name)
        most_open[0] = max(most_open[0], len(alive))
        return runner

    def torch_run(feeds):
        events.append("call")
        clock.now += torch_cost
        return {"output": feeds["image"]}

    best, runner, medians = runtime_choice.fastest_backend(
        torch_run, open_runtime, {"image": torch.zeros(1, 3, 8, 8)}, calls=3, device=device, runtimes=tuple(costs))
    return best, runner, medians, alive, most_open[0], events, opened


def test_auto_keeps_only_the_winner_open(monkeypatch):
    best, runner, medians, alive, most_open, _, opened = choose(monkeypatch, {"a": 0.5, "b": 0.2, "c": 0.9}, 1.0)
    assert best == "b" and opened == ["a", "b", "c"]
    assert medians == pytest.approx({"torch": 1.0, "a": 0.5, "b": 0.2, "c": 0.9})
    gc.collect()
    assert list(alive) == [runner]  # a and c were released once they lost
    assert most_open <= 2  # the fastest so far and the one being timed, never all at once


def test_auto_keeps_no_runtime_when_torch_wins(monkeypatch):
    best, runner, _, alive, _, _, _ = choose(monkeypatch, {"a": 0.5, "b": 0.7}, 0.1)
    gc.collect()
    assert best == "torch" and runner is None and len(alive) == 0


def test_auto_synchronises_cuda_around_each_timed_call(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(str(device)))
    events_seen = []
    real = runtime_choice.synchronizer

    def recording(device):
        sync = real(device)
        return lambda: (sync(), events_seen.append("sync"))
    monkeypatch.setattr(runtime_choice, "synchronizer", recording)
    _, _, _, _, _, events, _ = choose(monkeypatch, {"a": 0.5}, 1.0, device="cuda")
    # 2 backends x 3 timed calls, each between two synchronisations (the warm-up call is not timed)
    assert synced == ["cuda"] * 12 and len(events_seen) == 12
    assert all(synced_device == "cuda" for synced_device in synced)
    assert len(events) == 2 * (1 + 3)
    # and none on the CPU
    synced.clear()
    choose(monkeypatch, {"a": 0.5}, 1.0, device="cpu")
    assert synced == []


def test_one_list_of_backends_feeds_the_options():
    parser = TestOptions().build_parser([])
    actions = {a.dest: a for a in parser._actions}
    assert tuple(actions["backend"].choices) == BACKEND_CHOICES == (*BACKENDS, "auto")
    assert tuple(actions["precision"].choices) == PRECISIONS
    assert RUNTIMES == ("onnxruntime", "openvino")
    assert precision_problem("openvino", "bf16") == ""
    assert "needs --backend openvino" in precision_problem("onnxruntime", "bf16")
    assert "needs --backend openvino" in precision_problem("auto", "bf16")


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "auto"])
def test_bf16_is_refused_where_the_list_says_so(backend, demo_root, tmp_path):
    with pytest.raises((SystemExit, ValueError), match="needs --backend openvino"):
        TestOptions().parse(["--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "x",
                             "--backend", backend, "--precision", "bf16"])
