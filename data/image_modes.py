"""Every pixel encoding a dataset file may hold, turned into one of three forms the transforms take.

`to_model_form(img, source, path)` gives
- "RGB" (8 bits per channel) for colour images: RGB, palette (`P`), CMYK (converted without a colour
  profile), YCbCr, LAB, HSV, and 16-bit colour, which Pillow reads at 8 bits per channel;
- "L" (8 bits) for 8-bit grayscale and bilevel (`1`) images;
- "F" (32-bit float, values in [0, 1]) for high-depth single-channel images, so their precision survives
  the resize and crop: a value v of an unsigned integer image becomes v / (the largest value its type
  holds), i.e. v / 65535 for 16 bits (`I;16`, `I;16B`, 16-bit TIFF or PPM) and v / (2**32 - 1) for
  unsigned 32-bit TIFF; signed 16- and 32-bit images are read as v / 32767 and v / (2**31 - 1) and refused
  when they hold negative values. Float images (`F`) must already hold values in [0, 1] (0 black,
  1 white) and are refused otherwise: no range is guessed from the data.

Values are never stretched to the image's own range: the scale is that of the stored type.
Transparency (`RGBA`, `LA`, `PA`, palette images with a transparent colour) is composited onto white,
as the image looks on a white page; `data.precheck` says so once per folder. The transforms then pick
the channels the network side wants (`to_channels`): colour to grayscale by ITU-R 601 luma, grayscale
to colour by repeating the channel.
"""
import numpy as np
from PIL import Image

# Full scale of the integer types Pillow loads into mode "I", by the raw mode the decoder reads
# (Pillow >= 10 opens 16-bit PNG as "I;16"; older versions as "I" with raw mode "I;16B").
_UNSIGNED_16 = 2**16 - 1
_SIGNED_16 = 2**15 - 1
_UNSIGNED_32 = 2**32 - 1
_SIGNED_32 = 2**31 - 1
_INT_SCALES = {
    "I;16": _UNSIGNED_16, "I;16B": _UNSIGNED_16, "I;16L": _UNSIGNED_16, "I;16N": _UNSIGNED_16,
    "I;16R": _UNSIGNED_16,
    "I;16S": _SIGNED_16, "I;16BS": _SIGNED_16, "I;16NS": _SIGNED_16,
    "I;32": _UNSIGNED_32, "I;32B": _UNSIGNED_32, "I;32L": _UNSIGNED_32, "I;32N": _UNSIGNED_32,
    "I;32S": _SIGNED_32, "I;32BS": _SIGNED_32, "I;32NS": _SIGNED_32, "I": _SIGNED_32,
}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
COLOUR_MODES = ("RGB", "RGBX", "P", "CMYK", "YCbCr", "LAB", "HSV")
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
MODEL_FORMS = ("RGB", "L", "F")
_WHITE = {"RGB": (255, 255, 255), "L": 255}
# What to do with a file the loader refuses.
_FIX = "or pass --skip_bad_images to skip such files"
# Float images may carry rounding noise just outside [0, 1] (e.g. 1.0000001 after a division).
_FLOAT_TOLERANCE = 1e-6


def source_of(img):
    """The raw mode the decoder reads (e.g. 'I;16B', 'RGB;16B', 'I;32S'), or '' when unknown.

    Call it on a freshly opened image, before `load()`, which drops the tile list it comes from.
    The TIFF decoder keeps it in the tile's arguments as (rawmode, ...); the PNG and PPM decoders as a string.
    """
    if not img.tile:
        return ""
    args = img.tile[0][3]
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def has_alpha(img):
    """True when `img` (opened, not necessarily decoded) carries transparency the loader composites."""
    return img.mode in ALPHA_MODES or (img.mode == "P" and "transparency" in img.info)


def is_deep_colour(source):
    """True when the decoder reads more than 8 bits per colour channel (Pillow keeps the top 8)."""
    return source.startswith(("RGB;16", "RGBA;16", "RGBX;16", "RGBa;16", "LA;16"))


