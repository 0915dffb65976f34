"""L1/PSNR, validation helper, FCN scores and Cityscapes colours, and the diversity script."""
import importlib
import math
import urllib.error
import warnings
from conftest import stored_train_options
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from scripts.eval.cityscapes import (CITYSCAPES_TRAIN_COLORS, IGNORE_LABEL, ConfusionMatrix, colors_to_train_ids,
                                     fcn_scores, train_ids_to_colors)
from scripts.eval.pairwise_distances import mean_pairwise_l1
from util.metrics import batch_l1, batch_psnr, evaluate_model

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"compute_kid": "scripts.eval.compute_kid", "collect_results": "scripts.eval.collect_results",
           "diversity": "scripts.eval.diversity", "eval_cityscapes": "scripts.eval.eval_cityscapes"}


def load_script(name):
    return importlib.import_module(SCRIPTS[name])


# ------------------------------------------------------------------------------------------- L1 and PSNR
def test_l1_and_psnr_known_values():
    real = torch.zeros(2, 3, 8, 8)
    fake = torch.full((2, 3, 8, 8), 0.5)
    fake[1] = -1.0
    assert batch_l1(fake, real).tolist() == pytest.approx([0.5, 1.0])
    # data range 2 ([-1, 1]): PSNR = 10 log10(4 / mse); mse 0.25 -> 12.04 dB, mse 1 -> 6.02 dB
    assert batch_psnr(fake, real).tolist() == pytest.approx([10 * math.log10(16), 10 * math.log10(4)])
    assert batch_psnr(real, real).tolist() == pytest.approx([10 * math.log10(4 / 1e-10)] * 2)  # bounded, finite
    with pytest.raises(ValueError, match="differ in shape"):
        batch_l1(fake, real[:1])


class FixedOffsetModel:
    """Stands in for a BaseModel: fake_B = real_B + offset."""

    def __init__(self, offset):
        self.offset = offset
        self.calls = 0

    def set_input(self, batch):
        self.real_B = batch["B"]

    def test(self):
        self.calls += 1
        self.fake_B = self.real_B + self.offset


def test_evaluate_model_averages_over_images_and_respects_max_batches():
    loader = [{"B": torch.zeros(2, 3, 4, 4)}, {"B": torch.zeros(3, 3, 4, 4)}, {"B": torch.zeros(1, 3, 4, 4)}]
    model = FixedOffsetModel(0.5)
    result = evaluate_model(model, loader)
    assert result["n_images"] == 6 and model.calls == 3
    assert result["l1"] == pytest.approx(0.5) and result["psnr"] == pytest.approx(10 * math.log10(16))
    assert evaluate_model(FixedOffsetModel(1.0), loader, max_batches=1)["n_images"] == 2
    with pytest.raises(ValueError, match="empty data loader"):
        evaluate_model(model, [])


