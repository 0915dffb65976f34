"""Checkpoint I/O that never leaves a corrupt file: write to a temporary file beside the target, fsync, rename.

A full disk or an unwritable folder raises an error naming the folder and what to do; the previous file of
the same name stays as it was.
"""
import errno
import os
import tempfile

import torch


def _fail(path, err):
    folder = os.path.dirname(os.path.abspath(path))
    if err.errno == errno.ENOSPC:
        why = "the disk is full"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the folder is not writable"
    else:
        why = os.strerror(err.errno) if err.errno else str(err)
    return RuntimeError(f"could not write {path}: {why}. The previous checkpoint, if any, is intact. "
                        f"Free space in {folder} or pass another --checkpoints_dir, then resume with "
                        f"--continue_train.")


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as err:
        raise _fail(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared and served
        os.replace(tmp, path)
    except OSError as err:
        _remove_quietly(tmp)
        raise _fail(path, err) from err
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text):
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path, payload):
    _atomic(path, lambda f: f.write(payload))


def load_file(path, what="checkpoint"):
    """torch.load on the CPU with a clear error for a missing or unreadable file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # truncated zip, pickle error, ...
        raise RuntimeError(f"{what} {path} is unreadable ({type(err).__name__}: {err}); "
                           f"it may be truncated. Use another --epoch or retrain.") from err


def state_dict_mismatch(expected, found):
    """(missing, unexpected, mis-shaped) key lists between two state_dicts."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k}: checkpoint {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
                 for k in expected if k in found and hasattr(found[k], "shape")
                 and tuple(found[k].shape) != tuple(expected[k].shape)]
    return missing, unexpected, misshaped


def describe_mismatch(missing, unexpected, misshaped, limit=10):
    parts = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", misshaped)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{title}: {', '.join(items[:limit])}{more}")
    return "; ".join(parts)
