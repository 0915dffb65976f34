"""The ATME discriminator pool: one decision map per training image, kept on disk.

`DiscPool` is one .npy file of maps (float32, shape (N, 1, h, w)), memory-mapped, so memory does not grow with
the dataset, several processes (DataLoader workers, DDP ranks) can read it, and writers touching distinct rows
never collide. A run keeps two of them (`EpochPool`): during epoch t every map is read from the one that holds
D_{t-1} and written to the other, which becomes D_t when the epoch's checkpoint commits. D_{t-1} therefore never
changes during epoch t, and a run killed at any moment resumes from its newest checkpoint with exactly the maps
that checkpoint saw, without copying the pool at every save.
"""
import json
import logging
import os
import shutil

import numpy as np
import torch

from util.run.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

POOL_FILENAME = "disc_pool.npy"  # a single-file pool of earlier versions; EpochPool converts it
BUFFERS = ("disc_pool_a.npy", "disc_pool_b.npy")
META_FILENAME = "disc_pool.json"
INITS = ("uniform", "half")


def _as_index_array(indices, length):
    """int / sequence / tensor of indices -> int64 numpy array, checked against `length`."""
    if isinstance(indices, torch.Tensor):
        indices = indices.detach().cpu().numpy()
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= length):
        bad = idx[(idx < 0) | (idx >= length)][:5].tolist()
        raise IndexError(f"discriminator pool indices {bad} are outside 0..{length - 1}; the sample 'index' must be "
                         f"the image's position in the training set")
    return idx


class _LazyMemmap:
    """Holds a path and opens the memmap on first use in each process; pickles without the mapping."""

    def __init__(self, path, writable):
        self.path = os.path.abspath(path)
        self.writable = writable
        self._array = None

    @property
    def array(self):
        if self._array is None:
            if not os.path.isfile(self.path):
                raise FileNotFoundError(f"the discriminator pool {self.path} does not exist, so the run cannot be "
                                        f"resumed exactly.\nStart it afresh with --start_over instead of "
                                        f"--continue_train (the earlier files are moved aside)")
            self._array = np.lib.format.open_memmap(self.path, mode="r+" if self.writable else "r")
        return self._array

    def close(self):
        if self._array is not None and self.writable:
            self._array.flush()
        self._array = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


class DiscPoolReader(_LazyMemmap):
    """Picklable callable index -> (1, h, w) float32 tensor, for the data loader's per-sample extras."""

    def __init__(self, path):
        super().__init__(path, writable=False)

    def __call__(self, index):
        return torch.from_numpy(np.array(self.array[int(index)], dtype=np.float32))


