"""Checkpoint files, the one home of saving and loading them.

- Files: atomic torch.save, loading with weights_only=True and clear errors, the one report of how a state_dict
  differs from the network (or layout) it should fit, and the finiteness check.
- A model's checkpoints (`ModelCheckpoints`, mixed into BaseModel): one plain state_dict `<tag>_net_<NAME>.pth` per
  network (the pix2pix/ATME convention, so weights interchange) and `<tag>_train_state.pth` with everything an
  exact resume needs. Everything one save writes (the network files, the training state, a model's own files such
  as ATME's kept pool) is one transaction (util.run.transaction.Transaction): it becomes visible together or not at
  all, so the newest complete set is always consistent, and a failed write (full disk, read-only folder) leaves
  the previous set as it was and raises one `WriteError` that names the folder, the cause and what to do.
"""
import logging
import os
import pickle
import re
from collections import namedtuple

import torch

from util.process import distributed
from util.process.distributed import rank_rng_states, restore_rank_rng, unwrap
from util.run import atomic, integrity
from util.run import transaction as transactions

log = logging.getLogger(__name__)


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically (util.run.atomic: a failed write keeps the previous file)."""
    atomic.atomic_write(path, lambda handle: torch.save(obj, handle))


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


# ---------------------------------------------------------------------- a model's checkpoint sets
RESUME_HINT = ("Free space or fix the folder, then resume with --continue_train (it continues from the previous "
               "checkpoint).")


SET_READ_ATTEMPTS = 5  # reads of one checkpoint set that a save beside it may interrupt


class ModelCheckpoints:
    """Saving and loading for BaseModel; expects `networks()`, `optimizers`, `schedulers`, `save_dir`, `opt`, and
    `replan_schedulers(stored options, epoch)` (the model's schedule module applies this run's options after a
    resume; passed in as a method so this module needs nothing from models/)."""

    def _path(self, tag, name):
        return os.path.join(self.save_dir, f"{tag}_net_{name}.pth")

    def _stage_networks(self, transaction, tag):
        for name, net in self.networks():
            state = {k: v.detach().cpu().contiguous() for k, v in unwrap(net).state_dict().items()}
            transaction.write(self._path(tag, name), lambda handle, state=state: torch.save(state, handle))

    def save_networks(self, tag):
        """`<tag>_net_<NAME>.pth` per network, all or none (rank 0 only)."""
        if not distributed.is_main_process():
            return
        try:
            with transactions.Transaction(self.save_dir, tag) as transaction:
                self._stage_networks(transaction, tag)
                integrity.stage_manifest(transaction, integrity.manifest_path(self.save_dir, tag))
        except atomic.WriteError as err:
            raise err.with_hint(f"The '{tag}' networks were not saved. " + RESUME_HINT) from err

    def save_training_state(self, tag, epoch, epoch_iter, total_iters):
        """The networks and everything a resume needs (optimisers, schedulers, gradient scalers, counters, RNG,
        the model's extra state and files), as one transaction (rank 0 writes; every rank gives its RNG streams)."""
        rng_by_rank = rank_rng_states()
        pool_by_rank = distributed.gather_objects(  # each rank's history of generated images (--pool_size)
            None if self.fake_pool is None else [t.detach().cpu() for t in self.fake_pool.images])
        if not distributed.is_main_process():
            return
        state = {
            "epoch": epoch, "epoch_iter": epoch_iter, "total_iters": total_iters,
            "networks": {n: unwrap(net).state_dict() for n, net in self.networks()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scalers_by_optimizer": self.scaler_states(),
            "rng": rng_by_rank[0], "rng_by_rank": rng_by_rank, "model": self.extra_state(),
            "convergence": None if self._conv_sum is None else self._conv_sum.detach().cpu(),
            "fake_pool": pool_by_rank[0], "fake_pool_by_rank": pool_by_rank,
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.opt).items()},
        }
        try:
            with transactions.Transaction(self.save_dir, tag) as transaction:
                self._stage_networks(transaction, tag)
                self.stage_extra_files(transaction, tag)
                transaction.write(os.path.join(self.save_dir, f"{tag}_train_state.pth"),
                                  lambda handle: torch.save(state, handle))
                integrity.stage_manifest(transaction, integrity.manifest_path(self.save_dir, tag))
        except atomic.WriteError as err:
            raise err.with_hint(f"The checkpoint '{tag}' (epoch {epoch}, {total_iters} images) was not saved; the "
                                f"previous one is intact. " + RESUME_HINT) from err

    def scaler_states(self):
        """{optimiser index: GradScaler state} of the optimisers that have one (fp16)."""
        return {i: self._scalers[id(o)].state_dict() for i, o in enumerate(self.optimizers) if id(o) in self._scalers}

    def load_scaler_states(self, state, path):
        if self.amp_dtype is not torch.float16:
            return
        if "scalers_by_optimizer" not in state:
            if state.get("scalers"):
                log.warning("%s keeps its gradient scalers in an order that does not say which optimiser each "
                            "belongs to; they start afresh (the loss scale re-adapts within a few hundred steps)", path)
            return
        for index, saved in state["scalers_by_optimizer"].items():
            optimizer = self.optimizers[int(index)]
            scaler = self._scalers.setdefault(id(optimizer), torch.amp.GradScaler(self.device.type))
            scaler.load_state_dict(saved)

    # ------------------------------------------------------------------ loading
    def _readable(self, path):
        """`path`, or the complete file a killed save staged for it (readers never write, so they read it there)."""
        return transactions.pending(self.save_dir).get(os.path.abspath(path), path)

    def verify_file(self, tag, path, advice=""):
        """Check the bytes of `path` against the checksums its set `tag` recorded (unless --no_verify); raise
        util.run.integrity.CorruptFile naming it."""
        if getattr(self.opt, "no_verify", False):
            return
        manifest = integrity.manifest_path(self.save_dir, tag)
        sets = integrity.sets_path(self.save_dir)
        if integrity.verify(path, manifest, self._readable(path), self._readable(manifest), advice,
                            self._readable(sets)):
            log.debug("%s matches its recorded checksum", path)
        else:
            log.info("note: %s has no recorded checksum (its set '%s' was saved before checksums were kept), so it "
                     "loads unchecked", path, tag)

    def _find_network_file(self, tag, name):
        for candidate in [name] + list(self.checkpoint_aliases.get(name, [])):
            path = self._path(tag, candidate)
            if os.path.isfile(self._readable(path)):
                return path
        return None

    def load_networks(self, tag):
        """Every network of checkpoint `tag`, from one save: each file is checked and loaded, and the set's
        checksum list must read the same before and after, or a save replaced the set meanwhile (a training
        beside this reader) and the whole set is read again; a reader never mixes two saves."""
        for attempt in range(SET_READ_ATTEMPTS):
            before = self._list_bytes(tag)
            try:
                states = {name: self._read_network(tag, name) for name, _ in self.networks()}
            except integrity.CorruptFile:
                if self._list_bytes(tag) == before:
                    raise  # the set did not change: the file is damaged
                continue  # a file of the next save met the list of the last one
            if self._list_bytes(tag) == before:
                break
            log.info("checkpoint '%s' was saved again while it was read; reading the new set", tag)
        else:
            raise RuntimeError(f"checkpoint '{tag}' in {self.save_dir} was saved again each of the "
                               f"{SET_READ_ATTEMPTS} times it was read; test it when the training is between saves, "
                               f"or use a numbered checkpoint (--epoch N)")
        for name, net in self.networks():
            state, path = states[name]
            self.load_network_state(name, net, state, path)
            log.info("loaded %s", path)

    def _list_bytes(self, tag):
        """The bytes of set `tag`'s checksum list as they read now (None when there is none)."""
        try:
            with open(self._readable(integrity.manifest_path(self.save_dir, tag)), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def _read_network(self, tag, name):
        path = self._find_network_file(tag, name)
        if path is None:
            raise FileNotFoundError(
                f"no checkpoint {self._path(tag, name)} for network {name}; the run directory holds: "
                f"{', '.join(sorted(f for f in os.listdir(self.save_dir) if f.endswith('.pth'))) or 'nothing'}"
                if os.path.isdir(self.save_dir) else
                f"run directory {self.save_dir} does not exist: check --name and --checkpoints_dir")
        self.verify_file(tag, path)
        state = load_file(self._readable(path), f"network {name} checkpoint")
        check_finite(state, path, f"network {name} checkpoint")
        return state, path

    def load_network_state(self, name, net, state, path):
        """Load `state` into `net`, explaining any key or shape mismatch."""
        state = self.convert_checkpoint(name, state)
        target = unwrap(net)
        mismatch = layout_mismatch(target, state)
        if mismatch:
            stored = os.path.join(self.save_dir, "train_opt.txt")
            raise RuntimeError(
                f"{path} does not fit network {name} as built from the current options: "
                f"{describe_mismatch(mismatch)}. The options the run was trained with "
                f"are in {stored}{'' if os.path.isfile(stored) else ' (missing)'}; pass the same architecture "
                f"flags (--netG, --netD, --ngf, --ndf, --norm, --input_nc, --output_nc, model flags).")
        target.load_state_dict(state)

    def convert_checkpoint(self, name, state):
        """Hook: rename keys of older checkpoint layouts."""
        return state

    def training_state_path(self, tag):
        return os.path.join(self.save_dir, f"{tag}_train_state.pth")

    def load_training_state(self, tag):
        path = self.training_state_path(tag)
        readable = self._readable(path)
        if not os.path.isfile(readable):
            raise FileNotFoundError(f"--continue_train: no training state {path}. Start without "
                                    f"--continue_train, or choose --epoch from the *_train_state.pth files in "
                                    f"{self.save_dir}.")
        self.verify_file(tag, path, "Resume from another checkpoint (--continue_train --epoch N, from the "
                         "*_train_state.pth files in its folder), or copy it again from where it came.")
        state = load_file(readable, "training state", numpy_arrays=True)  # numpy: RNG of older states
        self._check_architecture(state.get("options", {}), path)
        check_finite({"networks": state["networks"], "optimizers": [o.get("state", {}) for o in state["optimizers"]]},
                     path, "training state")
        for name, net in self.networks():
            self.load_network_state(name, net, state["networks"][name], path)
        if len(state["optimizers"]) != len(self.optimizers):
            raise RuntimeError(f"{path} holds {len(state['optimizers'])} optimisers, the model has "
                               f"{len(self.optimizers)}: the model's options changed since the checkpoint")
        for opt_obj, saved in zip(self.optimizers, state["optimizers"]):
            opt_obj.load_state_dict(saved)
        stored = state.get("options", {})
        if stored.get("lr_policy", self.opt.lr_policy) == self.opt.lr_policy:
            for sched, saved in zip(self.schedulers, state["schedulers"]):
                sched.load_state_dict(saved)
        replanned = self.replan_schedulers(stored, state["epoch"])
        if replanned:
            log.info("%s", replanned)
        self.load_scaler_states(state, path)
        restore_rank_rng(state.get("rng_by_rank") or [state["rng"]], path)  # "rng" alone: an older version's
        self.load_extra_state(state.get("model", {}))
        pools = state.get("fake_pool_by_rank") or [state.get("fake_pool")]  # one: rank 0's (older versions)
        pool = pools[distributed.rank()] if len(pools) == distributed.world_size() else pools[0]
        if self.fake_pool is not None and pool:
            self.fake_pool.images = [t.to(self.device) for t in pool][:self.fake_pool.pool_size]
        if state.get("convergence") is not None:  # a mid-epoch resume keeps the epoch's sums
            self._conv_sum = state["convergence"].to(self.device)
        log.info("resuming from %s: epoch %d, %d images into it, %d images in all",
                 path, state["epoch"], state["epoch_iter"], state["total_iters"])
        return {k: state[k] for k in ("epoch", "epoch_iter", "total_iters")}

    def _check_architecture(self, stored, path):
        current = {key: getattr(self.opt, key) for key in self.architecture_flags if hasattr(self.opt, key)}
        changed = [f"--{key} is {now}, the checkpoint has {was}"
                   for key, was, now in option_differences(stored, current)]
        if changed:
            raise ValueError(f"--continue_train would change the architecture of {path}: {'; '.join(changed)}. "
                             f"Use the stored values or start a new --name.")

    # ------------------------------------------------------------------ hooks
    def extra_state(self):
        """Model-specific state for the training-state file."""
        return {}

    def load_extra_state(self, state):
        pass

    def stage_extra_files(self, transaction, tag):
        """Add the model's own files to a checkpoint transaction (e.g. ATME's pool kept with `<epoch>` sets)."""
