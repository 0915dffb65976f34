"""The test-time path: any image size in, the same size out; large images in tiles.

A model's translator (`BaseModel.translator()`) maps a batch x (B, C, H, W) in [-1, 1], whose H and W suit the
model's `SizeRule`, to a dict {visual name: (B, C_k, H, W) tensor} of the same H and W. Here the input is padded
(`torch.nn.functional.pad`, reflection by default) to the next size the rule takes, the translator runs, and every
output is cropped back, so a result has exactly the input's width and height. Nothing is resized.

With a tile size, the padded image is cut into overlapping tiles that each go through the translator, and the
outputs are blended. Every tile starts at a multiple of the size rule's `multiple` (the overlap grows to the next
step that allows it), so a strided network (pooling, strided convolutions, a U-Net) sees each tile at the phase it
sees the whole image at. Across each overlap one tile's weight ramps down linearly while the next one's ramps up, and
the outer quarter of the overlap on each side is left to the neighbour alone (weight 0). So a network whose
receptive field reaches at most a quarter of the overlap gives the whole-image result; peak memory follows the
tile, and only the input and the blended outputs are image-sized.
"""
from collections import namedtuple

import torch
import torch.nn.functional as F

from util.arithmetic import round_up

# Image sides the translator takes: multiples of `multiple`, at least `min_size`; `description` names the network.
SizeRule = namedtuple("SizeRule", "multiple min_size description")
PAD_MODES = ("reflect", "replicate", "constant")  # constant pads with 0, mid-grey in [-1, 1]


def padded_side(side, rule):
    """The smallest side >= `side` that `rule` takes."""
    return round_up(max(side, rule.min_size), rule.multiple)


def pad_to(x, height, width, mode="reflect"):
    """Pad x (..., h, w) to (height, width), the extra split evenly between both sides (one more at the bottom and
    right when odd). Reflection further than the image reaches reflects the reflection (F.pad, repeated)."""
    if mode not in PAD_MODES:
        raise ValueError(f"unknown --pad_mode {mode!r}; choose one of: {', '.join(PAD_MODES)}")
    h, w = x.shape[-2:]
    if height < h or width < w:
        raise ValueError(f"cannot pad a {w}x{h} image to the smaller {width}x{height}")
    top, left = (height - h) // 2, (width - w) // 2
    todo = [left, width - w - left, top, height - h - top]  # F.pad order: left, right, top, bottom
    if mode != "reflect":
        return F.pad(x, todo, mode=mode) if any(todo) else x
    for side, need in ((w, todo[0] + todo[1]), (h, todo[2] + todo[3])):
        if need and side < 2:
            raise ValueError(f"a {w}x{h} image cannot be padded by reflection, which needs at least 2 pixels on the "
                             f"side to pad; use --pad_mode replicate (or constant)")
    while any(todo):
        h, w = x.shape[-2:]
        step = [min(todo[0], w - 1), min(todo[1], w - 1), min(todo[2], h - 1), min(todo[3], h - 1)]
        x = F.pad(x, step, mode="reflect")
        todo = [need - done for need, done in zip(todo, step)]
    return x


def _check_outputs(outputs, height, width):
    if not isinstance(outputs, dict) or not outputs:
        raise TypeError(f"a translator returns a dict of output tensors, got {type(outputs).__name__}")
    for name, tensor in outputs.items():
        if tensor.dim() != 4 or tuple(tensor.shape[-2:]) != (height, width):
            raise ValueError(f"the translator's output {name!r} has shape {tuple(tensor.shape)} for a {width}x{height} "
                             f"input; it must keep the input's height and width")
    return outputs


def run_padded(translate, x, rule, pad_mode="reflect"):
    """translate(x padded to `rule`), every output cropped back to x's height and width."""
    h, w = x.shape[-2:]
    height, width = padded_side(h, rule), padded_side(w, rule)
    padded = pad_to(x, height, width, pad_mode)
    outputs = _check_outputs(translate(padded), height, width)
    top, left = (height - h) // 2, (width - w) // 2
    return {name: tensor[..., top:top + h, left:left + w] for name, tensor in outputs.items()}