def check_mode(img, source, path):
    """Raise ValueError when the loader has no conversion for the pixel mode of `img` (header only)."""
    if img.mode in COLOUR_MODES + ALPHA_MODES + SIXTEEN_BIT_MODES + ("1", "L", "F"):
        return
    if img.mode == "I" and (source in _INT_SCALES or img.format == "PPM"):
        return
    what = f"mode {img.mode}" + (f" (stored as {source})" if source else "")
    raise ValueError(f"image {path} has pixel {what}, which the loader cannot map to [0, 1]; save it as 8- or "
                     f"16-bit grayscale or RGB (e.g. PNG), or as a float TIFF with values in [0, 1], {_FIX}")


def _flatten(img, form):
    """`img` composited onto white in `form` ('RGB' or 'L') using its alpha channel."""
    alpha = img.getchannel("A")
    background = Image.new(form, img.size, _WHITE[form])
    background.paste(img.convert(form), mask=alpha)
    return background


def _integer_to_float(img, source, path):
    values = np.asarray(img)
    if img.mode == "I" and img.format == "PPM":
        scale = _UNSIGNED_16  # Pillow scales PPM/PGM of any maxval above 255 to 16 bits
    elif img.mode in SIXTEEN_BIT_MODES:
        scale = _UNSIGNED_16
    else:
        scale = _INT_SCALES[source]
        if scale == _UNSIGNED_32:
            values = values.view(np.uint32)  # Pillow holds unsigned 32-bit values in a signed int32 mode
        elif values.size and values.min() < 0:
            raise ValueError(f"image {path} is a signed integer image holding negative values (min {values.min()}); "
                             f"the loader maps 0..{scale} to black..white and cannot place negative values; "
                             f"shift and save it as unsigned 16-bit, or as a float TIFF with values in [0, 1], {_FIX}")
    return Image.fromarray((values.astype(np.float64) / scale).astype(np.float32))


def _checked_float(img, path):
    values = np.asarray(img, dtype=np.float32)
    if values.size == 0:
        return img
    if not np.isfinite(values).all():
        raise ValueError(f"float image {path} holds NaN or infinite values; float images must hold values in "
                         f"[0, 1] (0 black, 1 white); fix or remove those pixels, {_FIX}")
    low, high = float(values.min()), float(values.max())
    if low < -_FLOAT_TOLERANCE or high > 1 + _FLOAT_TOLERANCE:
        raise ValueError(f"float image {path} holds values in [{low:g}, {high:g}]; float images must hold values "
                         f"in [0, 1] (0 black, 1 white), the loader does not guess another range; rescale it "
                         f"(e.g. divide by its maximum) or save it as 8- or 16-bit, {_FIX}")
    if low < 0 or high > 1:
        return Image.fromarray(np.clip(values, 0, 1))
    return img


def to_model_form(img, source, path):
    """The decoded `img` as 'RGB', 'L' or 'F' (see the module docstring); `source` from `source_of`.

    Raises ValueError naming `path` for a mode without a conversion or values outside the stated range.
    """
    check_mode(img, source, path)
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode == "F":
        return _checked_float(img, path)
    if mode == "I" or mode in SIXTEEN_BIT_MODES:
        return _integer_to_float(img, source, path)
    if mode == "1":
        return img.convert("L")
    if has_alpha(img):
        grey = mode in ("LA", "La")
        return _flatten(img.convert("LA" if grey else "RGBA"), "L" if grey else "RGB")
    return img.convert("RGB")  # palette, CMYK, YCbCr, LAB, HSV, RGBX


def to_channels(img, channels):
    """A model-form image (RGB, L or F) with `channels` (1 or 3); 'F' stays 'F' (see `tensor_channels`)."""
    if channels == 1:
        return img if img.mode in ("L", "F") else img.convert("L")
    return img if img.mode in ("RGB", "F") else img.convert("RGB")


def tensor_channels(tensor, channels, float_source):
    """A (C, H, W) tensor in [0, 1] from `to_tensor` with `channels` channels.

    Float images are clamped (a bicubic resize may overshoot [0, 1], as 8-bit images are clamped to 0..255)
    and a single float channel is repeated when the network side is RGB.
    """
    if float_source:
        tensor = tensor.clamp(0.0, 1.0)
    if tensor.shape[0] == 1 and channels == 3:
        tensor = tensor.repeat(3, 1, 1)
    return tensor
