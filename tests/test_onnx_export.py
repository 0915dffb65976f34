"""ONNX export of every generator, its parity check, and test.py --backend onnxruntime|openvino, on tiny networks.

Each run is built from stored options with its initial weights saved as the `latest` checkpoint (no training
needed: the export and the runtimes see the same weights as the torch path), then exported once per module.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_main, stored_train_options, test_main
from test_export_cli import plain_env
from models import create_model
from options.test_options import TestOptions
from util.run.integrity import sha256_of
from util.export.onnx_export import graph_paths
from util.command_line.registry import REPO_ROOT
from util.export.runtimes import open_runner
from util.run.results_folder import results_folder

# torch.export traces each network, OpenVINO compiles it, and the export records the checkout's commit with git: the
# slow tier's (run_tests.sh --full runs this file in a process of its own).
pytestmark = pytest.mark.slow

TOLERANCE = 1e-4
COMMON = ["--load_size", "32", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
          "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--ndf", "8"]
RUNS = {
    # batch norm and dropout: the exported graph is the eval-mode network, so test.py needs --eval
    "pix2pix_unet": ["--model", "pix2pix", "--netG", "unet", "--ngf", "8"],
    "pix2pix_resnet": ["--model", "pix2pix", "--netG", "resnet_6blocks", "--norm", "instance", "--no_dropout", "--ngf", "8"],
    "atme": ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4"],
    "segan": ["--model", "segan", "--ngf", "8", "--netD", "n_layers", "--n_layers_D", "2", "--nz", "4"],
}
EVAL = {"pix2pix_unet": ["--eval"]}


def export(checkpoints, name, *extra, check=True):
    from scripts.tools import export as export_cli
    return run_main(export_cli.main, "--checkpoints_dir", checkpoints, "--name", name, *extra, check=check)


def make_run(dataroot, checkpoints, name):
    """A run folder with stored options and the initial networks saved as `latest` (as after training)."""
    opt = stored_train_options(["--dataroot", dataroot, "--checkpoints_dir", checkpoints, "--name", name,
                                *COMMON, *RUNS[name]])
    opt.dataset_size = 8
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    with torch.no_grad():  # spread the weights beyond the init's N(0, 0.02), so outputs are not all near 0
        for _, net in model.networks():
            for p in net.parameters():
                p.mul_(1 + torch.rand_like(p))
    model.save_networks("latest")


@pytest.fixture(scope="module")
def exported(demo_root, tmp_path_factory):
    """{run name: checkpoints dir}, each run exported once."""
    checkpoints = str(tmp_path_factory.mktemp("onnx_runs"))
    for name in RUNS:
        make_run(demo_root, checkpoints, name)
        export(checkpoints, name)
    return checkpoints


def test_model(demo_root, checkpoints, name, *extra):
    opt = TestOptions().parse(["--dataroot", demo_root, "--checkpoints_dir", checkpoints, "--name", name,
                               "--num_threads", "0", "--gpu_ids", "-1", *EVAL.get(name, []), *extra])
    model = create_model(opt)
    model.setup(opt)
    if opt.eval:
        model.eval()
    return model, opt


test_model.__test__ = False


def a_batch(demo_root, height, width):
    image = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(3)) * 2 - 1
    return {"A": image, "B": image, "A_paths": ["a.png", "b.png"], "index": torch.arange(2)}


def visuals_after(model, batch, run=None):
    if hasattr(model, "test_generator"):
        model.test_generator.manual_seed(0)  # both paths draw the same D_{t-1}
    model.set_input(batch)
    model.runtime_translator = None if run is None else model.graph_translator(run)
    model.test()
    return {k: v.clone() for k, v in model.get_current_visuals().items()}


@pytest.mark.parametrize("name", list(RUNS))
def test_export_writes_graph_and_json_with_what_a_runtime_needs(exported, name):
    onnx_path, json_path = graph_paths(os.path.join(exported, name), "latest")
    meta = json.load(open(json_path))
    inputs = [i["name"] for i in meta["inputs"]]
    assert inputs == {"atme": ["image", "disc_prev"], "segan": ["image", "code"]}.get(name, ["image"])
    assert meta["inputs"][0]["value_range"] == [-1.0, 1.0] and meta["inputs"][0]["layout"] == "B,C,H,W"
    assert meta["size_multiple"] == {"pix2pix_unet": 32, "pix2pix_resnet": 4, "atme": 2, "segan": 32}[name]
    assert meta["model"] == name.split("_")[0] and meta["options"]["model"] == meta["model"]
    assert meta["framework_commit"] and meta["tolerance"] == TOLERANCE
    assert {s["file"] for s in meta["sources"]} == ({"latest_net_G.pth", "latest_net_W.pth"} if name == "atme"
                                                    else {"latest_net_G.pth"})
    # parity measured at export, on the exported size and another size and batch
    shapes = [p["image_shape"] for p in meta["parity"]]
    assert shapes[0] == [2, 3, 32, 32] and shapes[1][0] == 1 and shapes[1][2:] != [32, 32]
    assert all(v <= TOLERANCE for p in meta["parity"] for v in p["max_abs_difference"].values())
    if name == "atme":
        assert meta["disc_prev_size"]["example"] == {"image": [32, 32], "map": [2, 2]}
    assert os.path.getsize(onnx_path) > 1000


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("name", list(RUNS))
def test_backend_gives_torch_results_at_another_size(exported, demo_root, name, backend):
    """The test step through the runtime equals torch's, on images of a size the export never saw."""
    model, _ = test_model(demo_root, exported, name)
    run = model.open_runtime("latest", backend)
    multiple = model.export_graph().size_rule.multiple
    batch = a_batch(demo_root, 32 + multiple * max(1, 16 // multiple), 32 + 2 * multiple * max(1, 16 // multiple))
    expected, got = visuals_after(model, batch), visuals_after(model, batch, run)
    assert set(got) == set(expected)
    outputs = [k for k in expected if k not in ("real_A", "real_B")]
    assert outputs, expected.keys()
    for key in outputs:
        assert got[key].shape == expected[key].shape
        assert float((got[key] - expected[key]).abs().max()) <= TOLERANCE, key
        assert float(expected[key].std()) > 1e-3, key  # a real image, not a constant


def test_openvino_bf16_is_close_to_fp32(exported, demo_root):
    from util.process.devices import cpu_has_native_bf16
    model, _ = test_model(demo_root, exported, "atme")
    path, _ = graph_paths(os.path.join(exported, "atme"), "latest")
    if not cpu_has_native_bf16():
        with pytest.raises(ValueError, match="native bf16"):
            open_runner(path, "openvino", "bf16")
        return
    batch = a_batch(demo_root, 32, 32)
    fp32 = visuals_after(model, batch, open_runner(path, "openvino", "fp32"))["fake_B"]
    bf16 = visuals_after(model, batch, open_runner(path, "openvino", "bf16"))["fake_B"]
    difference = float((fp32 - bf16).abs().max())
    assert 0 < difference < 0.1


def read_png(path):
    return np.asarray(Image.open(path)).astype(np.int16)


def test_test_py_backend_writes_the_torch_images(exported, demo_root, tmp_path):
    args = ["--dataroot", demo_root, "--checkpoints_dir", exported, "--name", "atme", "--num_threads", "0"]
    test_main(*args, "--results_dir", tmp_path / "torch")
    test_main(*args, "--results_dir", tmp_path / "ort", "--backend", "onnxruntime")
    torch_dir = tmp_path / "torch" / "atme" / "test_latest" / "images"
    ort_dir = tmp_path / "ort" / "atme" / "test_latest" / "images"
    names = sorted(os.listdir(torch_dir))
    assert names == sorted(os.listdir(ort_dir)) and any("fake_B" in n for n in names) and any("_W" in n for n in names)
    for image in names:  # 8-bit images: at most one level apart (rounding of values within 1e-4)
        assert np.abs(read_png(torch_dir / image) - read_png(ort_dir / image)).max() <= 1, image
    assert (tmp_path / "ort" / "atme" / "test_latest" / "index.html").exists()


@pytest.mark.parametrize("name, tiling", [("pix2pix_unet", []), ("atme", ["--tile", "48", "--tile_overlap", "16"])])
def test_backend_keeps_each_photo_size_padded_and_tiled_as_torch(exported, tmp_path, name, tiling):
    """Photos of any size through test.py --backend onnxruntime: padded (and tiled) as the torch path, each result
    of its input's size, the same images as torch's."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for stem, (width, height) in {"wide": (150, 100), "tall": (97, 203)}.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos / f"{stem}.png")
    args = ["--dataroot", photos, "--checkpoints_dir", exported, "--name", name, "--dataset_mode", "single",
            "--preprocess", "none", "--num_threads", "0", "--eval", *tiling]
    test_main(*args, "--results_dir", tmp_path / "torch")
    test_main(*args, "--results_dir", tmp_path / "ort", "--backend", "onnxruntime")
    torch_dir, ort_dir = (Path(results_folder(tmp_path / kind, name, "test", "latest", photos)) / "images"
                          for kind in ("torch", "ort"))
    fakes = sorted(n for n in os.listdir(torch_dir) if "fake_B" in n)
    assert len(fakes) == 2 and fakes == sorted(n for n in os.listdir(ort_dir) if "fake_B" in n)
    for image in fakes:
        size = Image.open(photos / f"{image.split('_fake_B')[0]}.png").size
        assert Image.open(ort_dir / image).size == size
        assert np.abs(read_png(torch_dir / image) - read_png(ort_dir / image)).max() <= 1, image


@pytest.mark.slow  # exports again (torch.export traces the network: tens of seconds)
def test_missing_export_is_refused_with_the_command_that_works(demo_root, tmp_path):
    checkpoints = str(tmp_path / "ck")
    make_run(demo_root, checkpoints, "pix2pix_resnet")
    args = ["--dataroot", demo_root, "--checkpoints_dir", checkpoints, "--name", "pix2pix_resnet", "--num_threads",
            "0", "--results_dir", tmp_path / "res", "--backend", "onnxruntime"]
    proc = test_main(*args, check=False)
    assert proc.returncode == 2 and "-m scripts.tools.export" in proc.stderr
    assert not (tmp_path / "res").exists()
    command = proc.stderr.split("Export it first:\n")[1].split("\n")[0].strip()  # the command on its own line
    typed = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=plain_env(), capture_output=True, text=True)
    assert typed.returncode == 0, typed.stderr  # the advice, typed as shown
    test_main(*args)
    assert (tmp_path / "res" / "pix2pix_resnet" / "test_latest" / "index.html").exists()
    # weights that changed after the export: the export is stale and refused, naming the checkpoint
    weights = os.path.join(checkpoints, "pix2pix_resnet", "latest_net_G.pth")
    state = torch.load(weights, weights_only=True)
    next(v for v in state.values() if v.is_floating_point()).add_(1)
    torch.save(state, weights)
    manifest = os.path.join(checkpoints, "pix2pix_resnet", "latest_checksums.json")  # as a new save records it
    sums = json.load(open(manifest))
    sums["sha256"]["latest_net_G.pth"] = sha256_of(weights)
    with open(manifest, "w") as handle:
        json.dump(sums, handle)
    proc = test_main(*args, check=False)
    assert proc.returncode == 2 and "exported from other weights" in proc.stderr and "latest_net_G.pth" in proc.stderr


@pytest.mark.slow  # exports again
def test_export_beyond_tolerance_leaves_the_folder_as_it_was(exported):
    folder = os.path.join(exported, "atme")
    before = {f: os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder)}
    proc = export(exported, "atme", "--tolerance", "1e-12", check=False)
    assert proc.returncode == 2 and "differs from PyTorch by up to" in proc.stderr and "nothing was written" in proc.stderr
    assert {f: os.path.getmtime(os.path.join(folder, f)) for f in os.listdir(folder)} == before


def test_runtime_flags_are_checked(exported, demo_root, tmp_path):
    base = ["--dataroot", demo_root, "--checkpoints_dir", exported, "--num_threads", "0", "--results_dir",
            tmp_path / "res"]
    proc = test_main(*base, "--name", "pix2pix_unet", "--backend", "onnxruntime", check=False)
    assert proc.returncode == 2 and "add --eval" in proc.stderr and "BatchNorm2d" in proc.stderr
    proc = test_main(*base, "--name", "atme", "--backend", "onnxruntime", "--amp", "bf16", check=False)
    assert proc.returncode == 2 and "--amp apply to --backend torch" in proc.stderr
    proc = test_main(*base, "--name", "atme", "--backend", "onnxruntime", "--precision", "bf16", check=False)
    assert proc.returncode == 2 and "needs --backend openvino" in proc.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.slow  # the paper-size ATME generator (35.8 M parameters): a minute or more to trace and check
def test_paper_size_atme_exports_and_matches_torch(demo_root, tmp_path):
    checkpoints = str(tmp_path / "ck")
    opt = stored_train_options(["--dataroot", demo_root, "--checkpoints_dir", checkpoints, "--name", "paper",
                                "--model", "atme", "--load_size", "256", "--crop_size", "256", "--gpu_ids", "-1",
                                "--display_id", "0", "--no_html", "--num_threads", "0"])
    opt.dataset_size = 8
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    model.save_networks("latest")
    export(checkpoints, "paper")
    meta = json.load(open(graph_paths(os.path.join(checkpoints, "paper"), "latest")[1]))
    assert meta["options"]["dim_mults"] == [1, 2, 4, 8] and meta["size_multiple"] == 8
    assert meta["disc_prev_size"]["example"] == {"image": [256, 256], "map": [30, 30]}
    assert all(v <= TOLERANCE for p in meta["parity"] for v in p["max_abs_difference"].values())
    test, _ = test_model(demo_root, checkpoints, "paper")
    batch = a_batch(demo_root, 128, 192)  # neither the exported size nor square
    expected = visuals_after(test, batch)
    for backend in ("onnxruntime", "openvino"):
        got = visuals_after(test, batch, test.open_runtime("latest", backend))
        for key in ("fake_B", "W", "noisy_A"):
            assert float((got[key] - expected[key]).abs().max()) <= TOLERANCE, (backend, key)


@pytest.mark.parametrize("name", ["atme", "segan", "pix2pix_resnet"])
def test_graph_translator_is_the_padded_image_contract(exported, demo_root, name):
    """model.graph_translator(run): a padded (B, C, H, W) image in [-1, 1] -> the visuals test() gives."""
    model, _ = test_model(demo_root, exported, name)
    batch = a_batch(demo_root, 64, 96)
    visuals_after(model, batch)
    expected = model.fake_B.clone()  # SEGAN: the first code's output
    if hasattr(model, "test_generator"):
        model.test_generator.manual_seed(0)
    got = model.graph_translator(model.open_runtime("latest", "onnxruntime"))(batch["A"])
    got = got["fake_B"] if "fake_B" in got else got[f"{model.sample_prefix}_0"]
    assert got.shape == expected.shape and float((got - expected).abs().max()) <= TOLERANCE


def test_atme_graph_splits_no_convolution_output(exported):
    """q, k, v come from three convolutions: no Split of a full-resolution conv output, which OpenVINO's CPU
    plugin runs with a reference kernel (docs/export.md: the ATME profile)."""
    import onnx
    graph = onnx.load(graph_paths(os.path.join(exported, "atme"), "latest")[0]).graph
    producer = {output: node.op_type for node in graph.node for output in node.output}
    split_inputs = [producer.get(node.input[0]) for node in graph.node if node.op_type == "Split"]
    assert "Conv" not in split_inputs
    # what remains (docs/export.md): the to_qkv weights (constants) and the time embedding's scale and shift
    constants = {i.name for i in graph.initializer}
    weights = [n for n in graph.node if n.op_type == "Split" and n.input[0] in constants]
    assert all("to_qkv" in n.input[0] for n in weights) and len(weights) >= 1
    assert set(split_inputs) - {None} <= {"Reshape"}
    assert sum(node.op_type == "Conv" for node in graph.node) > 10


def test_backend_auto_times_the_backends_and_records_its_choice(exported, demo_root, tmp_path):
    proc = test_main("--dataroot", demo_root, "--checkpoints_dir", exported, "--name", "segan", "--num_threads", "0",
                     "--results_dir", tmp_path, "--backend", "auto")
    line = next(l for l in proc.stdout.splitlines() if "--backend auto:" in l)
    assert all(f"{name} " in line for name in ("torch", "onnxruntime", "openvino"))
    chosen = line.split("--backend auto: ")[1].split(" ")[0]
    stored = json.load(open(tmp_path / "segan" / "test_latest" / "test_opt.json"))
    assert stored["backend"] == chosen in ("torch", "onnxruntime", "openvino")
    assert any("fake_B" in f for f in os.listdir(tmp_path / "segan" / "test_latest" / "images"))


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_damaged_graph_is_refused_naming_the_file_and_the_export_command(exported, demo_root, tmp_path, damage,
                                                                         backend):
    """The graph's SHA-256 in its JSON is checked before a runtime reads the file."""
    import shutil
    checkpoints = tmp_path / "ck"
    shutil.copytree(os.path.join(exported, "atme"), checkpoints / "atme")
    onnx_path, _ = graph_paths(str(checkpoints / "atme"), "latest")
    data = bytearray(open(onnx_path, "rb").read())
    if damage == "truncated":
        data = data[:len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01  # inside a weight: the graph still parses, with another number
    with open(onnx_path, "wb") as handle:
        handle.write(data)
    proc = test_main("--dataroot", demo_root, "--checkpoints_dir", checkpoints, "--name", "atme", "--results_dir",
                     tmp_path / "res", "--backend", backend, check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{onnx_path} is not the graph that was exported" in proc.stderr
    assert ("truncated" in proc.stderr) == (damage == "truncated")
    assert "-m scripts.tools.export" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 4
    assert not (tmp_path / "res").exists()
