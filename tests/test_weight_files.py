"""Weight files run no code: a TorchScript --seg_weights only with --seg_weights_torchscript, Inception weights
handed to torch-fidelity as a private copy of what was checked (never the path, which could be swapped after the
check), and a CLIP file that is not the published one only with --feature_extractor_torchscript. Each payload would
create a marker file if its code ran; the marker never appears."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from scripts.eval import compute_kid as kid_cli
from scripts.eval import eval_cityscapes, kid
from scripts.eval.weights import WeightsRefused
from test_safe_loading import write_malicious
from util.run.checkpoint import load_file


class AddOne(torch.nn.Module):
    def forward(self, x):
        return x + 1


def torchscript_file(path):
    torch.jit.save(torch.jit.trace(AddOne(), torch.zeros(1)), str(path))
    return str(path)


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code_ran"
    yield path
    assert not path.exists(), "the file's code ran"


@pytest.fixture
def jit_runs_code(monkeypatch, marker):
    """torch.jit.load as a hostile TorchScript file makes it: loading it creates the marker."""
    real = torch.jit.load

    def load(*args, **kwargs):
        marker.touch()
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", load)


def images(folder, count=2, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


@pytest.fixture
def fidelity(monkeypatch):
    """torch-fidelity's calculate_metrics, reduced to what 0.4.0 does with the weights path: Inception's
    `torch.load(path, weights_only=False)` (a full unpickler), CLIP's `torch.jit.load(path)`. `before` runs first
    (e.g. an attacker swapping the checked file)."""
    seen = {"before": lambda: None}

    def calculate_metrics(**kwargs):
        seen["before"]()
        path = kwargs.get("feature_extractor_weights_path")
        seen["path"] = path
        if path is not None:
            if kwargs["feature_extractor"].startswith("clip"):
                torch.jit.load(path, map_location="cpu")
            else:
                seen["state"] = torch.load(path, weights_only=False)
        return {"kernel_inception_distance_mean": 0.0, "kernel_inception_distance_std": 0.0}

    monkeypatch.setattr(kid.torch_fidelity, "calculate_metrics", calculate_metrics)
    return seen


# ------------------------------------------------------------------------------------------------ --seg_weights
def test_a_torchscript_seg_weights_file_is_refused_without_the_flag(tmp_path, jit_runs_code):
    path = torchscript_file(tmp_path / "fcn.pt")
    with pytest.raises(WeightsRefused, match=f"--seg_weights {path} is a TorchScript file.*--seg_weights_torchscript"):
        eval_cityscapes.load_segmentation_net(path, "fcn_resnet50", 19)
    folder = tmp_path / "res" / "images"
    images(folder, count=1)
    for label in ("fake_B", "real_A"):
        os.link(folder / "0.png", folder / f"0_{label}.png")
    with pytest.raises(WeightsRefused, match="nothing of it was run"):
        eval_cityscapes.main(["--results_dir", str(tmp_path / "res"), "--seg_weights", path])


def test_the_flag_runs_a_torchscript_seg_weights_file_and_its_help_says_so(tmp_path, capsys):
    path = torchscript_file(tmp_path / "fcn.pt")
    net = eval_cityscapes.load_segmentation_net(path, "fcn_resnet50", 19, torchscript=True)
    assert float(net(torch.zeros(1))) == 1.0
    with pytest.raises(SystemExit):
        eval_cityscapes.main(["--help"])
    assert "RUNS THE FILE'S CODE" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(WeightsRefused, match="not a TorchScript archive"):
        state = tmp_path / "state.pth"
        torch.save({"weight": torch.zeros(1)}, state)
        eval_cityscapes.load_segmentation_net(str(state), "fcn_resnet50", 19, torchscript=True)


# ------------------------------------------------------------------------------------------------ Inception
def test_inception_weights_swapped_after_the_check_never_reach_torch_fidelity(tmp_path, marker, fidelity):
    weights = tmp_path / "inception.pth"
    clean = {"fc.weight": torch.ones(2, 2)}
    torch.save(clean, weights)

    def swap():  # after the project's check, before torch-fidelity reads
        write_malicious(weights, marker)

    fidelity["before"] = swap
    kid.compute_kid(images(tmp_path / "a"), images(tmp_path / "b", seed=1), subset_size=2, subsets=1,
                    weights_path=str(weights), num_workers=0, download=False)
    assert fidelity["path"] != str(weights) and not os.path.exists(fidelity["path"])  # a private copy, gone after
    assert torch.equal(fidelity["state"]["fc.weight"], clean["fc.weight"])
    with pytest.raises(RuntimeError, match="was refused"):  # the swap happened: the copy kept it out
        load_file(str(weights))


def test_a_malicious_inception_file_is_refused_before_torch_fidelity(tmp_path, marker, fidelity):
    weights = write_malicious(tmp_path / "inception.pth", marker)
    with pytest.raises(RuntimeError, match=f"--inception_weights {weights} was refused"):
        kid.compute_kid(images(tmp_path / "a"), images(tmp_path / "b", seed=1), subset_size=2, subsets=1,
                        weights_path=weights, num_workers=0, download=False)
    assert "path" not in fidelity


# ------------------------------------------------------------------------------------------------ CLIP
def test_a_clip_torchscript_file_that_is_not_the_published_one_never_runs(tmp_path, jit_runs_code, fidelity):
    path = torchscript_file(tmp_path / "clip.pt")
    argv = ["--dir1", images(tmp_path / "a"), "--dir2", images(tmp_path / "b", seed=1), "--kid_subset_size", "2",
            "--kid_subsets", "1", "--num_workers", "0", "--feature_extractor", "clip-vit-b-32",
            "--inception_weights", path, "--quiet"]
    with pytest.raises(WeightsRefused, match=f"{path} is not the published clip-vit-b-32 weights.*Nothing of it was "
                                             f"run.*--feature_extractor_torchscript"):
        kid_cli.main(argv)
    assert "path" not in fidelity


def test_the_flag_lets_a_clip_file_run_from_a_private_copy(tmp_path, fidelity, marker):
    path = torchscript_file(tmp_path / "clip.pt")
    kid.compute_kid(images(tmp_path / "a"), images(tmp_path / "b", seed=1), subset_size=2, subsets=1,
                    feature_extractor="clip-vit-b-32", weights_path=path, num_workers=0, download=False,
                    allow_torchscript=True)
    assert fidelity["path"] != path and os.path.basename(fidelity["path"]) == "clip.pt"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_damaged_clip_file_is_named_instead_of_an_internal_miniz_error(tmp_path, fidelity, damage):
    path = torchscript_file(tmp_path / "clip.pt")
    data = bytearray(open(path, "rb").read())
    if damage == "garbage":
        data = bytearray(b"not an archive" * 10)
    elif damage == "truncated":
        data = data[:len(data) // 2]
    else:
        at = data.find(b"def forward")
        data[at + 4] ^= 0x20
    with open(path, "wb") as handle:
        handle.write(bytes(data))
    with pytest.raises(WeightsRefused, match=f"--inception_weights {path} is not a whole TorchScript archive"):
        kid.compute_kid(images(tmp_path / "a"), images(tmp_path / "b", seed=1), subset_size=2, subsets=1,
                        feature_extractor="clip-vit-b-32", weights_path=path, num_workers=0, download=False,
                        allow_torchscript=True)
    assert "path" not in fidelity
