"""Diversity of multimodal outputs: average pairwise LPIPS distance, as in the SEGAN paper's Tables 1 and 2.

    python test.py --model segan --name facades_segan_BtoA --n_samples 20 --num_test 100 ...
    python -m scripts.eval.diversity --results_dir results/facades_segan_BtoA/test_latest

For each of N inputs (paper: 100) the K outputs `<stem>_fake_B_<k>.png` (paper: 20) are compared in all
K(K-1)/2 pairs; the score is the mean over pairs, averaged over inputs. LPIPS uses the `lpips` package: its
linear layers ship with it; the backbone (AlexNet by default) comes from torchvision's model hub, or from a local
file with --backbone_weights. `--metric l1` is a dependency-free fallback, labelled as such in the output and
reported on the [0, 1] image scale (the mean absolute difference of the saved PNGs divided by 255).
"""
import argparse
import logging
import os
import sys
import warnings

import numpy as np
import torch
import torchvision
from PIL import Image
from tqdm import tqdm

if not __package__:  # run as `python scripts/eval/diversity.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from util.run.atomic import write_json
from util.run.checkpoint import describe_mismatch, layout_mismatch, load_file
from util.process.devices import resolve_device
from scripts.eval.pairwise_distances import (L1_LABEL, L1_SCALE, lpips_distance, mean_pairwise_distance,
                                             mean_pairwise_l1)
from util.run.result_files import find_numbered_images, images_dir
from scripts.eval.weights import local_weights

log = logging.getLogger("diversity")

# lpips backbone name -> (torchvision builder, weights enum the lpips package was calibrated with)
BACKBONES = {"alex": ("alexnet", "AlexNet_Weights"), "vgg": ("vgg16", "VGG16_Weights"),
             "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}
LPIPS_SCALE = "LPIPS distance (images given to the metric on its [-1, 1] scale)"


def backbone_weights_path(net="alex", path=None, download=True):
    """A local file of the torchvision backbone weights LPIPS needs: given, cached by torch.hub, or downloaded."""
    _, enum_name = BACKBONES[net]
    url = getattr(torchvision.models, enum_name).IMAGENET1K_V1.url
    return local_weights(url, path=path, flag="--backbone_weights", what="LPIPS backbone weights",
                         download=download, alternative=" (or use --metric l1, a dependency-free fallback that is not LPIPS)")


def load_linear_layers(metric, path):
    """The calibrated linear layers (`lin*`) of an `lpips.LPIPS` metric from `path`, loaded without running code
    from the file (util.run.checkpoint.load_file)."""
    state = load_file(path, "LPIPS linear-layer weights")
    def linear_of(state_dict):  # lin0.model.1.weight, ... (lpips keeps the same layers again under lins.N)
        return {k: v for k, v in state_dict.items() if k.startswith("lin") and not k.startswith("lins.")}

    linear = linear_of(state)
    mismatch = layout_mismatch(linear_of(metric.state_dict()), linear)
    if mismatch:
        raise ValueError(f"--lpips_weights {path} does not fit the LPIPS linear layers: {describe_mismatch(mismatch)}")
    metric.load_state_dict(linear, strict=False)


def build_lpips(net="alex", lpips_weights=None, backbone_weights=None, download=True):
    """An `lpips.LPIPS` metric whose backbone is loaded from a local file (no implicit download inside lpips)."""
    import lpips
    if net not in BACKBONES:
        raise ValueError(f"--net {net} is not one of {', '.join(BACKBONES)}")
    if lpips_weights is not None and not os.path.isfile(lpips_weights):
        raise FileNotFoundError(f"--lpips_weights {lpips_weights} does not exist (the package's own "
                                f"lpips/weights/v0.1/{net}.pth is used when the flag is left out)")
    backbone_path = backbone_weights_path(net, backbone_weights, download=download)
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        metric = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, verbose=False)
    load_linear_layers(metric, lpips_weights or os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1",
                                                             f"{net}.pth"))
    state = load_file(backbone_path, "LPIPS backbone weights")
    # lpips keeps the backbone's feature layers in slices whose children are named by their index in the
    # torchvision model's `features`, so each layer takes the weights stored under `features.<index>.`.
    for slice_module in metric.net.children():
        for index, layer in slice_module.named_children():
            prefix = f"features.{index}."
            layer_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                layer.load_state_dict(layer_state)
            except RuntimeError as err:
                raise ValueError(f"{backbone_path} is not a torchvision {BACKBONES[net][0]} state_dict "
                                 f"(layer features.{index}): {str(err)[:300]}") from None
    return metric.eval().requires_grad_(False)


