"""Test-time memory, estimated before it is used.

A model's `inference_memory(height, width, batch)` (BaseModel) estimates the peak bytes of its translator on a batch
of inputs padded to (height, width): the tensors alive at once during one translation of a small input that the
size rule takes (counted op by op, `LiveBytes`), per pixel, times the padded area and the batch. Convolution
activations grow with the area, so this is the whole estimate for the pix2pix and SEGAN generators; a model with
terms that grow faster adds them (ATME: the full attention at the U-Net's lowest level, `attention_bytes`).

`check_memory(model, height, width, batch, tile, overlap)` compares the estimate (of a tile, plus the image-sized
buffers, with tiles) with what the device has left (util.process.devices.available_memory) and raises
`MemoryRefusal` naming the largest `--tile` that fits, before anything is allocated.
"""
import contextlib
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models import inference
from util.process.devices import available_memory

PROBE_SIDE = 64  # the probe's input: the smallest square the size rule takes from this side up
TILE_CANDIDATES = (1024, 768, 512, 384, 256, 128, 64)  # tiles a refusal may suggest, largest first


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages that torch operations create while it is active, and their peak: a
    storage counts until the tensor that created it is freed."""

    def __init__(self):
        super().__init__()
        self.live, self.now, self.peak = {}, 0, 0

    def _free(self, key):
        self.now -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key and key not in self.live:
                self.live[key] = storage.nbytes()
                self.now += storage.nbytes()
                self.peak = max(self.peak, self.now)
                weakref.finalize(tensor, self._free, key)
        return out


def probe(translate, x):
    """(peak bytes alive at once while `translate(x)` runs, beyond x; bytes of its outputs) without gradients.
    Compiled networks (--compile) run eagerly here: the count is of the operations, and nothing is compiled for
    the probe's size."""
    eager = torch.compiler.set_stance("force_eager") if hasattr(torch.compiler, "set_stance") else \
        contextlib.nullcontext()
    with eager, torch.no_grad(), LiveBytes() as counter:
        outputs = translate(x)
    return counter.peak, sum(t.numel() * t.element_size() for t in outputs.values())


def attention_bytes(batch, heads, positions, itemsize=4):
    """Full softmax attention over `positions` holds its similarity matrix and its softmax at once, each
    (batch, heads, positions, positions)."""
    return 2 * batch * heads * positions * positions * itemsize


class MemoryRefusal(RuntimeError):
    """The estimated peak exceeds the memory available; `tile` is the largest --tile that fits (or None)."""
    refusal = True  # util.command_line.cli: no traceback hint

    def __init__(self, message, tile):
        super().__init__(message)
        self.tile = tile

    def with_command(self, command):
        """The same refusal ending with the command that runs in tiles, to paste."""
        return MemoryRefusal(f"{self}\n  {command}", self.tile)


def gib(n):
    return f"{n / 2 ** 30:.2f} GiB"


def estimate(model, height, width, batch=1, tile=0, overlap=0):
    """Estimated peak bytes of the model's test step on a batch of (height, width) images: padded to its size
    rule, whole or in `tile` tiles (then also the padded input and the blended outputs, image-sized)."""
    rule = model.size_rule()
    height, width = inference.padded_side(height, rule), inference.padded_side(width, rule)
    if not tile:
        return model.inference_memory(height, width, batch)
    _, output_per_pixel = model.memory_rates()
    image = batch * height * width
    buffers = image * (4 * getattr(model.opt, "input_nc", 3) + output_per_pixel + 4)  # input, sums, weights
    return model.inference_memory(min(tile, height), min(tile, width), batch) + buffers


def fitting_tile(model, height, width, batch, available):
    """The largest tile of TILE_CANDIDATES (each made to suit the size rule) smaller than the image whose
    estimate fits in `available` bytes, or None."""
    rule = model.size_rule()
    largest = max(inference.padded_side(height, rule), inference.padded_side(width, rule))
    for candidate in TILE_CANDIDATES:
        tile = inference.padded_side(candidate, rule)
        if tile < largest and estimate(model, height, width, batch, tile, tile // 4) <= available:
            return tile
    return None


def check_memory(model, height, width, batch=1, tile=0, overlap=0, available=None):
    """Raise MemoryRefusal, naming the --tile that fits, when the estimated peak of translating a batch of
    (height, width) images exceeds the memory available on the model's device; return the estimate."""
    needed = estimate(model, height, width, batch, tile, overlap)
    available = available_memory(model.device) if available is None else available
    if available is None or needed <= available:
        return needed
    fits = fitting_tile(model, height, width, batch, available)
    where = f"{model.device.type.upper() if model.device.type == 'cuda' else 'this machine'}"
    what = f"{width}x{height} image{'s' if batch > 1 else ''}" + (f" in --tile {tile} tiles" if tile else "")
    advice = (f"run it with --tile {fits} (estimated {gib(estimate(model, height, width, batch, fits, fits // 4))})"
              if fits else "no tile size fits either; free memory or use a machine with more")
    raise MemoryRefusal(f"translating a batch of {batch} {what} needs an estimated {gib(needed)} at its peak, and "
                        f"{where} has {gib(available)} available: nothing was run. {advice[0].upper() + advice[1:]}; "
                        f"docs/inference.md gives the estimate's formula.", fits)