class DiscPool(_LazyMemmap):
    """Per-image discriminator maps in `<run_dir>/disc_pool.npy`; see `create`, `open`, `read`, `write`."""

    def __init__(self, path, writable=True):
        super().__init__(path, writable)
        self._pending = None  # (indices, maps, cuda event or None) of write_deferred, not stored yet
        array = self.array  # validate now so a broken file fails at start, not mid-epoch
        if array.ndim != 4 or array.shape[1] != 1 or array.dtype != np.float32:
            raise ValueError(f"{self.path} is not a discriminator pool (expected float32 (N, 1, h, w), found "
                             f"{array.dtype} {array.shape}); delete it or start a new --name")

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, path, num_images, map_size, init="uniform", seed=0, chunk=4096):
        """Write a new pool of `num_images` maps of `map_size` (h, w), filled chunk by chunk, then rename."""
        num_images = int(num_images)
        height, width = (int(s) for s in map_size)
        if num_images < 1 or height < 1 or width < 1:
            raise ValueError(f"a discriminator pool needs at least one image and a map of at least 1x1, got "
                             f"{num_images} images of {height}x{width}")
        if init not in INITS:
            raise ValueError(f"unknown discriminator pool init {init!r}; use one of {', '.join(INITS)}")
        path = os.path.abspath(path)
        rng = np.random.default_rng(seed)
        with atomic_path(path) as tmp:
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(num_images, 1, height, width))
            for start in range(0, num_images, max(1, int(chunk))):
                stop = min(num_images, start + max(1, int(chunk)))
                if init == "uniform":
                    # uniform(0, 1): the release's start, random decisions around the max-entropy 1/2
                    array[start:stop] = rng.random((stop - start, 1, height, width), dtype=np.float32)
                else:
                    array[start:stop] = 0.5
            array.flush()
            del array
        log.info("created discriminator pool %s: %d maps of %dx%d (%s)", path, num_images, height, width, init)
        return cls(path, writable=True)

    @classmethod
    def open(cls, path, writable=True, num_images=None, map_size=None):
        """Open an existing pool; with `num_images` / `map_size` given, check that it was made for them."""
        pool = cls(path, writable=writable)
        if num_images is not None or map_size is not None:
            pool.check_matches(num_images if num_images is not None else len(pool),
                               map_size if map_size is not None else pool.map_size)
        return pool

    @classmethod
    def open_or_create(cls, path, num_images, map_size, *, resume, init="uniform", seed=0):
        """Resume: reopen the pool as it was (checking its shape); otherwise start a fresh one."""
        if resume and os.path.isfile(path):
            pool = cls.open(path, writable=True, num_images=num_images, map_size=map_size)
            log.info("reopened discriminator pool %s (%d maps of %dx%d)", pool.path, len(pool), *pool.map_size)
            return pool
        if resume:
            log.warning("no discriminator pool at %s to resume from; starting a fresh one", path)
        return cls.create(path, num_images, map_size, init=init, seed=seed)

    def check_matches(self, num_images, map_size):
        """Raise a ValueError when this pool was made for another dataset size or D map size."""
        want = (int(num_images), tuple(int(s) for s in map_size))
        have = (len(self), self.map_size)
        if want != have:
            raise ValueError(
                f"the discriminator pool {self.path} was made for {have[0]} images of {have[1][0]} x {have[1][1]} "
                f"maps, but this run now has {want[0]} images of {want[1][0]} x {want[1][1]} maps (dataset size, "
                f"--crop_size or --netD changed).\nResume with the run's own data and options (drop --dataroot, "
                f"--max_dataset_size, --crop_size and --netD: --continue_train takes them from train_opt.json), or "
                f"start afresh with --start_over instead of --continue_train, or under another --name")

    # ------------------------------------------------------------------ access
    def __len__(self):
        return int(self.array.shape[0])

    @property
    def map_size(self):
        return tuple(int(s) for s in self.array.shape[2:])

    def read(self, indices):
        """Maps of `indices` -> float32 tensor (B, 1, h, w) (a copy, safe to keep)."""
        self._store_pending()
        idx = _as_index_array(indices, len(self))
        return torch.from_numpy(np.array(self.array[idx], dtype=np.float32))

    def write(self, indices, maps):
        """Store `maps` (B, 1, h, w) for `indices`; touches those rows only."""
        if not self.writable:
            raise RuntimeError(f"the discriminator pool {self.path} was opened read-only")
        idx = _as_index_array(indices, len(self))
        values = maps.detach().to(device="cpu", dtype=torch.float32).numpy() if isinstance(maps, torch.Tensor) \
            else np.asarray(maps, dtype=np.float32)
        self._check_shape(idx.size, values.shape)
        self.array[idx] = values

    def _check_shape(self, count, shape):
        expected = (count, 1, *self.map_size)
        if tuple(shape) != expected:
            raise ValueError(f"discriminator maps of shape {tuple(shape)} do not fit the pool {self.path}, which "
                             f"holds {expected[1:]} per image ({count} indices given)")

    def write_deferred(self, indices, maps):
        """`write`, without making the host wait for the device: the trainer's per-step call.

        The maps are copied off the device asynchronously (pinned memory on CUDA) and stored at the next
        `write_deferred`, `read`, `flush` or `close`, by which time the copy has long finished. Every map is
        read again one epoch later, after the trainer's end-of-epoch `flush`.
        """
        self._store_pending()
        maps = maps.detach()
        indices = torch.as_tensor(indices).detach().reshape(-1)
        # Checked now, where the error belongs (the values of device indices only when stored).
        self._check_shape(indices.numel(), maps.shape)
        if not indices.is_cuda:
            _as_index_array(indices, len(self))
        if maps.is_cuda:
            host_maps = torch.empty(maps.shape, dtype=torch.float32, pin_memory=True)
            host_maps.copy_(maps, non_blocking=True)
            host_indices = torch.empty(indices.shape, dtype=torch.int64, pin_memory=True)
            host_indices.copy_(indices, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending = (host_indices, host_maps, event)
        else:
            self._pending = (indices.to(torch.int64).clone(), maps.to(torch.float32).clone(), None)

    def _store_pending(self):
        if self._pending is None:
            return
        indices, maps, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        self.write(indices, maps)

    def flush(self):
        """Store deferred maps (other processes see a map once it is stored) and push written maps to disk."""
        self._store_pending()
        if self._array is not None and self.writable:
            self._array.flush()

    def close(self):
        self._store_pending()
        super().close()

    def reader(self):
        """A picklable callable index -> (1, h, w) tensor that reopens the file read-only in each process."""
        return DiscPoolReader(self.path)


class EpochPoolReader:
    """Picklable callable (index, epoch) -> (1, h, w) float32 tensor: D_{epoch-1} of an image, read in the data
    loader's workers from the buffer that holds it during that epoch."""

    def __init__(self, paths, first_epoch):
        self.readers = [DiscPoolReader(path) for path in paths]
        self.first_epoch = int(first_epoch)

    def __call__(self, index, epoch):
        return self.readers[(int(epoch) - self.first_epoch) % 2](index)


class EpochPool:
    """The run's two pool buffers and their description `disc_pool.json` in the run folder.

    Buffer `(t - first_epoch) % 2` holds D_{t-1} during epoch t and is only read; the other receives D_t. Call
    `set_epoch(t)` at the start of each epoch; `flush()` before a checkpoint commits (the trainer saves a
    checkpoint at every epoch end, which is what makes the written buffer the next epoch's D_{t-1}).
    """

    def __init__(self, folder, meta, writable=True):
        self.folder = os.path.abspath(folder)
        self.first_epoch = int(meta["first_epoch"])
        self.buffers = [DiscPool(os.path.join(self.folder, name), writable=writable) for name in BUFFERS]
        self.epoch = self.first_epoch
        for buffer in self.buffers:
            buffer.check_matches(meta["images"], meta["map_size"])

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, folder, num_images, map_size, *, first_epoch, init="uniform", seed=0):
        """Both buffers start from the same maps (uniform(0, 1) as in the release): D_{first_epoch - 1}."""
        folder = os.path.abspath(folder)
        first = DiscPool.create(os.path.join(folder, BUFFERS[0]), num_images, map_size, init=init, seed=seed)
        first.flush()
        with atomic_path(os.path.join(folder, BUFFERS[1])) as tmp:
            shutil.copyfile(first.path, tmp)
        meta = {"first_epoch": int(first_epoch), "images": int(num_images), "map_size": [int(s) for s in map_size]}
        write_json(os.path.join(folder, META_FILENAME), meta)
        return cls(folder, meta)

    @classmethod
    def open(cls, folder, num_images, map_size, epoch):
        """Reopen a run's pool, checking it was made for this many images and this map size. A single-file pool
        of an earlier version becomes the buffer that epoch `epoch` reads, and a copy of it the other."""
        folder = os.path.abspath(folder)
        meta_path = os.path.join(folder, META_FILENAME)
        if not os.path.isfile(meta_path):
            old = os.path.join(folder, POOL_FILENAME)
            if not os.path.isfile(old):
                raise FileNotFoundError(f"the run in {folder} has no discriminator pool ({META_FILENAME}).\nStart it "
                                        f"afresh with --start_over instead of --continue_train (the earlier files "
                                        f"are moved aside)")
            DiscPool(old).check_matches(num_images, map_size)
            meta = {"first_epoch": int(epoch), "images": int(num_images), "map_size": [int(s) for s in map_size]}
            # Both buffers are complete copies before the metadata names them, and the old file goes last: a
            # process killed anywhere here leaves either the old pool (converted again next time) or the new one.
            for buffer in BUFFERS:
                with atomic_path(os.path.join(folder, buffer)) as tmp:
                    shutil.copyfile(old, tmp)
            write_json(meta_path, meta)
            os.remove(old)
            log.warning("converted the single-file discriminator pool %s into the two buffers of this version", old)
        with open(meta_path) as handle:
            meta = json.load(handle)
        pool = cls(folder, meta)
        for buffer in pool.buffers:
            buffer.check_matches(num_images, map_size)
        return pool

    # ------------------------------------------------------------------ the epoch's buffers
    def set_epoch(self, epoch):
        self.flush()
        self.epoch = int(epoch)

    @property
    def reading(self):
        """The buffer that holds D_{t-1} during the current epoch t."""
        return self.buffers[(self.epoch - self.first_epoch) % 2]

    @property
    def writing(self):
        """The buffer that receives D_t during the current epoch t."""
        return self.buffers[(self.epoch - self.first_epoch + 1) % 2]

    def __len__(self):
        return len(self.buffers[0])

    @property
    def map_size(self):
        return self.buffers[0].map_size

    def read(self, indices):
        """D_{t-1} of `indices` (the maps this epoch's steps see)."""
        return self.reading.read(indices)

    def read_written(self, indices):
        """D_t of `indices` as written so far this epoch (all of them at the epoch's end)."""
        self.writing.flush()
        return self.writing.read(indices)

    def write_deferred(self, indices, maps):
        self.writing.write_deferred(indices, maps)

    def flush(self):
        for buffer in self.buffers:
            if buffer.writable:
                buffer.flush()

    def close(self):
        for buffer in self.buffers:
            buffer.close()

    def reader(self):
        return EpochPoolReader([buffer.path for buffer in self.buffers], self.first_epoch)

    # ------------------------------------------------------------------ kept copies for --epoch N
    def stage_copy(self, transaction, path):
        """Add to `transaction` a copy of the buffer being written: D of the epoch that just ended, which the
        next epoch reads (kept with the `<epoch>` checkpoint)."""
        self.flush()
        source = self.writing.path
        transaction.fill(path, lambda tmp: shutil.copyfile(source, tmp))

    def restore(self, path, epoch):
        """Make the buffer that epoch `epoch` reads a copy of the kept pool `path` (resume from `--epoch N`)."""
        kept = DiscPool(path, writable=False)
        kept.check_matches(len(self), self.map_size)
        self.set_epoch(epoch)
        target = self.reading
        target.close()
        with atomic_path(target.path) as tmp:
            shutil.copyfile(path, tmp)


def test_time_maps(batch, map_size, std=0.001, generator=None, device=None):
    """Maps for inference: 0.5 + std * N(0, 1), shape (batch, 1, h, w) (the paper's max-entropy state)."""
    height, width = (int(s) for s in map_size)
    noise = torch.randn((int(batch), 1, height, width), generator=generator)
    return (0.5 + std * noise).to(device) if device is not None else 0.5 + std * noise


# pytest would try to collect a module-level function named test_*; it is a helper, not a test.
test_time_maps.__test__ = False
