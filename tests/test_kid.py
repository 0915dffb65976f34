"""KID through torch-fidelity with a small stand-in feature extractor (offline), and the results table."""
import importlib
import json
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from scripts.eval import kid
from util.run.result_files import result_image_sets

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"compute_kid": "scripts.eval.compute_kid", "collect_results": "scripts.eval.collect_results",
           "diversity": "scripts.eval.diversity", "eval_cityscapes": "scripts.eval.eval_cityscapes"}
STAND_IN = "test-colour-layout"


def load_script(name):
    return importlib.import_module(SCRIPTS[name])


class ColourLayoutExtractor(FeatureExtractorBase):
    """Stand-in for Inception: per-channel mean/std plus a 4x4 thumbnail. No weights, deterministic."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("colour",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "colour"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x):
        x = x.float() / 255.0
        thumb = F.adaptive_avg_pool2d(x, 4).flatten(1)
        stats = torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)
        return (torch.cat([thumb, stats], dim=1),)


if STAND_IN not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(STAND_IN, ColourLayoutExtractor)


def write_image(path, array):
    Image.fromarray(array.astype(np.uint8)).save(path)


def make_results(root, n=60, size=32, shift=0, seed=0):
    """A test.py-like result folder: images/<i>_real_A|real_B|fake_B.png; fake = real shifted by `shift`."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(0, 200, size=3)
        real = np.clip(base + rng.normal(0, 25, size=(size, size, 3)), 0, 255)
        fake = np.clip(real + shift * np.array([1.0, -0.5, 0.3]), 0, 255)
        write_image(images / f"{i:03d}_real_A.png", 255 - real)
        write_image(images / f"{i:03d}_real_B.png", real)
        write_image(images / f"{i:03d}_fake_B.png", fake)
    return root


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*.png")}


def test_identical_sets_give_kid_near_zero_and_different_sets_larger(tmp_path):
    same = make_results(tmp_path / "same", shift=0)
    shifted = make_results(tmp_path / "shifted", shift=60)
    common = dict(subset_size=50, subsets=50, feature_extractor=STAND_IN, device="cpu", num_workers=0)
    r_same = kid.compute_kid(*result_image_sets(same), **common)
    r_diff = kid.compute_kid(*result_image_sets(shifted), **common)
    assert r_same["n_real"] == r_same["n_fake"] == 60
    assert abs(r_same["kid_x100_mean"]) < 0.1 * r_diff["kid_x100_mean"]
    assert r_diff["kid_x100_mean"] > 5 * r_diff["kid_x100_std"]
    assert r_diff["kid_x100_mean"] == pytest.approx(100 * r_diff["kid_mean"])
    assert r_diff["kid_x100"] == f"{r_diff['kid_x100_mean']:.1f} ± {r_diff['kid_x100_std']:.1f}"


def test_cli_writes_json_beside_images_and_moves_nothing(tmp_path):
    results = make_results(tmp_path / "results" / "facades_atme_BtoA" / "test_latest", shift=40)
    before = snapshot(results)
    payload = load_script("compute_kid").main([
        "--results_dir", str(results), "--feature_extractor", STAND_IN, "--device", "cpu", "--num_workers", "0",
        "--kid_subsets", "20", "--quiet", "--checkpoints_dir", str(tmp_path / "none"), "--tag", "note=x"])
    assert snapshot(results) == before  # no image moved, renamed or rewritten
    written = json.loads((results / "kid.json").read_text())
    assert written["kid_x100_mean"] == pytest.approx(payload["kid_x100_mean"])
    assert written["name"] == "facades_atme_BtoA" and written["note"] == "x"
    assert written["n_real"] == 60 and written["real_label"] == "real_B"


def test_dir_mode_and_stored_options_are_recorded(tmp_path):
    results = make_results(tmp_path / "results" / "run1" / "test_latest", n=12)
    run_dir = tmp_path / "ckpt" / "run1"
    run_dir.mkdir(parents=True)
    (run_dir / "test_opt.json").write_text(json.dumps(dict(model="atme", direction="BtoA",
                                                           dataroot="./datasets/facades")))
    meta = load_script("compute_kid").run_metadata(str(results), str(tmp_path / "ckpt"))
    assert meta == dict(name="run1", split="test_latest", model="atme", direction="BtoA", dataset="facades")
    # --dir1/--dir2: two plain folders; subset 10 of 12 images.
    out = tmp_path / "k.json"
    payload = load_script("compute_kid").main([
        "--dir1", str(results / "images"), "--dir2", str(results / "images"), "--out", str(out),
        "--feature_extractor", STAND_IN, "--device", "cpu", "--num_workers", "0", "--kid_subset_size", "10",
        "--quiet"])
    assert out.is_file() and payload["n_real"] == 36  # a plain folder takes every image in it


