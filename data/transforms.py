"""Resize, crop, flip and normalise, as in the pix2pix code base.

`get_params` draws the crop position and the flip from Python's `random`, so one draw can be applied to
both halves of a pair and `--seed` (which seeds `random` in the main process and in loader workers)
makes runs repeat. Images arrive from `data.image_folder.load_image` as 'RGB', 'L' or 'F' (float in [0, 1]);
the first step gives them the channels of the network side (`data.image_modes.to_channels`).
"""
import logging
import random
from functools import partial

import torchvision.transforms.functional as TF
from PIL import Image
from torchvision import transforms

from data.image_modes import tensor_channels, to_channels

log = logging.getLogger(__name__)

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
BICUBIC = Image.Resampling.BICUBIC
# Without a crop the output size follows the image; networks that halve the resolution need it divisible.
SIZE_MULTIPLE = 4
_warned_size_rounding = False


def check_preprocess(preprocess):
    """Raise ValueError unless `preprocess` is one of PREPROCESS_MODES."""
    if preprocess not in PREPROCESS_MODES:
        raise ValueError(f"--preprocess {preprocess!r} is not valid; use one of: {', '.join(PREPROCESS_MODES)}")


def loaded_size(preprocess, size, load_size, crop_size):
    """(width, height) of an image of `size` after the resize step and before the crop."""
    w, h = size
    if preprocess == "resize_and_crop":
        return load_size, load_size
    if preprocess.startswith("scale_width"):
        # As pix2pix: the height keeps the aspect ratio but never falls below the crop.
        return load_size, max(int(round(load_size * h / w)), crop_size)
    return w, h


def check_crop_fits(opt, size, path=None):
    """Raise ValueError when `--crop_size` exceeds the image of `size` after the resize step, or when test.py
    could not pad it: a side of 1 pixel has nothing to reflect (every generator here pads such a side)."""
    if not getattr(opt, "isTrain", True) and opt.preprocess == "none" and min(size) < 2 \
            and getattr(opt, "pad_mode", "reflect") == "reflect":
        where = f"image {path}" if path else "an image"
        raise ValueError(f"{where} is {size[0]}x{size[1]} (width x height): a side of 1 pixel cannot be padded by "
                         f"reflection to the size the generator takes; use --pad_mode replicate (or constant)")
    if "crop" not in opt.preprocess:
        return
    new_w, new_h = loaded_size(opt.preprocess, size, opt.load_size, opt.crop_size)
    if opt.crop_size > new_w or opt.crop_size > new_h:
        where = f"image {path} is {size[0]}x{size[1]}" if path else f"an image is {size[0]}x{size[1]}"
        raise ValueError(
            f"--crop_size {opt.crop_size} is larger than the image to crop from: {where} (width x height), "
            f"which --preprocess {opt.preprocess} with --load_size {opt.load_size} makes {new_w}x{new_h}; "
            f"lower --crop_size or raise --load_size")


def test_size_note(opt):
    """What `--preprocess` does to the size of test inputs, as a sentence naming the flag, or None for `none`
    (results keep each input's size: test.py pads the network input and crops the output back)."""
    check_preprocess(opt.preprocess)
    load, crop = opt.load_size, opt.crop_size
    does = {"resize_and_crop": f"resizes every input to {load}x{load} and crops {crop}x{crop} from it",
            "crop": f"crops {crop}x{crop} from every input",
            "scale_width": f"scales every input to a width of {load} (the height keeps the aspect ratio)",
            "scale_width_and_crop": f"scales every input to a width of {load} and crops {crop}x{crop} from it"}
    if opt.preprocess == "none":
        return None
    return (f"--preprocess {opt.preprocess} {does[opt.preprocess]}, so results have that size, not the input's; "
            f"pass --preprocess none to keep each image's size (the network input is padded, not resized)")


def get_params(opt, size, path=None):
    """Crop position and flip for an image of `size` (width, height): {'crop_pos': (x, y), 'flip': bool}."""
    check_preprocess(opt.preprocess)
    check_crop_fits(opt, size, path)
    new_w, new_h = loaded_size(opt.preprocess, size, opt.load_size, opt.crop_size)
    x = random.randint(0, max(0, new_w - opt.crop_size))
    y = random.randint(0, max(0, new_h - opt.crop_size))
    flip = random.random() > 0.5
    return {"crop_pos": (x, y), "flip": flip}


# ------------------------------------------------------------------ steps (module level so they pickle)
def _resize(img, size, method):
    return img if img.size == size else img.resize(size, resample=method)


def _scale_width(img, target_width, crop_size, method):
    size = loaded_size("scale_width", img.size, target_width, crop_size)
    return _resize(img, size, method)


def _crop(img, pos, crop_size):
    w, h = img.size
    if crop_size > w or crop_size > h:
        raise ValueError(f"--crop_size {crop_size} is larger than the {w}x{h} image to crop from; "
                         f"lower --crop_size or raise --load_size")
    if pos is None:  # no shared params: a crop of its own, still from Python's random
        pos = (random.randint(0, w - crop_size), random.randint(0, h - crop_size))
    x, y = pos
    return img.crop((x, y, x + crop_size, y + crop_size))


def _round_to_multiple(img, base, method):
    global _warned_size_rounding
    w, h = img.size
    new = (max(base, int(round(w / base)) * base), max(base, int(round(h / base)) * base))
    if new == (w, h):
        return img
    if not _warned_size_rounding:
        log.warning("image size %dx%d is not a multiple of %d; resizing to %dx%d (and likewise for other "
                    "images; this is reported once)", w, h, base, *new)
        _warned_size_rounding = True
    return img.resize(new, resample=method)


def _flip(img, flip):
    if flip is None:
        flip = random.random() > 0.5
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else img


def _to_tensor(img, channels):
    tensor = tensor_channels(TF.to_tensor(img), channels, float_source=img.mode == "F")
    # Per channel (x - 0.5) / 0.5: [0, 1] -> [-1, 1], the range of the generators' tanh output.
    return TF.normalize(tensor, [0.5] * channels, [0.5] * channels)


def get_transform(opt, params=None, grayscale=False, method=BICUBIC, convert=True):
    """The transform of pix2pix for `opt.preprocess` and `opt.no_flip`.

    With `params` (from `get_params`) the crop and flip are fixed, so several images can share them;
    without, each call draws its own. `grayscale`: one channel, else three. `convert=False` returns a PIL
    image instead of a tensor in [-1, 1] (mode 'F' for float images, whatever the channels).
    """
    check_preprocess(opt.preprocess)
    channels = 1 if grayscale else 3
    steps = [partial(to_channels, channels=channels)]
    if opt.preprocess == "resize_and_crop":
        steps.append(partial(_resize, size=(opt.load_size, opt.load_size), method=method))
    elif opt.preprocess.startswith("scale_width"):
        steps.append(partial(_scale_width, target_width=opt.load_size, crop_size=opt.crop_size, method=method))
    if "crop" in opt.preprocess:
        steps.append(partial(_crop, pos=None if params is None else params["crop_pos"], crop_size=opt.crop_size))
    elif getattr(opt, "isTrain", True):  # 'none' and 'scale_width' keep whatever height the image has
        # Training batches go through the generator as they are; test.py pads instead (models.inference).
        steps.append(partial(_round_to_multiple, base=SIZE_MULTIPLE, method=method))
    if not opt.no_flip:
        steps.append(partial(_flip, flip=None if params is None else params["flip"]))
    if convert:
        steps.append(partial(_to_tensor, channels=channels))
    return transforms.Compose(steps)

