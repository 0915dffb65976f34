"""Metric helpers: L1/PSNR for validation, FCN scores on Cityscapes, pairwise diversity.

Images are tensors in [-1, 1] shaped (B, C, H, W). Running sums stay on the device of the images, so a
validation loop does not synchronise with the host once per batch; `compute()` syncs once at the end.
"""
import json
import logging
import math
import os
import tempfile

import numpy as np
import torch
import torch.distributed as dist
from einops import reduce

log = logging.getLogger(__name__)

IGNORE_LABEL = 255

# The 19 Cityscapes training classes in train-id order, with the colours of the official palette.
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
CITYSCAPES_TRAIN_COLORS = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                           (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                           (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                           (0, 80, 100), (0, 0, 230), (119, 11, 32))
# Colours of the classes that are not evaluated (unlabeled/ego vehicle, dynamic, ground, parking, rail track,
# guard rail, bridge, tunnel, caravan, trailer). They are part of the palette so that such pixels snap to
# "ignore" instead of to the nearest evaluated class. (polegroup and license plate share the colours of pole
# and car and are therefore indistinguishable in a colour label image.)
CITYSCAPES_VOID_COLORS = ((0, 0, 0), (111, 74, 0), (81, 0, 81), (250, 170, 160), (230, 150, 140),
                          (180, 165, 180), (150, 100, 100), (150, 120, 90), (0, 0, 90), (0, 0, 110))


# ----------------------------------------------------------------------------------------- L1 and PSNR
def _check_pair(fake, real):
    if fake.shape != real.shape:
        raise ValueError(f"fake and real images differ in shape: {tuple(fake.shape)} vs {tuple(real.shape)}")
    if fake.dim() != 4:
        raise ValueError(f"expected image batches shaped (B, C, H, W), got {tuple(fake.shape)}")


def batch_l1(fake, real):
    """Mean absolute error per image, (B,)."""
    _check_pair(fake, real)
    return reduce((fake.float() - real.float()).abs(), "b c h w -> b", "mean")


def batch_psnr(fake, real, data_range=2.0, eps=1e-10):
    """PSNR in dB per image, (B,); `data_range` 2 for images in [-1, 1]. `eps` bounds identical images
    (about 106 dB) so that a mean over a data set stays finite."""
    _check_pair(fake, real)
    mse = reduce((fake.float() - real.float()) ** 2, "b c h w -> b", "mean")
    return 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(eps))