def check_tiles(rule, tile, overlap):
    """Raise ValueError, naming the flag and a value that works, unless tiles of `tile` with `overlap` suit `rule`."""
    if tile % rule.multiple or tile < rule.min_size:
        suggestion = padded_side(tile, rule)
        raise ValueError(f"--tile {tile} does not suit {rule.description}, which takes sides that are multiples of "
                         f"{rule.multiple} and at least {rule.min_size}; use e.g. --tile {suggestion}")
    if not 0 <= overlap <= tile - rule.multiple:
        raise ValueError(f"--tile_overlap must be at least 0 and at most --tile {tile} minus {rule.multiple} (tiles "
                         f"start at multiples of {rule.multiple} for {rule.description}), got {overlap}; "
                         f"e.g. --tile_overlap {tile // 4}")


def tile_starts(length, tile, overlap, multiple=1):
    """Start offsets of tiles of `tile` pixels along `length`, consecutive ones overlapping by at least `overlap`,
    each a multiple of `multiple` (with `length` and `tile` multiples of it, the last one, which ends at `length`,
    is too). One tile (of the whole length) when it fits."""
    if length <= tile:
        return [0]
    step = (tile - overlap) // multiple * multiple
    if step < 1:
        raise ValueError(f"tiles of {tile} overlapping by {overlap} cannot start at multiples of {multiple}")
    return list(range(0, length - tile, step)) + [length - tile]


def _ramp(length, overlap, device):
    """Weights rising from 0 to 1 over the first `overlap` of `length` pixels: 0 on the first quarter of the
    overlap, linear over its middle half, 1 after."""
    margin = overlap // 4
    position = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    return ((position - margin) / (overlap - 2 * margin)).clamp(0, 1)


def axis_weights(starts, index, size, device):
    """Blending weights (size,) of tile `index` among tiles at `starts`, each `size` long."""
    weights = torch.ones(size, device=device)
    before = starts[index - 1] + size - starts[index] if index > 0 else 0
    after = starts[index] + size - starts[index + 1] if index + 1 < len(starts) else 0
    if before:
        weights = torch.minimum(weights, _ramp(size, before, device))
    if after:
        weights = torch.minimum(weights, _ramp(size, after, device).flip(0))
    return weights


def run_tiled(translate, x, rule, tile, overlap, pad_mode="reflect"):
    """Like `run_padded`, with the padded image cut into `tile` x `tile` tiles overlapping by `overlap` pixels."""
    check_tiles(rule, tile, overlap)
    h, w = x.shape[-2:]
    height, width = padded_side(h, rule), padded_side(w, rule)
    padded = pad_to(x, height, width, pad_mode)
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = (tile_starts(side, tile, overlap, rule.multiple) for side in (height, width))
    sums, total = {}, torch.zeros((height, width), device=x.device)
    for i, y0 in enumerate(rows):
        weight_y = axis_weights(rows, i, tile_h, x.device)
        for j, x0 in enumerate(cols):
            weight = weight_y[:, None] * axis_weights(cols, j, tile_w, x.device)[None, :]
            piece = _check_outputs(translate(padded[..., y0:y0 + tile_h, x0:x0 + tile_w]), tile_h, tile_w)
            for name, tensor in piece.items():
                if name not in sums:
                    sums[name] = torch.zeros((*tensor.shape[:2], height, width), device=x.device)
                sums[name][..., y0:y0 + tile_h, x0:x0 + tile_w] += tensor.float() * weight
            total[y0:y0 + tile_h, x0:x0 + tile_w] += weight
            del piece
    top, left = (height - h) // 2, (width - w) // 2
    return {name: (value / total)[..., top:top + h, left:left + w] for name, value in sums.items()}


def run(translate, x, rule, pad_mode="reflect", tile=0, overlap=None):
    """The test-time path: `run_tiled` with a tile size (`overlap` None: a quarter of the tile), else `run_padded`."""
    if tile:
        return run_tiled(translate, x, rule, tile, tile // 4 if overlap is None else overlap, pad_mode)
    return run_padded(translate, x, rule, pad_mode)
