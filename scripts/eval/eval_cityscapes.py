"""FCN scores of generated Cityscapes photos (labels -> photo), as in the ATME paper's Table 3.

    python -m scripts.eval.eval_cityscapes --results_dir results/cityscapes_atme_BtoA/test_latest \\
        --seg_weights fcn_resnet101_cityscapes.pth --arch fcn_resnet101

A segmentation network the user supplies (a state_dict of a torchvision FCN/DeepLab with 19 classes, read
with weights_only=True; or a TorchScript file, which runs its own code, only with --seg_weights_torchscript) segments every generated photo `<stem>_fake_B.png`; the result is scored against the label image the
photo was made from (`<stem>_real_A.png` for B->A: colour labels mapped to the 19 train ids, 255 ignored).
`--photo_label real_B` scores the real photos instead (the "ground truth" row). Writes `fcn_scores.json`.
"""
import argparse
import logging
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from tqdm import tqdm

if not __package__:  # run as `python scripts/eval/eval_cityscapes.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from util.run.atomic import write_json
from util.run.checkpoint import load_file
from scripts.eval.weights import WeightsRefused, is_torchscript
from scripts.eval.cityscapes import CITYSCAPES_CLASSES, IGNORE_LABEL, ConfusionMatrix, colors_to_train_ids, fcn_scores
from util.process.devices import resolve_device
from util.run.result_files import find_labelled_images, images_dir

log = logging.getLogger("eval_cityscapes")

ARCHS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _state_dict_of(obj, path):
    """The state_dict inside a saved object: the dict itself or its 'state_dict'/'model' entry."""
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"--seg_weights {path} holds no state_dict of tensors: give the state_dict of a torchvision "
                         f"{'/'.join(ARCHS)} (torch.save(net.state_dict(), path))")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_segmentation_net(path, arch="fcn_resnet50", num_classes=19, torchscript=False):
    """A segmentation network from a torchvision state_dict (`arch`, `num_classes`; read with weights_only=True), or
    from TorchScript, whose code runs, only with `torchscript` (--seg_weights_torchscript)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--seg_weights {path} does not exist: give the state_dict of a torchvision "
                                f"{'/'.join(ARCHS)} trained on Cityscapes' {num_classes} classes")
    if torchscript:
        if not is_torchscript(path):
            raise WeightsRefused(f"--seg_weights {path} is not a TorchScript archive, but --seg_weights_torchscript "
                                 f"was given: drop --seg_weights_torchscript for a state_dict")
        net = torch.jit.load(path, map_location="cpu")  # runs the file's code: the user asked for it by flag
        log.info("loaded the TorchScript segmentation network %s (--seg_weights_torchscript)", path)
        return net.eval()
    if is_torchscript(path):
        raise WeightsRefused(f"--seg_weights {path} is a TorchScript file, which runs its own code when it is used; "
                             f"nothing of it was run. Give the state_dict of a torchvision {'/'.join(ARCHS)} "
                             f"instead, or, if you trust the file's author, add --seg_weights_torchscript")
    if arch not in ARCHS:
        raise ValueError(f"--arch {arch} is not one of {', '.join(ARCHS)}")
    state = _state_dict_of(load_file(path, "--seg_weights"), path)
    builder = getattr(torchvision.models.segmentation, arch)
    aux = any(k.startswith("aux_classifier.") for k in state)
    with torch.device("meta"):  # built without initialising weights: the state_dict replaces them all
        net = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"--seg_weights {path} does not fit --arch {arch} with --num_classes {num_classes}: "
                         f"{str(err)[:600]}") from None
    if missing or unexpected:
        raise ValueError(f"--seg_weights {path} does not fit --arch {arch}: missing keys {missing[:10]}, "
                         f"unexpected keys {unexpected[:10]}; check --arch")
    log.info("loaded %s (%d classes) from %s", arch, num_classes, path)
    return net.eval()


def logits_of(output, num_classes):
    """The (B, classes, h, w) logits of a torchvision model's dict, a tuple, or a plain tensor."""
    if isinstance(output, dict):
        output = output["out"]
    elif isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() != 4 or output.shape[1] != num_classes:
        raise ValueError(f"the segmentation network returned shape {tuple(output.shape)}; expected (B, "
                         f"{num_classes}, h, w): check --num_classes")
    return output


def load_label(path, label_format="auto", max_distance=60.0, num_classes=19):
    """Train ids (H, W) from a colour label image or a single-channel train-id image."""
    with Image.open(path) as img:
        single = img.mode in ("L", "I", "I;16")  # palette ("P") images carry colours
        if label_format == "color" or (label_format == "auto" and not single):
            return colors_to_train_ids(np.asarray(img.convert("RGB")), max_distance=max_distance)
        ids = torch.from_numpy(np.asarray(img).astype(np.int64))
    if ids.dim() != 2:
        raise ValueError(f"{path}: a train-id label image must have one channel, got shape {tuple(ids.shape)}")
    return torch.where(ids < num_classes, ids, torch.full_like(ids, IGNORE_LABEL))


def load_photo(path, norm):
    with Image.open(path) as img:
        x = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1).float() / 255.0
    if norm == "imagenet":
        x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    elif norm == "tanh":
        x = x * 2 - 1
    return x


