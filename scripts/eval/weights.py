"""Pretrained weights that metrics need (Inception for KID, AlexNet for LPIPS): a file the user names, the copy
in torch.hub's cache, or a download into that cache. Offline, a missing file is an error that names the URL to
fetch, where to put it and the flag that takes a local path.

No code runs from such a file. A library that would read it again by path with a full unpickler (torch-fidelity
0.4.0 reads Inception weights with `torch.load(weights_only=False)`) is handed a private copy instead, written
here from what was read once with weights_only=True (`verified_state_copy`); a TorchScript file, whose code runs
when it is loaded and used, is handed over only when it is the published file (its SHA-256) or the user passed
the flag that allows running it (`torchscript_copy`). Either way the bytes checked are the bytes used.
"""
import contextlib
import hashlib
import logging
import os
import tempfile
import urllib.error
import zipfile

import torch

from util.run.checkpoint import atomic_save, load_file

log = logging.getLogger(__name__)


def hub_cache_path(url):
    """Where torch.hub (and so torch-fidelity and torchvision) keeps the file downloaded from `url`."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def local_weights(url, *, path=None, flag, what, download=True, alternative=""):
    """A local file of the weights at `url`: `path` (given with `flag`), the hub cache's copy, or a download.

    `what` names the weights in messages; `alternative` is appended to the advice (e.g. a fallback metric).
    """
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path} does not exist; it should be a copy of {url}")
        return path
    cached = hub_cache_path(url)
    if os.path.isfile(cached):
        return cached
    hint = (f"fetch {url} on a machine with internet and either put it at {cached} or pass "
            f"{flag} /path/to/{os.path.basename(url)}{alternative}")
    if not download:
        raise RuntimeError(f"the {what} are not available: {hint}")
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    log.info("downloading the %s to %s", what, cached)
    try:
        torch.hub.download_url_to_file(url, cached, progress=True)
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        raise RuntimeError(f"could not download the {what} ({err}): {hint}") from None
    return cached


class WeightsRefused(ValueError):
    """A weights file that would run code, or is not what it should be; the message names it and the flag."""
    refusal = True  # util.command_line.cli: no traceback hint


def is_torchscript(path):
    """Whether `path` is a TorchScript archive (a zip with the compiled code `code/` and `constants.pkl`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/", 1)[-1] in ("constants.pkl",) or "/code/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@contextlib.contextmanager
def _private_folder():
    with tempfile.TemporaryDirectory(prefix="verified-weights-") as folder:  # mode 0700: no one else writes there
        yield folder


@contextlib.contextmanager
def verified_state_copy(path, flag):
    """Yield the path of a private copy of the state_dict at `path`, read once with weights_only=True (a file
    holding anything but tensors and plain values is refused, naming `flag`) and written back as plain tensors,
    for a library that reads weights by path with a full unpickler."""
    state = load_file(path, flag)
    with _private_folder() as folder:
        copy = os.path.join(folder, os.path.basename(path))
        atomic_save(state, copy)
        yield copy


@contextlib.contextmanager
def torchscript_copy(path, *, published_sha256, allow, flag, allow_flag, what):
    """Yield the path of a private copy of the TorchScript file `path` for a library that loads it (its code runs):
    when its SHA-256 is `published_sha256` (the publisher's file), or when the user passed `allow_flag`. The copy
    is hashed as it is made, so the bytes checked are the bytes loaded. Otherwise WeightsRefused names the file
    and the flag; nothing of it was run."""
    with _private_folder() as folder:
        copy = os.path.join(folder, os.path.basename(path))
        digest = hashlib.sha256()
        with open(path, "rb") as source, open(copy, "wb") as target:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                target.write(block)
        if not _whole_torchscript(copy):
            raise WeightsRefused(f"{flag} {path} is not a whole TorchScript archive (it is truncated, damaged or "
                                 f"another kind of file), so the {what} cannot be read from it. Fetch it again, or "
                                 f"pass another file.")
        found = digest.hexdigest()
        if found != published_sha256 and not allow:
            raise WeightsRefused(
                f"{flag} {path} is not the published {what} (its SHA-256 is {found[:16]}..., the published file's "
                f"{published_sha256[:16]}...), and a TorchScript file runs its own code when it is loaded. Nothing "
                f"of it was run. Use the published file (or none: it is then downloaded and checked), or, if you "
                f"trust this file's author, pass {allow_flag} to run it.")
        yield copy


def _whole_torchscript(path):
    """A TorchScript archive whose members all pass their CRC (torch's reader says only 'internal miniz error')."""
    if not is_torchscript(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False
