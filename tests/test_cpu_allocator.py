"""--cpu_allocator: freed memory is reused instead of mapped afresh (counted in page faults, not in seconds)."""
import json
import subprocess
import sys

import pytest

from options.train_options import TrainOptions
from util import cpu_allocator
from util.cli import UsageError
from conftest import ROOT

glibc_only = pytest.mark.skipif(cpu_allocator.glibc_version() is None, reason="the C library is not glibc")

# A process that builds a model through train.py's options (which applies --cpu_allocator), then counts the page
# faults of allocating and freeing a 64 MB tensor three times after twelve others.
FAULTS = r"""
import json, resource, sys
import torch
from models import create_model
from options.train_options import TrainOptions
opt = TrainOptions().parse(["--model", "pix2pix", "--dataroot", sys.argv[1], "--checkpoints_dir", sys.argv[2],
                            "--netG", "unet", "--ngf", "8", "--ndf", "8", "--display_id", "0",
                            "--cpu_allocator", sys.argv[3]])
create_model(opt)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(12):  # glibc's heap settles after a few blocks (posix_memalign's remainders pin some)
    x = torch.ones(16 * 2 ** 20)
    del x
before = faults()
for _ in range(3):
    x = torch.ones(16 * 2 ** 20)
    del x
print(json.dumps({"faults": faults() - before}))
"""


def faults_of_three_64mb_tensors(mode, demo_root, tmp_path):
    proc = subprocess.run([sys.executable, "-c", FAULTS, demo_root, str(tmp_path / mode), mode], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["faults"]


@glibc_only
def test_the_default_allocator_reuses_freed_memory(demo_root, tmp_path):
    pages = 3 * 64 * 2 ** 20 // 4096  # what three fresh mappings fault in, with 4 KB pages
    system = faults_of_three_64mb_tensors("system", demo_root, tmp_path)
    default = faults_of_three_64mb_tensors("auto", demo_root, tmp_path)
    assert system > pages // 2, f"the system allocator faulted only {system} pages for three fresh 64 MB blocks"
    assert default < system // 20, f"--cpu_allocator auto faulted {default} pages, against {system} for system"


def test_reuse_is_refused_where_the_c_library_is_not_glibc(monkeypatch, demo_root, tmp_path):
    monkeypatch.setattr(cpu_allocator, "glibc_version", lambda: None)
    with pytest.raises(UsageError, match="--cpu_allocator reuse .* not run on glibc"):
        TrainOptions().parse(["--model", "pix2pix", "--dataroot", demo_root, "--checkpoints_dir", str(tmp_path),
                              "--cpu_allocator", "reuse"])
    assert cpu_allocator.configure("auto") in ("reuse", "system")  # auto falls back without an error
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="--cpu_allocator"):
        cpu_allocator.configure("jemalloc")
