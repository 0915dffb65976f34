"""Every loader reads weights without running code: a `.pth` whose unpickling would create a marker file is
refused by each (networks for test.py and --continue_train, the training state, released ATME checkpoints, the
study tools, FCN, LPIPS and Inception weights) with a message naming the file, and the marker never appears."""
import ast
import importlib
import os
import shutil

import numpy as np
import pytest
import torch

from conftest import test_main, train_main
from util.run.checkpoint import load_file

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


class Payload:
    """Unpickling this runs `exec`, which creates the marker file: what a hostile `.pth` would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def write_malicious(path, marker, template=None):
    """A `.pth` that looks like a state_dict (the tensors of `template`, or one tensor) plus the payload."""
    state = dict(template or {"weight": torch.zeros(2)})
    state["payload"] = Payload(marker)
    torch.save(state, path)
    return str(path)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code_ran"
    yield path
    assert not path.exists(), "loading the file ran the code in its pickle"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, demo_root):
    """One epoch of a tiny pix2pix run: checkpoints_dir/run holds latest_net_*.pth and latest_train_state.pth."""
    ck = tmp_path_factory.mktemp("safe") / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY)
    return ck


def copy_run(trained_run, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(trained_run, ck)
    return ck


def test_the_payload_does_run_when_unpickled_without_restrictions(tmp_path):
    path = write_malicious(tmp_path / "evil.pth", tmp_path / "ran")
    torch.load(path, weights_only=False)
    assert (tmp_path / "ran").exists()


def test_load_file_refuses_naming_the_file_and_the_global(tmp_path, marker):
    path = write_malicious(tmp_path / "evil.pth", marker)
    for numpy_arrays in (False, True):
        with pytest.raises(RuntimeError, match=rf"network G checkpoint {path} was refused.*\(exec\).*Nothing in it "
                                               rf"was run"):
            load_file(path, "network G checkpoint", numpy_arrays=numpy_arrays)


def test_test_py_refuses_a_malicious_network_file(trained_run, demo_root, tmp_path, marker):
    ck = copy_run(trained_run, tmp_path)
    target = ck / "run" / "latest_net_G.pth"
    write_malicious(target, marker, torch.load(target, weights_only=True))
    args = ("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", "--results_dir", tmp_path / "res",
            "--gpu_ids", "-1", "--num_threads", "0")
    # The set's checksums refuse the changed file first; --no_verify goes past them to the loader itself.
    checked = test_main(*args, check=False)
    assert checked.returncode == 2 and f"{target} is corrupt" in checked.stderr
    assert "--verbose" not in checked.stderr  # a refusal that says why, not a fault with a traceback to read
    result = test_main(*args, "--no_verify", check=False)
    assert result.returncode == 2
    assert f"{target} was refused" in result.stderr and "--verbose" not in result.stderr
    assert not (tmp_path / "res").exists()


def test_continue_train_refuses_a_malicious_training_state(trained_run, demo_root, tmp_path, marker):
    ck = copy_run(trained_run, tmp_path)
    target = ck / "run" / "latest_train_state.pth"
    write_malicious(target, marker, {"epoch": 2, "epoch_iter": 0, "total_iters": 8})
    before = {p.name: p.stat().st_mtime_ns for p in (ck / "run").iterdir()}
    result = train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY,
                        "--n_epochs", "2", "--continue_train", "--no_verify", check=False)
    assert result.returncode == 2
    assert f"training state {target} was refused" in result.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (ck / "run").iterdir()} == before


def test_training_state_holds_only_tensors_and_plain_values(trained_run):
    state = load_file(str(trained_run / "run" / "latest_train_state.pth"), "training state")
    assert isinstance(state["rng"]["numpy"][1], torch.Tensor)


def test_a_training_state_with_numpy_rng_from_earlier_versions_still_loads(tmp_path):
    legacy = {"rng": {"numpy": np.random.get_state()}, "weight": torch.ones(2)}
    torch.save(legacy, tmp_path / "old.pth")
    with pytest.raises(RuntimeError, match="was refused"):
        load_file(str(tmp_path / "old.pth"), "training state")
    loaded = load_file(str(tmp_path / "old.pth"), "training state", numpy_arrays=True)
    assert np.array_equal(loaded["rng"]["numpy"][1], legacy["rng"]["numpy"][1])


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    from util.process.devices import rng_state, set_rng_state
    torch.save(rng_state(), tmp_path / "rng.pth")
    expected = (np.random.rand(3), torch.rand(3))
    set_rng_state(load_file(str(tmp_path / "rng.pth"), "training state"))
    assert np.array_equal(np.random.rand(3), expected[0]) and torch.equal(torch.rand(3), expected[1])


def test_release_converter_refuses_a_malicious_checkpoint(tmp_path, marker):
    from scripts.tools import convert_atme_checkpoint
    run = tmp_path / "release"
    run.mkdir()
    target = write_malicious(run / "latest_net_G.pth", marker)
    write_malicious(run / "latest_net_T.pth", marker)
    with pytest.raises(RuntimeError, match=f"{target} was refused"):
        convert_atme_checkpoint.main(["--run_dir", str(run), "--out_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_study_tools_refuse_a_malicious_training_state(tmp_path, marker):
    from scripts.experiments.study import plan as study_plan
    target = write_malicious(tmp_path / study_plan.STATE_FILE, marker, {"epoch": 3, "epoch_iter": 0})
    with pytest.raises(RuntimeError, match=f"{target} was refused"):
        study_plan.saved_progress(str(tmp_path))


def test_fcn_weights_are_refused(tmp_path, marker):
    script = importlib.import_module("scripts.eval.eval_cityscapes")
    target = write_malicious(tmp_path / "fcn.pth", marker)
    with pytest.raises(RuntimeError, match=f"--seg_weights {target} was refused"):
        script.load_segmentation_net(target, "fcn_resnet50", 19)


@pytest.mark.parametrize("which", ["lpips_weights", "backbone_weights"])
def test_lpips_weights_are_refused(tmp_path, marker, which):
    import torchvision
    script = importlib.import_module("scripts.eval.diversity")
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    backbone = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": torch.zeros(shape) for k, shape in shapes.items()}, backbone)
    target = write_malicious(tmp_path / "evil.pth", marker)
    paths = {"lpips_weights": None, "backbone_weights": str(backbone), which: target}
    with pytest.raises(RuntimeError, match=f"{target} was refused"):
        script.build_lpips("alex", paths["lpips_weights"], paths["backbone_weights"], download=False)


def test_inception_weights_are_refused_before_torch_fidelity_opens_them(tmp_path, marker):
    from scripts.eval import kid
    target = write_malicious(tmp_path / "inception.pth", marker)
    with pytest.raises(RuntimeError, match=f"--inception_weights {target} was refused"):
        kid.resolve_inception_weights(target, download=False)


# The one call that runs a file's code, behind an explicit flag whose help says so (--seg_weights_torchscript).
ALLOWED = {("scripts/eval/eval_cityscapes.py", "load_segmentation_net", "torch.jit.load")}


def _aliases(tree):
    """{name bound in the module: the dotted path it stands for} from its imports."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node, aliases):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id)] + parts[::-1])


