"""Test-time memory is estimated before it is used (models.memory): an input whose estimate exceeds what the machine
has is refused before it runs, naming the --tile that fits; the estimate is within 2x of the measured peak."""
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, stored_train_options, test_main
from models import create_model, memory

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# The demo's ATME (scripts/demo.sh): R = (1, 2, 4, 8) at d = 16, so the middle attention runs at 1/8 of each side.
DEMO_ATME = ["--model", "atme", "--dim", "16", "--init_dim", "16", "--dim_mults", "1,2,4,8", "--groups", "8",
             "--netD", "n_layers", "--n_layers_D", "1", "--ndf", "64", "--load_size", "64", "--crop_size", "64"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A run folder with the demo ATME's stored options and (untrained) weights, and photos of given sizes."""
    root = tmp_path_factory.mktemp("memory")
    opt = stored_train_options(["--dataroot", root / "photos", "--checkpoints_dir", root / "ck", "--name", "run",
                                *DEMO_ATME, "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
                                "--display_id", "0", "--no_html"])
    opt.dataset_size = 1
    create_model(opt).save_networks("latest")
    return root


def photo(folder, width, height):
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (120, 60, 200)).save(folder / f"p{width}x{height}.png")
    return folder


def run_test(root, photos, *extra, check=True):
    return test_main("--dataroot", photos, "--checkpoints_dir", root / "ck", "--name", "run", "--results_dir",
                     root / "results", "--dataset_mode", "single", "--preprocess", "none", "--gpu_ids", "-1",
                     *extra, check=check)


def test_an_input_that_outgrows_memory_is_refused_naming_the_tile_that_fits(demo_run, monkeypatch):
    """A 4097x3 image (padded to 4104x8, an estimated 90 MiB) with 40 MiB left: refused before it runs, with the
    command that tiles it; that command then runs within the same 40 MiB."""
    photos = photo(demo_run / "wide", 4097, 3)
    monkeypatch.setattr(memory, "available_memory", lambda device: 40 * 2 ** 20)
    result = run_test(demo_run, photos, check=False)
    assert result.returncode != 0 and "needs an estimated" in result.stderr, result.stderr[-3000:]
    assert "0.04 GiB available: nothing was run" in result.stderr
    command = result.stderr.strip().splitlines()[-1].strip()
    tile = command.split("--tile ")[1].split()[0]
    assert "test.py" in command and int(tile) % 8 == 0, command
    assert not (demo_run / "results").exists()  # nothing was written, not even the folders
    args = shlex.split(command)
    run_test(demo_run, photos, *args[args.index("--tile"):args.index("--tile") + 2])
    assert (demo_run / "results" / "run" / "wide_latest" / "images" / "p4097x3_fake_B.png").is_file()


def test_a_huge_input_is_refused_on_any_machine(demo_run):
    """3000x3000 at the demo's architecture: the attention alone needs 2 x 4 heads x (375 x 375)^2 x 4 bytes =
    632 GB. Refused naming --tile, never started."""
    photos = photo(demo_run / "huge", 3000, 3000)
    result = run_test(demo_run, photos, "--results_dir", demo_run / "huge_results", check=False)
    assert result.returncode != 0 and "--tile" in result.stderr and "GiB available" in result.stderr, \
        result.stderr[-3000:]
    assert not (demo_run / "huge_results").exists()


def test_atme_estimate_has_the_attention_term_that_grows_with_the_square_of_the_area(demo_run):
    from options.test_options import TestOptions
    opt = TestOptions().parse(["--dataroot", str(demo_run), "--checkpoints_dir", str(demo_run / "ck"), "--name",
                               "run", "--gpu_ids", "-1"])
    model = create_model(opt)
    model.setup(opt)
    small, large = model.inference_memory(256, 256), model.inference_memory(512, 512)
    attention = memory.attention_bytes(1, 4, (512 // 8) ** 2) - memory.attention_bytes(1, 4, (256 // 8) ** 2)
    assert large - 4 * small == pytest.approx(attention - 3 * memory.attention_bytes(1, 4, 32 ** 2), rel=1e-3)
    assert model.inference_memory(256, 256, batch=3) == pytest.approx(3 * small, rel=1e-6)


MEASURE = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from options.test_options import TestOptions
from models import create_model, memory
height, width = {height}, {width}
opt = TestOptions().parse(["--dataroot", {data!r}, "--checkpoints_dir", {ck!r}, "--name", "run", "--gpu_ids", "-1"])
model = create_model(opt)
model.setup(opt)
model.eval()
estimate = memory.estimate(model, height, width)
batch = lambda h, w: {{"A": torch.rand(1, 3, h, w) * 2 - 1, "A_paths": ["x"], "index": torch.tensor([0])}}
model.set_input(batch(8, 8))
model.test()  # the libraries' first-use allocations, and the estimate's probe, before the baseline
status = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) * 1024
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the current resident size
    f.write("5")
model.set_input(batch(height, width))
model.test()
print(estimate, status("VmHWM:") - before)
"""


@pytest.mark.slow
@pytest.mark.parametrize("height, width", [(256, 256), (512, 512), (24, 4097)])
def test_the_estimate_is_within_2x_of_the_measured_peak(demo_run, height, width):
    """Peak resident memory's growth over one translation (VmHWM after resetting it, /proc/self/clear_refs, in a
    child process) against the estimate."""
    code = MEASURE.format(root=ROOT, height=height, width=width, data=str(demo_run), ck=str(demo_run / "ck"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    estimate, measured = map(int, proc.stdout.split()[-2:])
    assert measured / 2 <= estimate <= 2 * measured, (estimate, measured)


@pytest.mark.slow  # exports and runs ONNX Runtime in subprocesses
def test_a_huge_input_is_refused_on_onnx_runtime_too(demo_run):
    """The estimate runs before the exported graph does: --backend onnxruntime refuses the 3000x3000 input
    naming --tile, and writes nothing."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "scripts.tools.export", "--checkpoints_dir", str(demo_run / "ck"), "--name",
                    "run"], cwd=ROOT, check=True, capture_output=True, timeout=600, env=env)
    photos = photo(demo_run / "huge_ort", 3000, 3000)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "test.py"), "--dataroot", str(photos),
                           "--checkpoints_dir", str(demo_run / "ck"), "--name", "run", "--results_dir",
                           str(demo_run / "ort_results"), "--dataset_mode", "single", "--preprocess", "none",
                           "--gpu_ids", "-1", "--backend", "onnxruntime"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode != 0 and "needs an estimated" in proc.stderr, proc.stderr[-3000:]
    assert "--backend onnxruntime --tile " in proc.stderr and "Traceback" not in proc.stderr
    assert not (demo_run / "ort_results").exists()
