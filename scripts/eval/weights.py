"""Pretrained weights that metrics need (Inception for KID, AlexNet for LPIPS): a file the user names, the copy
in torch.hub's cache, or a download into that cache. Offline, a missing file is an error that names the URL to
fetch, where to put it and the flag that takes a local path."""
import logging
import os
import urllib.error

import torch

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
