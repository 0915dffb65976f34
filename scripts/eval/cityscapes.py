"""FCN scores on Cityscapes (pix2pix's labels -> photo evaluation): the palette, a confusion matrix and the
per-pixel / per-class accuracies and IoU computed from it."""
import math

import numpy as np
import torch

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
    pixels = torch.from_numpy(np.array(image))  # a copy: a PIL image's array is read-only
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