def parse_size(text):
    """'512' -> (512, 512); '1024x2048' -> (1024, 2048)."""
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, e.g. 256 or 1024x2048, got {text!r}") from None
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, e.g. 256 or 1024x2048, got {text!r}")
    return size


def pair_files(results_dir, photo_label, label_label):
    directory = images_dir(results_dir)
    photos = find_labelled_images(directory, photo_label)
    labels = find_labelled_images(directory, label_label)
    stems = sorted(set(photos) & set(labels))
    if not stems:
        raise FileNotFoundError(f"no inputs with both '*_{photo_label}' and '*_{label_label}' images in {directory}: "
                                "check --results_dir, --photo_label and --label_label")
    unpaired = len(set(photos) | set(labels)) - len(stems)
    if unpaired:
        log.warning("%d inputs lack a photo or a label image and are skipped", unpaired)
    return [(photos[s], labels[s]) for s in stems]


@torch.no_grad()
def evaluate(net, pairs, *, num_classes=19, norm="imagenet", seg_size=None, label_format="auto",
             max_distance=60.0, batch_size=8, device="cpu"):
    """Confusion matrix of the network's segmentation of each photo against its label image."""
    conf = ConfusionMatrix(num_classes, device=device)
    net = net.to(device)
    for start in tqdm(range(0, len(pairs), batch_size), desc="segmenting", unit="batch"):
        chunk = pairs[start:start + batch_size]
        photos = [load_photo(p, norm) for p, _ in chunk]
        if len({tuple(x.shape) for x in photos}) > 1:
            raise ValueError(f"photos of different sizes in one batch ({chunk[0][0]} ...): use --batch_size 1")
        x = torch.stack(photos).to(device)
        if seg_size:
            x = F.interpolate(x, size=seg_size, mode="bilinear", align_corners=False)
        logits = logits_of(net(x), num_classes)
        for (photo, label_path), one in zip(chunk, logits):
            label = load_label(label_path, label_format, max_distance, num_classes).to(device)
            if one.shape[-2:] != label.shape:
                one = F.interpolate(one[None], size=tuple(label.shape), mode="bilinear", align_corners=False)[0]
            conf.update(one.argmax(dim=0), label)
    return conf


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_dir", required=True, help="a test.py result folder of a Cityscapes labels->photo run")
    p.add_argument("--photo_label", default="fake_B", help="suffix of the photos to segment (real_B: ground truth)")
    p.add_argument("--label_label", default="real_A", help="suffix of the label images (the generator's input)")
    p.add_argument("--seg_weights", required=True,
                   help="state_dict of the segmentation network (a torchvision --arch; read without running code)")
    p.add_argument("--seg_weights_torchscript", action="store_true",
                   help="--seg_weights is a TorchScript file: loading and using it RUNS THE FILE'S CODE, so pass it "
                        "only for a file whose author you trust")
    p.add_argument("--arch", default="fcn_resnet50", choices=ARCHS, help="architecture of a state_dict")
    p.add_argument("--num_classes", type=int, default=19, help="classes the network predicts (train ids)")
    p.add_argument("--input_norm", default="imagenet", choices=("imagenet", "tanh", "none"),
                   help="photo normalisation the network expects: ImageNet mean/std, [-1,1], or [0,1]")
    p.add_argument("--seg_size", type=parse_size, default=None,
                   help="resize photos to N (square) or HxW (e.g. 1024x2048, Cityscapes' own size) before segmenting")
    p.add_argument("--label_format", default="auto", choices=("auto", "color", "trainid"),
                   help="colour label images, or single-channel train ids (auto: by image mode)")
    p.add_argument("--color_tolerance", type=float, default=60.0,
                   help="label pixels farther than this (RGB distance) from every palette colour are ignored")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default=None, help="JSON output (default: <results_dir>/fcn_scores.json)")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    pairs = pair_files(args.results_dir, args.photo_label, args.label_label)
    net = load_segmentation_net(args.seg_weights, args.arch, args.num_classes, args.seg_weights_torchscript)
    conf = evaluate(net, pairs, num_classes=args.num_classes, norm=args.input_norm, seg_size=args.seg_size,
                    label_format=args.label_format, max_distance=args.color_tolerance,
                    batch_size=args.batch_size, device=resolve_device(args.device))
    scores = fcn_scores(conf)
    names = CITYSCAPES_CLASSES if args.num_classes == len(CITYSCAPES_CLASSES) else range(args.num_classes)
    payload = dict(results_dir=args.results_dir, photo_label=args.photo_label, label_label=args.label_label,
                   seg_weights=args.seg_weights, arch=args.arch, n_images=len(pairs), **scores,
                   class_iou_by_name=dict(zip(map(str, names), scores["class_iou"])),
                   confusion_matrix=conf.matrix.cpu().tolist())
    out = args.out or os.path.join(args.results_dir, "fcn_scores.json")
    write_json(out, payload)
    log.info("per-pixel acc %.3f, per-class acc %.3f, class IoU %.3f (%d images) -> %s", scores["per_pixel_acc"],
             scores["per_class_acc"], scores["mean_iou"], len(pairs), out)
    return payload


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: main() and 0)  # one-line errors for users; main() returns its results for tests