class RunningMean:
    """Sum and count kept as tensors on the values' device; one host sync in `compute()`."""

    def __init__(self):
        self.total = None
        self.count = None

    def update(self, values):
        values = values.detach().double().flatten()
        if self.total is None:
            self.total = values.sum()
            self.count = torch.tensor(values.numel(), dtype=torch.float64, device=values.device)
        else:
            self.total = self.total + values.sum()
            self.count = self.count + values.numel()

    def reduced(self):
        """(total, count) summed over all ranks when torch.distributed is running."""
        if self.total is None:
            return 0.0, 0
        pair = torch.stack([self.total, self.count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(pair)
        total, count = pair.tolist()
        return total, int(count)

    def compute(self):
        total, count = self.reduced()
        return total / count if count else float("nan")


@torch.no_grad()
def evaluate_model(model, dataloader, max_batches=None):
    """Mean L1 and PSNR of `model.fake_B` against `model.real_B` over `dataloader`.

    Runs `model.set_input(batch); model.test()` per batch. The caller chooses train/eval mode (pix2pix keeps
    dropout on at test time unless `--eval`). Returns dict(l1=..., psnr=..., n_images=...); under
    torch.distributed the sums are reduced over all ranks.
    """
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be None or >= 1, got {max_batches}")
    l1, psnr = RunningMean(), RunningMean()
    for i, batch in enumerate(dataloader):
        if max_batches is not None and i >= max_batches:
            break
        model.set_input(batch)
        model.test()
        for name in ("fake_B", "real_B"):
            if getattr(model, name, None) is None:
                raise RuntimeError(f"{type(model).__name__} has no {name} after test(): evaluate_model needs a model "
                                   "that sets fake_B and real_B (paired data, e.g. --dataset_mode aligned)")
        fake, real = model.fake_B, model.real_B.to(model.fake_B.device)
        l1.update(batch_l1(fake, real))
        psnr.update(batch_psnr(fake, real))
    _, n_images = l1.reduced()
    if n_images == 0:
        raise ValueError("evaluate_model got an empty data loader: check the validation split (--phase val)")
    return dict(l1=l1.compute(), psnr=psnr.compute(), n_images=n_images)


# ----------------------------------------------------------------------------------------- FCN scores
class ConfusionMatrix:
    """Counts of (ground truth, prediction) pixel pairs; rows are ground truth, columns prediction.

    Ground-truth pixels equal to `ignore_index` are skipped. Counting uses `bincount` on the device of the
    labels, so updating it does not sync with the host.
    """

    def __init__(self, num_classes, ignore_index=IGNORE_LABEL, device=None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred, target):
        pred, target = torch.as_tensor(pred), torch.as_tensor(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction and label maps differ in shape: {tuple(pred.shape)} vs "
                             f"{tuple(target.shape)}")
        pred = pred.to(self.matrix.device, torch.int64).flatten()
        target = target.to(self.matrix.device, torch.int64).flatten()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        n = self.num_classes
        # Out-of-range ids are a caller bug (wrong --num_classes or an unmapped label); checking them costs a
        # sync, which is fine at evaluation time.
        if target.numel() and (target.min() < 0 or target.max() >= n):
            raise ValueError(f"label ids must be in [0, {n}) or {self.ignore_index} (ignored); got values in "
                             f"[{int(target.min())}, {int(target.max())}]")
        if pred.numel() and (pred.min() < 0 or pred.max() >= n):
            raise ValueError(f"predicted ids must be in [0, {n}); got values in [{int(pred.min())}, "
                             f"{int(pred.max())}]: does the segmentation network have {n} classes?")
        self.matrix += torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        return self


def fcn_scores(conf):
    """Per-pixel accuracy, per-class accuracy and class IoU (mean and per class) from a confusion matrix.

    As in the pix2pix FCN evaluation: per-class accuracy and IoU average over the classes where they are
    defined (a class absent from both labels and predictions has no IoU; a class absent from the labels has
    no accuracy); undefined per-class values are reported as None.
    """
    matrix = conf.matrix if isinstance(conf, ConfusionMatrix) else torch.as_tensor(conf)
    hist = matrix.detach().cpu().double().numpy()
    if hist.ndim != 2 or hist.shape[0] != hist.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {hist.shape}")
    total = hist.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty: every label pixel was ignored or nothing was scored")
    diag = np.diag(hist)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = diag / hist.sum(axis=1)
        class_iou = diag / (hist.sum(axis=1) + hist.sum(axis=0) - diag)

    def _listed(values):
        return [None if math.isnan(v) else float(v) for v in values]

    return dict(per_pixel_acc=float(diag.sum() / total),
                per_class_acc=float(np.nanmean(class_acc)),
                mean_iou=float(np.nanmean(class_iou)),
                class_acc=_listed(class_acc),
                class_iou=_listed(class_iou),
                n_pixels=int(total))


def colors_to_train_ids(image, max_distance=60.0):
    """Cityscapes colour label image (H, W, 3) uint8 -> train ids (H, W) int64 (255 = ignore).

    Each pixel takes the nearest palette colour (JPEG-compressed label images, as in the pix2pix archives,
    are not exact); void colours and pixels farther than `max_distance` (Euclidean, RGB units) from every
    palette colour become 255.
    """
    pixels = torch.as_tensor(np.asarray(image))
    if pixels.dim() != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"expected a colour label image shaped (H, W, 3), got {tuple(pixels.shape)}")
    palette = torch.tensor(CITYSCAPES_TRAIN_COLORS + CITYSCAPES_VOID_COLORS, dtype=torch.float32)
    ids = torch.tensor(list(range(len(CITYSCAPES_TRAIN_COLORS))) + [IGNORE_LABEL] * len(CITYSCAPES_VOID_COLORS))
    flat = pixels.reshape(-1, 3).float()
    distance = torch.cdist(flat, palette)  # (H*W, palette)
    best, nearest = distance.min(dim=1)
    train_ids = ids[nearest]
    train_ids[best > max_distance] = IGNORE_LABEL
    return train_ids.reshape(pixels.shape[:2]).to(torch.int64)


def train_ids_to_colors(train_ids):
    """Train ids (H, W) -> colour image (H, W, 3) uint8; ignore and unknown ids are black."""
    ids = torch.as_tensor(np.asarray(train_ids)).to(torch.int64)
    palette = torch.tensor(CITYSCAPES_TRAIN_COLORS + ((0, 0, 0),), dtype=torch.uint8)
    ids = torch.where((ids >= 0) & (ids < len(CITYSCAPES_TRAIN_COLORS)), ids, len(CITYSCAPES_TRAIN_COLORS))
    return palette[ids].numpy()


# ----------------------------------------------------------------------------------------- diversity
def pairwise_indices(k, device=None):
    """All index pairs (i, j) with i < j among k samples, as two (k*(k-1)/2,) tensors."""
    if k < 2:
        raise ValueError(f"pairwise distances need at least 2 samples per input, got {k}")
    pairs = torch.combinations(torch.arange(k, device=device), r=2)
    return pairs[:, 0], pairs[:, 1]


def mean_pairwise_distance(samples, distance_fn, batch_size=64):
    """Average of `distance_fn(x, y) -> (P,)` over all pairs of samples (K, C, H, W) of one input."""
    first, second = pairwise_indices(samples.shape[0], device=samples.device)
    total = samples.new_zeros((), dtype=torch.float64)
    for start in range(0, first.numel(), batch_size):
        i, j = first[start:start + batch_size], second[start:start + batch_size]
        total = total + distance_fn(samples[i], samples[j]).double().sum()
    return float(total / first.numel())


def mean_pairwise_l1(samples, batch_size=64):
    """Mean L1 distance over all pairs of samples (K, C, H, W) of one input.

    Dependency-free fallback for the LPIPS diversity score: it measures pixel differences, not perceptual
    ones, and is not comparable with the LPIPS numbers in papers.
    """
    if samples.dim() != 4:
        raise ValueError(f"expected samples shaped (K, C, H, W), got {tuple(samples.shape)}")
    return mean_pairwise_distance(samples, lambda x, y: batch_l1(x, y), batch_size=batch_size)


# ----------------------------------------------------------------------------------------- results files
def save_json(path, payload):
    """Write `payload` as indented JSON, atomically (temporary file in the same folder, then rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=directory)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
