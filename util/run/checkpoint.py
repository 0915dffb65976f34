"""Checkpoint files: atomic torch.save, loading with clear errors, and the one report of how a state_dict
differs from the network (or layout) it should fit."""
import os
import pickle
import re
from collections import namedtuple

import torch

from util.run.atomic import atomic_write


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically (util.run.atomic: a failed write keeps the previous file)."""
    atomic_write(path, lambda handle: torch.save(obj, handle))


class UnsafeFile(RuntimeError):
    """A file holds more than tensors and plain values, so it was not loaded; the message names it."""
    refusal = True  # util.command_line.cli: no traceback hint


def numpy_array_globals():
    """What unpickling a plain numpy array needs (its data stay data): training states written before the RNG
    state was stored as tensors hold numpy's."""
    import numpy as np
    multiarray = getattr(np, "_core", None) or np.core
    return [multiarray.multiarray._reconstruct, np.ndarray, np.dtype, *(
        type(np.dtype(code)) for code in ("uint32", "int64", "float64"))]


def load_file(path, what="checkpoint", *, mmap=False, numpy_arrays=False):
    """torch.load on the CPU with weights_only=True: tensors and plain Python values only (plus plain numpy
    arrays with `numpy_arrays`), so a file from someone else cannot run code while it is read. A missing,
    unreadable or unsafe file is a RuntimeError (or FileNotFoundError) that names it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with torch.serialization.safe_globals(numpy_array_globals() if numpy_arrays else []):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        culprit = f" ({found.group(1)})" if found else ""
        raise UnsafeFile(f"{what} {path} was refused: it holds Python objects{culprit} beyond tensors and plain "
                           f"values, and reading them could run code. Nothing in it was run. Use weights saved as a "
                           f"plain state_dict (torch.save(net.state_dict(), path)); files written by train.py are "
                           f"of that kind.") from None
    except Exception as err:  # truncated zip, foreign file, ...
        raise RuntimeError(f"{what} {path} is unreadable ({type(err).__name__}: {err}); "
                           f"it may be truncated. Use another --epoch or retrain.") from err


def layout_of(state_or_module):
    """{key: shape tuple} of a module, a state_dict or an already made layout."""
    if isinstance(state_or_module, torch.nn.Module):
        state_or_module = state_or_module.state_dict()
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in state_or_module.items()}


Mismatch = namedtuple("Mismatch", "missing unexpected misshaped")
Mismatch.__bool__ = lambda self: bool(self.missing or self.unexpected or self.misshaped)


def layout_mismatch(expected, found):
    """How `found` differs from `expected` (each a module, state_dict or {key: shape}): a `Mismatch` of missing
    keys, unexpected keys and 'key: checkpoint (..) vs model (..)' lines; false when `found` loads into `expected`."""
    want, have = layout_of(expected), layout_of(found)
    return Mismatch(missing=[k for k in want if k not in have],
                    unexpected=[k for k in have if k not in want],
                    misshaped=[f"{k}: checkpoint {have[k]} vs model {want[k]}"
                               for k in want if k in have and have[k] != want[k]])


def describe_mismatch(mismatch, limit=10):
    """One line per kind of difference, the first `limit` entries of each."""
    parts = []
    for title, items in (("missing keys", mismatch.missing), ("unexpected keys", mismatch.unexpected),
                         ("wrong shapes", mismatch.misshaped)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{len(items)} {title}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)


def stored_value(value):
    """An option as stored in a run (JSON): a list there was a tuple flag (e.g. --dim_mults 1,2,4,8)."""
    return tuple(value) if isinstance(value, list) else value


def option_differences(stored, current):
    """(key, stored value, current value) for each key of `current` that `stored` holds with another value."""
    return [(key, stored_value(stored[key]), value) for key, value in current.items()
            if key in stored and stored_value(stored[key]) != value]


def strip_module_prefix(state_dict):
    """Drop a leading 'module.' that DataParallel/DDP wrappers add to every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def nonfinite_tensors(tensors, limit=5):
    """Names of the floating-point tensors of `tensors` ({name: tensor}, nested dicts and lists too) that hold
    NaN or infinite values, at most `limit`."""
    found = []

    def visit(name, value):
        if len(found) >= limit:
            return
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
                found.append(name)
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(f"{name}.{key}" if name else str(key), item)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f"{name}[{i}]", item)

    visit("", tensors)
    return found


def check_finite(tensors, path, what="checkpoint"):
    """Raise a RuntimeError naming `path` and the tensors when `tensors` hold NaN or infinite values."""
    bad = nonfinite_tensors(tensors)
    if bad:
        raise RuntimeError(f"{what} {path} holds non-finite values (NaN or inf) in {', '.join(bad)}: the run had "
                           f"diverged when it was saved. Use an earlier checkpoint (--epoch N, from the *_net_*.pth "
                           f"or *_train_state.pth files in its folder) or retrain with a lower --lr.")