def load_samples(paths, device):
    images = []
    for path in paths:
        with Image.open(path) as img:
            images.append(np.asarray(img.convert("RGB")))
    if len({a.shape for a in images}) > 1:
        raise ValueError(f"the samples of one input differ in size: {paths[0]} ...")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return (x / 255.0).to(device)  # [0, 1]: the scale L1 is reported on (LPIPS gets [-1, 1] from lpips_distance)


@torch.no_grad()
def diversity(groups, distance="lpips", metric=None, batch_size=32, device="cpu"):
    """{stem: mean pairwise distance} over the given sample groups."""
    scores = {}
    for stem, paths in tqdm(groups.items(), desc="inputs", unit="input"):
        samples = load_samples(paths, device)
        if distance == "l1":
            scores[stem] = mean_pairwise_l1(samples, batch_size=batch_size)
        else:
            scores[stem] = mean_pairwise_distance(samples, lpips_distance(metric), batch_size)
    return scores


def select(groups, num_inputs, num_samples):
    short = {s: len(p) for s, p in groups.items() if len(p) < num_samples}
    if short:
        stem, n = next(iter(short.items()))
        raise ValueError(f"{len(short)} inputs have fewer than --num_samples {num_samples} samples (e.g. {stem}: {n}): "
                         f"run test.py with --n_samples {num_samples} or lower --num_samples")
    if len(groups) < num_inputs:
        log.warning("only %d inputs found (asked for %d; the paper uses 100)", len(groups), num_inputs)
    return {s: p[:num_samples] for s, p in list(groups.items())[:num_inputs]}


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_dir", required=True, help="a test.py result folder written with --n_samples K")
    p.add_argument("--label", default="fake_B", help="visual name of the samples: files <stem>_<label>_<k>.png")
    p.add_argument("--num_inputs", type=int, default=100, help="inputs to average over (paper: 100)")
    p.add_argument("--num_samples", type=int, default=20, help="samples per input (paper: 20)")
    p.add_argument("--metric", default="lpips", choices=("lpips", "l1"),
                   help="lpips, or l1: a dependency-free fallback on the [0, 1] image scale that is not comparable "
                        "with papers")
    p.add_argument("--net", default="alex", choices=tuple(BACKBONES), help="LPIPS backbone")
    p.add_argument("--lpips_weights", default=None, help="LPIPS linear-layer weights (default: the package's own)")
    p.add_argument("--backbone_weights", default=None,
                   help="local torchvision weights of the backbone (offline machines), e.g. alexnet-owt-7be5be79.pth")
    p.add_argument("--batch_size", type=int, default=32, help="image pairs per LPIPS batch")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--out", default=None, help="JSON output (default: <results_dir>/diversity.json)")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.num_samples < 2:
        raise ValueError(f"--num_samples must be at least 2 for pairwise distances, got {args.num_samples}")

    directory = images_dir(args.results_dir)
    groups = find_numbered_images(directory, args.label)
    if not groups:
        raise FileNotFoundError(f"no '*_{args.label}_<k>.png' samples in {directory}: run test.py with --n_samples K "
                                "(SEGAN) and check --results_dir and --label")
    groups = select(groups, args.num_inputs, args.num_samples)
    device = resolve_device(args.device)
    metric = None
    if args.metric == "lpips":
        metric = build_lpips(args.net, args.lpips_weights, args.backbone_weights).to(device)
    scores = diversity(groups, args.metric, metric, args.batch_size, device)
    values = np.array(list(scores.values()))
    name = f"lpips-{args.net}-v0.1" if args.metric == "lpips" else L1_LABEL
    scale = LPIPS_SCALE if args.metric == "lpips" else L1_SCALE
    payload = dict(results_dir=args.results_dir, metric=name, scale=scale, mean=float(values.mean()),
                   std=float(values.std()), n_inputs=len(scores), n_samples=args.num_samples, per_input=scores)
    out = args.out or os.path.join(args.results_dir, "diversity.json")
    write_json(out, payload)
    log.info("%s diversity %.4f ± %.4f (%s) over %d inputs x %d samples -> %s", name, payload["mean"],
             payload["std"], scale, len(scores), args.num_samples, out)
    return payload


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: main() and 0)  # one-line errors for users; main() returns its results for tests
