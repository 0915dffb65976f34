"""--cpu_allocator: freed memory is reused instead of mapped afresh (counted in page faults, not in seconds); the
entry points set it for CPU runs only and put it back on return; constructors and loader workers leave it alone."""
import json
import subprocess
import sys

import pytest
import torch

from options.train_options import TrainOptions
from util.process import cpu_allocator
from util.command_line.cli import UsageError
from conftest import ROOT, stored_train_options

glibc_only = pytest.mark.skipif(cpu_allocator.glibc_version() is None, reason="the C library is not glibc")

# Page faults of allocating and freeing a 64 MB tensor three times after twelve others (glibc's heap settles after
# a few blocks: posix_memalign's remainders pin some).
MEASURE = r"""
import resource
import torch
def faults_of_three_64mb_tensors(megabytes=64):
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(12):
        x = torch.ones(megabytes // 4 * 2 ** 20)
        del x
    before = faults()
    for _ in range(3):
        x = torch.ones(megabytes // 4 * 2 ** 20)
        del x
    return faults() - before
"""

# Inside `applied(mode, "cpu")`, then after it.
APPLIED = MEASURE + r"""
import json, sys
from util.process import cpu_allocator
with cpu_allocator.applied(sys.argv[1], "cpu") as mode:
    inside = faults_of_three_64mb_tensors()
# Blocks larger than any the heap kept: malloc must decide afresh where they come from.
print(json.dumps({"mode": mode, "inside": inside, "after": faults_of_three_64mb_tensors(megabytes=96)}))
"""

# A loader worker of a process that reuses freed memory measures its own faults.
WORKER = MEASURE + r"""
import json, types
import torch
from data import create_dataloader
from util.process import cpu_allocator

class Faults(torch.utils.data.Dataset):
    def __len__(self):
        return 1
    def __getitem__(self, index):
        return torch.tensor(faults_of_three_64mb_tensors(megabytes=96))  # larger than the parent's blocks

opt = types.SimpleNamespace(num_threads=1, batch_size=1, serial_batches=True, seed=None)
with cpu_allocator.applied("reuse", "cpu"):
    parent = faults_of_three_64mb_tensors()
    worker = int(next(iter(create_dataloader(Faults(), opt)))[0])
print(json.dumps({"parent": parent, "worker": worker}))
"""

PAGES = 3 * 64 * 2 ** 20 // 4096  # what three fresh 64 MB mappings fault in, with 4 KB pages


def run_json(script, *args):
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_the_default_allocator_reuses_freed_memory_and_is_put_back():
    system, default = run_json(APPLIED, "system"), run_json(APPLIED, "auto")
    assert system["mode"] == "system" and default["mode"] == "reuse"
    assert system["inside"] > PAGES // 2, f"the system allocator faulted only {system['inside']} pages"
    assert default["inside"] < system["inside"] // 20, (default, system)
    # Restored on leaving: fresh mappings again (96 MB blocks).
    assert default["after"] > PAGES // 2, f"after `applied`, malloc still reused memory: {default}"


@glibc_only
def test_loader_workers_keep_the_system_allocator():
    faults = run_json(WORKER)
    assert faults["parent"] < PAGES // 20, faults
    assert faults["worker"] > PAGES // 2, f"the loader worker inherited the reuse setting: {faults}"


def test_a_model_constructor_leaves_the_allocator_alone(demo_root, tmp_path):
    from models import create_model
    opt = TrainOptions().parse(["--model", "pix2pix", "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path),
                                "--netG", "unet", "--ngf", "8", "--ndf", "8", "--display_id", "0",
                                "--cpu_allocator", "reuse"])
    create_model(opt)
    assert cpu_allocator.in_effect() == "system"


@glibc_only
@pytest.mark.parametrize("script", ["train", "test"])
@pytest.mark.parametrize("cuda", [False, True])
def test_the_entry_point_applies_it_on_the_cpu_only_and_restores_it(monkeypatch, demo_root, tmp_path, script,
                                                                      cuda):
    import importlib
    module = importlib.import_module(script)
    seen = []
    monkeypatch.setattr(module, f"{script}_process", lambda *args: seen.append(cpu_allocator.in_effect()) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    args = ["--model", "pix2pix", "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "run"]
    if script == "test":
        stored_train_options(args)  # test.py reads the run's options
        (tmp_path / "run" / "latest_net_G.pth").touch()  # and checks that the run has weights before anything else
    code = module.main([*args, "--cpu_allocator", "auto", *(["--display_id", "0"] if script == "train" else [])])
    assert code == 0 and seen == ["system" if cuda else "reuse"]
    assert cpu_allocator.in_effect() == "system"


def test_restore_uses_the_values_the_process_started_with():
    environ = {"MALLOC_MMAP_MAX_": "7", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=4096:glibc.malloc.x=1"}
    values = {tunable: cpu_allocator._start_value(variable, tunable, default, environ)
              for _, variable, tunable, default in cpu_allocator.SYSTEM_DEFAULTS}
    assert values == {"glibc.malloc.mmap_max": 7, "glibc.malloc.trim_threshold": 4096}


def test_reuse_is_refused_where_the_c_library_is_not_glibc(monkeypatch, demo_root, tmp_path):
    monkeypatch.setattr(cpu_allocator, "glibc_version", lambda: None)
    with pytest.raises(UsageError, match="--cpu_allocator reuse .* not run on glibc"):
        TrainOptions().parse(["--model", "pix2pix", "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path),
                              "--cpu_allocator", "reuse"])
    with cpu_allocator.applied("auto", "cpu") as mode:  # auto falls back without an error
        assert mode == "system"
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="--cpu_allocator"):
        cpu_allocator.configure("jemalloc")