def test_evaluate_model_with_the_pix2pix_model_on_demo_data(demo_root, tmp_path):
    from data import create_dataloader, create_dataset
    from models import create_model
    opt = stored_train_options(["--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "val",
                                "--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8",
                                "--load_size", "32", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0",
                                "--display_id", "0", "--phase", "val", "--gpu_ids", "-1", "--no_flip"])
    model = create_model(opt)
    model.setup(opt)
    model.eval()
    loader = create_dataloader(create_dataset(opt), opt, shuffle=False)
    result = evaluate_model(model, loader)
    assert result["n_images"] == 4
    assert 0 < result["l1"] < 2 and 0 < result["psnr"] < 60
    by_hand = []  # the same numbers as scoring the batches one by one
    for batch in loader:
        model.set_input(batch)
        model.test()
        by_hand.append(batch_l1(model.fake_B, model.real_B))
    assert result["l1"] == pytest.approx(torch.cat(by_hand).mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------------------- FCN scores
def test_fcn_scores_on_a_known_confusion_matrix():
    scores = fcn_scores(torch.tensor([[3, 1], [0, 4]]))  # rows: ground truth, columns: prediction
    assert scores["per_pixel_acc"] == pytest.approx(7 / 8)
    assert scores["per_class_acc"] == pytest.approx((3 / 4 + 1) / 2)
    assert scores["class_iou"] == pytest.approx([3 / 4, 4 / 5])
    assert scores["mean_iou"] == pytest.approx((3 / 4 + 4 / 5) / 2)


def test_fcn_scores_skip_undefined_classes():
    # class 2 never in the labels but predicted once: no accuracy, IoU 0; class 3 absent everywhere: skipped
    conf = torch.tensor([[3, 1, 0, 0], [0, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    scores = fcn_scores(conf)
    assert scores["class_acc"][:2] == pytest.approx([3 / 4, 3 / 4]) and scores["class_acc"][2:] == [None, None]
    assert scores["per_class_acc"] == pytest.approx(3 / 4)
    assert scores["class_iou"][:3] == pytest.approx([3 / 4, 3 / 5, 0.0]) and scores["class_iou"][3] is None
    assert scores["mean_iou"] == pytest.approx((3 / 4 + 3 / 5 + 0) / 3)
    with pytest.raises(ValueError, match="empty"):
        fcn_scores(torch.zeros(3, 3))


def test_confusion_matrix_counts_and_ignores_label_255():
    target = torch.tensor([[0, 0, 1], [1, IGNORE_LABEL, 2]])
    pred = torch.tensor([[0, 1, 1], [2, 0, 2]])
    conf = ConfusionMatrix(3).update(pred, target)
    assert conf.matrix.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert fcn_scores(conf)["per_pixel_acc"] == pytest.approx(3 / 5)  # the ignored pixel does not count
    with pytest.raises(ValueError, match=r"label ids must be in \[0, 3\)"):
        conf.update(torch.zeros(2), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="does the segmentation network have 3 classes"):
        conf.update(torch.tensor([0, 5]), torch.zeros(2))


def test_cityscapes_colours_map_to_train_ids_with_tolerance_and_void():
    rng = np.random.default_rng(0)
    colours = np.array(CITYSCAPES_TRAIN_COLORS, dtype=np.int64)
    image = colours[None, :, :].repeat(2, axis=0)  # (2, 19, 3): every class twice
    noisy = np.clip(image + rng.integers(-8, 9, size=image.shape), 0, 255).astype(np.uint8)
    assert colors_to_train_ids(noisy).tolist() == [list(range(19))] * 2
    special = np.array([[[0, 0, 0], [81, 0, 81], [255, 255, 255], [0, 0, 142]]], dtype=np.uint8)
    assert colors_to_train_ids(special).tolist() == [[IGNORE_LABEL, IGNORE_LABEL, IGNORE_LABEL, 13]]
    assert np.array_equal(train_ids_to_colors(colors_to_train_ids(image.astype(np.uint8))), image)


# ------------------------------------------------------------------------------------------- eval_cityscapes
class NearestColourSegmenter(torch.nn.Module):
    """An oracle 'segmentation network' for photos that are label colours: logits = -distance to the palette."""

    def __init__(self):
        super().__init__()
        self.register_buffer("palette", torch.tensor(CITYSCAPES_TRAIN_COLORS, dtype=torch.float32) / 255.0)

    def forward(self, x):
        diff = x[:, None] - self.palette[None, :, :, None, None]
        return {"out": -(diff ** 2).sum(dim=2)}


def save(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_eval_cityscapes_end_to_end_with_known_scores(tmp_path):
    images = tmp_path / "results" / "test_latest" / "images"
    images.mkdir(parents=True)
    road, sky, car = (np.array(CITYSCAPES_TRAIN_COLORS[i]) for i in (0, 10, 13))
    label1 = np.zeros((16, 16, 3), dtype=np.int64)
    label1[:8], label1[8:] = road, car
    label1[:4, :4] = 0  # 16 void pixels, ignored
    label2 = np.zeros((16, 16, 3), dtype=np.int64)
    label2[:, :8], label2[:, 8:] = road, sky
    save(images / "1_real_A.png", label1)
    save(images / "1_fake_B.png", np.clip(label1 + 5, 0, 255))  # right everywhere
    save(images / "2_real_A.png", label2)
    save(images / "2_fake_B.png", np.broadcast_to(road, (16, 16, 3)))  # right on the road half only
    weights = tmp_path / "oracle.pt"
    torch.jit.script(NearestColourSegmenter()).save(str(weights))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="The given NumPy array is not writable")  # as a user sees it
        payload = load_script("eval_cityscapes").main([
            "--results_dir", str(images.parent), "--seg_weights", str(weights), "--seg_weights_torchscript",
            "--input_norm", "none", "--device", "cpu", "--batch_size", "2", "--seg_size", "32x32"])
    assert payload["n_images"] == 2 and payload["n_pixels"] == 512 - 16
    assert payload["per_pixel_acc"] == pytest.approx((240 + 128) / 496)
    # road: 112 + 128 labelled, all right; car: 128 right; sky: 128 labelled, none right (predicted road)
    assert payload["class_acc"][0] == 1.0 and payload["class_acc"][13] == 1.0 and payload["class_acc"][10] == 0.0
    assert payload["class_iou"][0] == pytest.approx(240 / (240 + 128))
    assert payload["class_iou_by_name"]["sky"] == 0.0
    assert (images.parent / "fcn_scores.json").is_file()


def test_segmentation_state_dict_loads_into_torchvision_fcn(tmp_path):
    script = load_script("eval_cityscapes")
    with torch.device("meta"):  # shapes only: skips the slow weight initialisation
        net = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=19)
    state = {f"module.{k}": torch.zeros(v.shape, dtype=v.dtype) for k, v in net.state_dict().items()}
    path = tmp_path / "fcn.pth"
    torch.save({"state_dict": state}, path)
    loaded = script.load_segmentation_net(str(path), "fcn_resnet50", 19)
    with torch.no_grad():
        logits = script.logits_of(loaded(torch.zeros(1, 3, 16, 16)), 19)
    assert logits.shape == (1, 19, 16, 16)
    with pytest.raises(ValueError, match="does not fit --arch fcn_resnet50 with --num_classes 5"):
        script.load_segmentation_net(str(path), "fcn_resnet50", 5)
    with pytest.raises(FileNotFoundError, match="--seg_weights .*nothing.pth does not exist"):
        script.load_segmentation_net(str(tmp_path / "nothing.pth"))


# ------------------------------------------------------------------------------------------- diversity
def write_samples(directory, stem, values, size=16, seed=0):
    """`<stem>_fake_B_<k>.png` for each value: a grey level (a flat image) or a whole (size, size, 3) array."""
    rng = np.random.default_rng(seed)
    for k, value in enumerate(values):
        array = np.broadcast_to(value, (size, size, 3)) if np.isscalar(value) else value
        save(directory / f"{stem}_fake_B_{k}.png", array)
    save(directory / f"{stem}_real_A.png", rng.integers(0, 255, (size, size, 3)))


def test_mean_pairwise_l1_known_value():
    samples = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 1.0, 1.0)])
    assert mean_pairwise_l1(samples) == pytest.approx(4 / 3)  # pairs: 2, 2, 0
    with pytest.raises(ValueError, match="at least 2 samples"):
        mean_pairwise_l1(samples[:1])