def _keyword(call, name):
    """The keyword argument `name` of `call`: its constant value, 'missing', or 'not a constant'."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else "not a constant"
    return "missing"


def unsafe_calls(source, filename):
    """(line, function, call) of every call in `source` that can run code from a file: torch.load without
    weights_only=True, torch.jit.load, pickle's loaders, numpy.load with allow_pickle other than False. Parsed
    with ast, so a call split over several lines or made through an alias is found too."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            if isinstance(child, ast.Call):
                name = _dotted(child.func, aliases)
                unsafe = (name == "torch.load" and _keyword(child, "weights_only") is not True
                          or name in ("torch.jit.load", "pickle.load", "pickle.loads", "pickle.Unpickler")
                          or name in ("numpy.load", "np.load") and _keyword(child, "allow_pickle") not in (False, "missing"))
                if unsafe:
                    found.append((child.lineno, function, name))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def test_the_guard_finds_calls_split_over_lines_and_through_aliases():
    source = """
import pickle as pk
import numpy
import torch
from torch import jit
from torch.jit import load as script_load

def bad(path):
    torch.load(
        path,
        weights_only=False)
    torch.load(path)
    jit.load(path)
    script_load(path)
    pk.load(open(path, "rb"))
    numpy.load(path,
               allow_pickle=True)

def fine(path, flag):
    torch.load(path, map_location="cpu",
               weights_only=True)
    numpy.load(path, allow_pickle=False)
    numpy.load(path, mmap_mode="r")
    return "torch.load(weights_only=False) in a string is not a call"
"""
    found = unsafe_calls(source, "example.py")
    assert [(line, name) for line, _, name in found] == [
        (9, "torch.load"), (12, "torch.load"), (13, "torch.jit.load"), (14, "torch.jit.load"), (15, "pickle.load"),
        (16, "numpy.load")]
    assert {function for _, function, _ in found} == {"bad"}


def test_no_loader_in_the_project_runs_code_from_a_file():
    """A new loader goes through util.run.checkpoint.load_file (weights_only=True), reads .npy without pickle, and
    runs TorchScript only behind an explicit flag (ALLOWED)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    offenders, allowed_seen = [], set()
    paths = [os.path.join(root, name) for name in ("train.py", "test.py")]
    for folder in ("models", "data", "util", "scripts", "options", "datasets"):
        for base, _, files in os.walk(os.path.join(root, folder)):
            paths += [os.path.join(base, name) for name in files if name.endswith(".py")]
    for path in paths:
        relative = os.path.relpath(path, root)
        with open(path) as handle:
            for line, function, name in unsafe_calls(handle.read(), path):
                if (relative, function, name) in ALLOWED:
                    allowed_seen.add((relative, function, name))
                else:
                    offenders.append(f"{relative}:{line} {function}: {name}")
    assert offenders == []
    assert allowed_seen == ALLOWED, "an allowed call moved: update ALLOWED"
