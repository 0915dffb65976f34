"""Checksums of committed checkpoint sets: each set records the SHA-256 of its files in `<tag>_checksums.json`,
staged in the same transaction (so the list and the files become visible together), and a reader checks a file's
bytes against it before it loads them. torch's zip reader does not check payloads: a flipped byte inside a
tensor would otherwise load without complaint."""
import hashlib
import json
import os

MANIFEST_SUFFIX = "_checksums.json"
_CHUNK = 1 << 20


class CorruptFile(RuntimeError):
    """A file does not match the checksum recorded when it was saved; the message names it and what to do."""
    refusal = True  # util.command_line.cli: no traceback hint


def manifest_path(folder, tag):
    return os.path.join(folder, f"{tag}{MANIFEST_SUFFIX}")


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def stage_manifest(transaction, path):
    """Add to `transaction` (util.run.transaction.Transaction, its files staged) the list of their checksums, at `path`:
    {file name relative to the list's folder: SHA-256}. The staged files are complete, so they are hashed as
    they will be read."""
    folder = os.path.dirname(os.path.abspath(path))
    sums = {os.path.relpath(final, folder): sha256_of(tmp) for tmp, final in transaction.staged}
    payload = (json.dumps({"sha256": sums}, indent=1, sort_keys=True) + "\n").encode("utf-8")
    transaction.write(path, lambda handle: handle.write(payload))


def recorded_sums(manifest, readable=None):
    """{file name: SHA-256} of a checksum list (read at `readable`, e.g. a staged copy), None when there is none
    (a set saved before checksums were kept, or released weights)."""
    readable = readable or manifest
    if not os.path.isfile(readable):
        return None
    try:
        with open(readable) as handle:
            sums = json.load(handle)["sha256"]
        if not isinstance(sums, dict):
            raise ValueError("'sha256' is not a mapping")
        return sums
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptFile(f"the checksum list {manifest} is unreadable ({type(err).__name__}: {err}), so the "
                          f"checkpoint files it vouches for cannot be checked. Use another checkpoint (--epoch N), "
                          f"or pass --no_verify to load them unchecked") from None


def verify(path, manifest, readable=None, manifest_readable=None, advice=""):
    """Raise CorruptFile when the bytes of `path` (read at `readable`, default `path`) differ from the SHA-256
    that `manifest` records for it. Returns True when checked, False when no checksum is recorded for it."""
    sums = recorded_sums(manifest, manifest_readable)
    name = os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(manifest)))
    if not sums or name not in sums:
        return False
    found = sha256_of(readable or path)
    if found != sums[name]:
        raise CorruptFile(f"{path} is corrupt: its SHA-256 is {found[:16]}..., but {os.path.basename(manifest)} "
                          f"recorded {sums[name][:16]}... when it was saved (a disk, copy or transfer error changed "
                          f"it). {advice or 'Copy it again from where it came, or use another checkpoint (--epoch N).'}"
                          f" --no_verify loads it unchecked.")
    return True