def test_subset_larger_than_image_count_is_an_error_with_a_suggestion(tmp_path):
    results = make_results(tmp_path / "r", n=12)
    with pytest.raises(ValueError, match=r"--kid_subset_size 50 is larger.*12 real, 12 fake.*--kid_subset_size 12"):
        kid.compute_kid(*result_image_sets(results), feature_extractor=STAND_IN, device="cpu")


def test_missing_label_and_mixed_sizes_are_named(tmp_path):
    results = make_results(tmp_path / "r", n=4)
    with pytest.raises(FileNotFoundError, match=r"no '\*_fake_A.png' images"):
        result_image_sets(results, fake_label="fake_A")
    write_image(results / "images" / "004_fake_B.png", np.zeros((16, 16, 3)))
    dataset = kid.ImageListDataset(sorted((results / "images").glob("*_fake_B.png")))
    with pytest.raises(ValueError, match=r"004_fake_B.png is 16x16 but .*000_fake_B.png is 32x32"):
        dataset[4]


def test_offline_without_weights_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    expected_path = os.path.join(str(tmp_path / "hub"), "checkpoints", kid.INCEPTION_FILENAME)
    with pytest.raises(RuntimeError) as err:
        kid.resolve_inception_weights(None)
    assert kid.INCEPTION_URL in str(err.value) and expected_path in str(err.value)
    assert "--inception_weights" in str(err.value)
    with pytest.raises(FileNotFoundError, match="--inception_weights .*missing.pth does not exist"):
        kid.resolve_inception_weights(str(tmp_path / "missing.pth"))
    # A copy already in torch.hub's cache is used without any download.
    os.makedirs(os.path.dirname(expected_path), exist_ok=True)
    torch.save({"fc.weight": torch.zeros(2, 2)}, expected_path)  # read (weights only) before torch-fidelity's load
    assert kid.resolve_inception_weights(None) == expected_path


def write_kid(path, mean, std, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(kid_x100_mean=mean, kid_x100_std=std, **fields)))


def test_collect_results_builds_table2_layout(tmp_path):
    results = tmp_path / "results"
    write_kid(results / "facades_atme_AtoB" / "test_latest" / "kid.json", 18.44, 1.81, name="facades_atme_AtoB")
    write_kid(results / "facades_pix2pix_AtoB" / "test_latest" / "kid.json", 31.3, 2.3,
              name="facades_pix2pix_AtoB")
    write_kid(results / "x" / "val_latest" / "kid.json", 2.8, 0.6, name="x", dataset="maps", model="atme",
              direction="BtoA")
    md, csv_path = tmp_path / "t.md", tmp_path / "t.csv"
    script = load_script("collect_results")
    columns, rows = script.main([str(results), "--out_md", str(md), "--out_csv", str(csv_path)])
    assert columns == [("facades", "AtoB"), ("facades", "BtoA"), ("maps", "AtoB"), ("maps", "BtoA")]
    assert [label for label, _ in rows] == ["pix2pix", "ATME"]
    lines = md.read_text().splitlines()
    assert lines[0] == "| Model | Facades A→B | Facades B→A | Maps A→B | Maps B→A |"
    assert lines[2] == "| pix2pix | 31.3 ± 2.3 | – | – | – |"
    assert lines[3] == "| ATME | **18.4 ± 1.8** | – | – | 2.8 ± 0.6 |"
    csv_lines = csv_path.read_text().splitlines()
    assert csv_lines[0].startswith("model,facades_AtoB_kid_x100_mean,facades_AtoB_kid_x100_std")
    assert csv_lines[2].split(",")[:3] == ["ATME", "18.44", "1.81"]
    _, rows = script.main([str(results), "--paper", "--out_md", str(md)])
    assert rows[-1][0] == "ATME (paper)" and rows[-1][1][("night2day", "BtoA")] == (18.3, 1.4)


def test_collect_results_rejects_an_unlabelled_record(tmp_path):
    write_kid(tmp_path / "run" / "kid.json", 1.0, 0.1, name="somerun")
    with pytest.raises(ValueError, match="does not say its dataset, model, direction"):
        load_script("collect_results").main([str(tmp_path)])
