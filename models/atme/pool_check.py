"""Checks of a run's discriminator pool before a resume writes anything: the description `disc_pool.json`, both
buffers (and a kept `<epoch>_disc_pool.npy` a resume from `--epoch N` restores), each for readability, dtype,
shape against the dataset and the D map size, and values (finite; within [0, 1] for a pool of probabilities).
A refusal names the file, what is wrong and the command that recovers."""
import json
import os

import numpy as np

from models.atme.pool import BUFFERS, META_FILENAME, POOL_FILENAME

RECOVER = ("Resume with a fresh pool by adding --reset_pool to this command (the networks and optimisers resume; "
           "the maps restart from uniform noise, so the run departs from an uninterrupted one), or replace "
           "--continue_train with --start_over to move the run aside and start afresh (or train under another "
           "--name)")
_CHUNK = 1 << 22  # values checked at a time


class PoolError(ValueError):
    """A discriminator pool file a resume would read is unusable; the message names it and what to do."""


def _refuse(path, problem, advice=RECOVER):
    return PoolError(f"the discriminator pool file {path} {problem}.\n{advice}")


def check_meta(path, num_images, map_size):
    """The pool description: readable JSON made for `num_images` maps of `map_size`."""
    try:
        with open(path) as handle:
            meta = json.load(handle)
        first, images, size = int(meta["first_epoch"]), int(meta["images"]), [int(s) for s in meta["map_size"]]
    except FileNotFoundError:
        raise _refuse(path, "is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _refuse(path, f"is unreadable or incomplete ({type(err).__name__}: {err})") from None
    if len(size) != 2 or first < 0:
        raise _refuse(path, f"describes an impossible pool (first_epoch {first}, map_size {size})")
    _check_size(path, images, size, num_images, map_size)
    return meta


def _check_size(path, images, size, num_images, map_size):
    if (int(images), [int(s) for s in size]) != (int(num_images), [int(s) for s in map_size]):
        raise _refuse(path, f"was made for {images} images of {size[0]} x {size[1]} maps, but this run now has "
                            f"{num_images} images of {map_size[0]} x {map_size[1]} maps (the dataset, --crop_size "
                            f"or --netD changed)",
                      "To resume the run as it was, drop the flag you typed that changed it (--dataroot, "
                      "--max_dataset_size, --crop_size or --netD). " + RECOVER)


def check_maps(path, num_images, map_size, value_range=None):
    """One pool buffer: a float32 .npy of (num_images, 1, h, w) whose values are finite (and within
    `value_range`, when given)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise _refuse(path, "is missing") from None
    except (OSError, ValueError, EOFError) as err:  # a truncated file or a foreign one
        raise _refuse(path, f"is not a complete .npy pool ({type(err).__name__}: {err}); it may be truncated") \
            from None
    if array.dtype != np.float32 or array.ndim != 4 or array.shape[1] != 1:
        raise _refuse(path, f"holds {array.dtype} {tuple(array.shape)}, not float32 maps of shape (N, 1, h, w)")
    _check_size(path, array.shape[0], list(array.shape[2:]), num_images, map_size)
    flat = array.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        values = np.asarray(flat[start:start + _CHUNK])
        finite = np.isfinite(values)
        if not finite.all():
            bad = int((~finite).sum())
            raise _refuse(path, f"holds non-finite values (NaN or inf; {bad} of the {values.size} values from "
                                f"position {start} on)")
        if value_range is not None and (values.min() < value_range[0] or values.max() > value_range[1]):
            raise _refuse(path, f"holds values from {values.min():g} to {values.max():g}, outside "
                                f"[{value_range[0]:g}, {value_range[1]:g}] where a pool of probabilities lies")
    del array


def check_run_pool(folder, num_images, map_size, value_range=None, kept=None):
    """Every pool file a resume of the run in `folder` reads (see the module's docstring); raises PoolError."""
    meta = os.path.join(folder, META_FILENAME)
    if not os.path.isfile(meta) and os.path.isfile(os.path.join(folder, POOL_FILENAME)):
        check_maps(os.path.join(folder, POOL_FILENAME), num_images, map_size, value_range)  # an earlier version's
    else:
        check_meta(meta, num_images, map_size)
        for name in BUFFERS:
            check_maps(os.path.join(folder, name), num_images, map_size, value_range)
    if kept is not None:
        check_maps(kept, num_images, map_size, value_range)
