"""Tensor <-> image conversion, atomic PNG writing and labelled image grids for the dashboard and test.py."""
import os

import numpy as np
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from util.run.atomic import atomic_write


def tensor2im(t, imtype=np.uint8, index=0):
    """One image of a batch in [-1, 1] -> HWC array in [0, 255] with 3 channels.

    `t` is (B, C, H, W) or (C, H, W), a tensor or a float array; a uint8 HWC array (already an image)
    passes through. One channel is repeated to three, a fourth (alpha) channel is dropped.
    """
    if isinstance(t, np.ndarray) and t.dtype == np.uint8 and t.ndim == 3 and t.shape[-1] in (1, 3, 4):
        return _to_rgb(t).astype(imtype)
    is_tensor = hasattr(t, "detach")  # duck-typed, so scripts that only plot need not import torch
    if not (is_tensor or isinstance(t, np.ndarray)):
        raise TypeError(f"tensor2im expects a tensor or an array, got {type(t).__name__}")
    if t.ndim == 4:
        if not 0 <= index < t.shape[0]:
            raise ValueError(f"tensor2im: index {index} is out of range for a batch of {t.shape[0]}")
        t = t[index]  # before the device copy: only this image leaves the GPU
    if is_tensor:
        t = t.detach().float().cpu().numpy()
    if t.ndim != 3:
        raise ValueError(f"tensor2im expects (B, C, H, W) or (C, H, W), got shape {tuple(t.shape)}")
    if t.shape[0] not in (1, 3, 4):
        raise ValueError(f"tensor2im: an image needs 1, 3 or 4 channels, got {t.shape[0]} "
                         f"(shape {tuple(t.shape)}); show a channel subset instead")
    chw = np.clip((t.astype(np.float32) + 1.0) * 127.5, 0.0, 255.0)
    hwc = rearrange(chw, "c h w -> h w c")
    return _to_rgb(np.rint(hwc)).astype(imtype)


def _to_rgb(hwc):
    channels = hwc.shape[-1]
    if channels == 1:
        return np.repeat(hwc, 3, axis=-1)
    if channels == 4:
        return hwc[..., :3]
    return hwc


def resize_for_aspect(image, aspect_ratio=1.0):
    """pix2pix's --aspect_ratio: > 1 widens the image, < 1 makes it taller (bicubic)."""
    if aspect_ratio <= 0:
        raise ValueError(f"aspect_ratio must be positive, got {aspect_ratio}")
    if aspect_ratio == 1.0:
        return image
    h, w = image.shape[:2]
    size = (int(round(w * aspect_ratio)), h) if aspect_ratio > 1.0 else (w, int(round(h / aspect_ratio)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def save_image(array, path, aspect_ratio=1.0):
    """Write an HWC uint8 array as an image file, atomically (util.run.atomic)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"save_image expects an HW or HWC uint8 array for {path}, "
                         f"got {array.dtype} with shape {array.shape}; convert with tensor2im first")
    image = Image.fromarray(resize_for_aspect(array, aspect_ratio))
    suffix = os.path.splitext(path)[1] or ".png"
    atomic_write(path, lambda handle: image.save(handle, format=Image.registered_extensions().get(suffix.lower(), "PNG")))


def _fit(image, size):
    """Resize an HWC image to (height, width) when it differs (nearest, so maps stay crisp)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.NEAREST))


def make_grid(images, labels=None, ncols=4, padding=2, background=255, min_tile=0, font_size=14):
    """Tile HWC uint8 images into one HWC uint8 image, `ncols` per row, each with its label above it.

    Images are resized to the size of the first one, so visuals of different sizes (e.g. a
    discriminator map) still share a grid. Tiles smaller than `min_tile` pixels are enlarged by a
    whole factor (nearest), so small training crops stay readable next to their labels.
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"make_grid got {len(images)} images but {len(labels)} labels")
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    tile_h, tile_w = images[0].shape[:2]
    scale = max(1, int(min_tile) // max(tile_h, tile_w))
    tile_h, tile_w = tile_h * scale, tile_w * scale
    tiles = [_fit(np.asarray(im, dtype=np.uint8), (tile_h, tile_w)) for im in images]
    font = _font(font_size)
    label_h = 0
    if labels:
        label_h = max(_text_size(font, text)[1] for text in labels) + 2 * padding
    ncols = min(ncols, len(tiles))
    nrows = -(-len(tiles) // ncols)
    cell_h, cell_w = tile_h + label_h + padding, tile_w + padding
    canvas = Image.new("RGB", (ncols * cell_w + padding, nrows * cell_h + padding), (background,) * 3)
    draw = ImageDraw.Draw(canvas)
    for k, tile in enumerate(tiles):
        row, col = divmod(k, ncols)
        x, y = padding + col * cell_w, padding + row * cell_h
        if labels:
            text = _ellipsize(font, str(labels[k]), tile_w)
            draw.text((x, y + padding // 2), text, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(tile), (x, y + label_h))
    return np.asarray(canvas)


def _font(size):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _text_size(font, text):
    left, top, right, bottom = font.getbbox(text or " ")
    return right - left, bottom - top


def _ellipsize(font, text, width):
    """Shorten a label with '...' so it fits above its tile."""
    if _text_size(font, text)[0] <= width:
        return text
    while len(text) > 1 and _text_size(font, text + "...")[0] > width:
        text = text[:-1]
    return text + "..."
