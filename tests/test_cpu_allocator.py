"""--cpu_allocator: freed memory is reused instead of mapped afresh (seen in glibc's own malloc statistics and in
page faults, not in seconds); the entry points set it for CPU runs only and put it back on return; constructors and
loader workers leave it alone."""
import ctypes
import json
import os
import platform
import subprocess
import sys

import pytest
import torch

from options.train_options import TrainOptions
from util.process import cpu_allocator
from util.command_line.cli import UsageError
from conftest import ROOT, stored_train_options

# What the platform allows, read independently of util.cpu_allocator (which asks os.confstr): the C library the
# Python executable was linked against.
ON_GLIBC = platform.libc_ver()[0] == "glibc"
glibc_only = pytest.mark.skipif(not ON_GLIBC, reason="the C library is not glibc")


class Mallinfo2(ctypes.Structure):
    """glibc's malloc statistics (mallinfo(3)), in bytes."""
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


BLOCK = 64 * 2 ** 20  # above glibc's largest mmap threshold (32 MB)


def libc():
    """The C library, with malloc's statistics (mallinfo2, glibc 2.33 and later) typed."""
    c = ctypes.CDLL(None)
    if not hasattr(c, "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    c.mallinfo2.restype = Mallinfo2
    c.malloc.restype, c.malloc.argtypes, c.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    return c


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_block(fill=False):
    """Allocate and free one block with the C library's malloc, 64 MB larger than all the free memory its heap holds
    (glibc serves a block from free heap memory before it considers a mapping); return what malloc's statistics say
    about it while it was held: its `size`, bytes `mapped` afresh for it and bytes it took `from_heap`. `fill`
    writes it, so that it is resident."""
    c = libc()
    before = c.mallinfo2()
    size = before.fordblks + BLOCK
    block = c.malloc(size)
    assert block, f"malloc of {size} bytes failed"
    if fill:
        ctypes.memset(block, 1, size)
    during = c.mallinfo2()
    c.free(block)
    return {"size": size, "mapped": during.hblkhd - before.hblkhd, "from_heap": during.uordblks - before.uordblks}


def heap_keeps_freed_blocks(fill=False):
    """Whether malloc, as it is set now, serves a large block from its heap (where freed memory stays for the next
    block) instead of a fresh mapping that is unmapped when freed."""
    seen = one_block(fill)
    if seen["mapped"] >= seen["size"]:
        return False
    assert seen["from_heap"] >= seen["size"], f"a large block was neither mapped afresh nor taken from the heap: {seen}"
    return True


def test_auto_reuses_freed_memory_exactly_where_the_c_library_is_glibc():
    assert cpu_allocator.in_effect() == "system"
    with cpu_allocator.applied("auto", "cpu") as mode:
        assert mode == ("reuse" if ON_GLIBC else "system")
        kept_inside = heap_keeps_freed_blocks() if ON_GLIBC else None
    if ON_GLIBC:
        assert kept_inside, "--cpu_allocator auto reported reuse, but malloc still maps large blocks afresh"
        assert not heap_keeps_freed_blocks(), "after `applied`, malloc still serves large blocks from its heap"
    assert cpu_allocator.in_effect() == "system"


@glibc_only
def test_system_leaves_malloc_mapping_large_blocks_afresh():
    assert not heap_keeps_freed_blocks()  # the process's own malloc, untouched
    with cpu_allocator.applied("system", "cpu") as mode:
        assert mode == "system" and not heap_keeps_freed_blocks()


@glibc_only
def test_restore_gives_the_kept_memory_back():
    with cpu_allocator.applied("reuse", "cpu"):
        assert heap_keeps_freed_blocks(fill=True)  # the freed block stays resident in the heap
        kept = resident_bytes()
    assert resident_bytes() <= kept - BLOCK // 2, "restore did not give the heap's kept memory back"


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


@pytest.mark.slow
@glibc_only
def test_the_default_allocator_reuses_freed_memory_and_is_put_back():
    system, default = run_json(APPLIED, "system"), run_json(APPLIED, "auto")
    assert system["mode"] == "system" and default["mode"] == "reuse"
    assert system["inside"] > PAGES // 2, f"the system allocator faulted only {system['inside']} pages"
    assert default["inside"] < system["inside"] // 20, (default, system)
    # Restored on leaving: fresh mappings again (96 MB blocks).
    assert default["after"] > PAGES // 2, f"after `applied`, malloc still reused memory: {default}"


@pytest.mark.slow
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
    monkeypatch.setattr(module, f"{script}_process", lambda *args: seen.append(heap_keeps_freed_blocks()) or 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    args = ["--model", "pix2pix", "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "run"]
    if script == "test":
        stored_train_options(args)  # test.py reads the run's options
        (tmp_path / "run" / "latest_net_G.pth").touch()  # and checks that the run has weights before anything else
    code = module.main([*args, "--cpu_allocator", "auto", *(["--display_id", "0"] if script == "train" else [])])
    assert code == 0 and seen == [not cuda]  # malloc keeps freed blocks in a CPU run only
    assert not heap_keeps_freed_blocks() and cpu_allocator.in_effect() == "system"


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