def test_diversity_l1_fallback_is_labelled(tmp_path):
    images = tmp_path / "res" / "images"
    images.mkdir(parents=True)
    write_samples(images, "a", [0, 255, 255])
    write_samples(images, "b", [7, 7, 7, 7])
    payload = load_script("diversity").main(["--results_dir", str(images.parent), "--metric", "l1",
                                             "--num_samples", "3", "--device", "cpu"])
    # On the [0, 1] image scale: black vs white is 1, so the pairs of "a" give (1 + 1 + 0) / 3.
    assert payload["per_input"] == pytest.approx({"a": 2 / 3, "b": 0.0})
    assert payload["n_inputs"] == 2 and "fallback" in payload["metric"] and "not LPIPS" in payload["metric"]
    assert payload["scale"] == "[0, 1] image scale" and "[0, 1] image scale" in payload["metric"]
    with pytest.raises(ValueError, match="fewer than --num_samples 4 .*--n_samples 4"):
        load_script("diversity").main(["--results_dir", str(images.parent), "--metric", "l1", "--num_samples", "4"])


def test_diversity_lpips_with_local_backbone_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    images = tmp_path / "res" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    write_samples(images, "same", [np.full((32, 32, 3), 90)] * 3, size=32)
    write_samples(images, "varied", [rng.integers(0, 255, (32, 32, 3)) for _ in range(3)], size=32)
    backbone = tmp_path / "alexnet.pth"
    with torch.device("meta"):  # shapes only; random weights are enough to tell images apart
        shapes = {k: v.shape for k, v in torchvision.models.alexnet(weights=None).features.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    torch.save({f"features.{k}": 0.05 * torch.randn(shape, generator=generator) for k, shape in shapes.items()},
               backbone)
    payload = load_script("diversity").main(["--results_dir", str(images.parent), "--num_samples", "3",
                                             "--backbone_weights", str(backbone), "--device", "cpu"])
    assert payload["metric"] == "lpips-alex-v0.1"
    assert payload["per_input"]["same"] == pytest.approx(0.0, abs=1e-6)
    assert payload["per_input"]["varied"] > 1e-3
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="is not a torchvision alexnet state_dict"):
        load_script("diversity").build_lpips("alex", backbone_weights=str(tmp_path / "wrong.pth"))


def test_lpips_backbone_offline_error_names_url_and_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    script = load_script("diversity")
    with pytest.raises(RuntimeError) as err:
        script.backbone_weights_path("alex")
    message = str(err.value)
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in message
    assert "--backbone_weights" in message and "--metric l1" in message
