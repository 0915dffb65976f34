"""Checksums of committed checkpoint sets: each set records the SHA-256 of its files in `<tag>_checksums.json`,
staged in the same transaction (so the list and the files become visible together), and a reader checks a file's
bytes against it before it loads them. torch's zip reader does not check payloads: a flipped byte inside a
tensor would otherwise load without complaint.

A missing list is said too: every save also records its tag in the run's `checksummed_sets.json` (in the same
transaction), so a set that was saved with a list and has lost it is refused like a corrupt file, while a set
saved before checksums were kept (no such record) loads with a note."""
import hashlib
import json
import os

MANIFEST_SUFFIX = "_checksums.json"
SETS_FILE = "checksummed_sets.json"  # {"sets": [tags saved with a checksum list]}: the version marker of a run
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


def tag_of(manifest):
    """The set a checksum list belongs to: `<tag>` of `<tag>_checksums.json`."""
    return os.path.basename(manifest)[:-len(MANIFEST_SUFFIX)]


def sets_path(folder):
    return os.path.join(folder, SETS_FILE)


def checksummed_sets(folder, readable=None):
    """The tags `folder`'s `checksummed_sets.json` (read at `readable`, e.g. a staged copy) records as saved with
    a checksum list; empty for a run saved before the record was kept (or an unreadable record)."""
    try:
        with open(readable or sets_path(folder)) as handle:
            sets = json.load(handle)["sets"]
        return {tag for tag in sets if isinstance(tag, str)} if isinstance(sets, list) else set()
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def stage_manifest(transaction, path):
    """Add to `transaction` (util.run.transaction.Transaction, its files staged) the list of their checksums, at `path`:
    {file name relative to the list's folder: SHA-256}, and the list's tag to the folder's `checksummed_sets.json`.
    The staged files are complete, so they are hashed as they will be read."""
    folder = os.path.dirname(os.path.abspath(path))
    sums = {os.path.relpath(final, folder): sha256_of(tmp) for tmp, final in transaction.staged}
    payload = (json.dumps({"sha256": sums}, indent=1, sort_keys=True) + "\n").encode("utf-8")
    transaction.write(path, lambda handle: handle.write(payload))
    sets = sorted(checksummed_sets(folder) | {tag_of(path)})
    record = (json.dumps({"sets": sets}, indent=1) + "\n").encode("utf-8")
    transaction.write(sets_path(folder), lambda handle: handle.write(record))


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


def verify(path, manifest, readable=None, manifest_readable=None, advice="", sets_readable=None):
    """Raise CorruptFile when the bytes of `path` (read at `readable`, default `path`) differ from the SHA-256
    that `manifest` records for it, when `path` is missing though the list names it, or when the list is missing
    though the folder's `checksummed_sets.json` (read at `sets_readable`) says the set was saved with one.
    Returns True when checked, False when no checksum is recorded for it (a set saved before checksums)."""
    sums = recorded_sums(manifest, manifest_readable)
    folder = os.path.dirname(os.path.abspath(manifest))
    name = os.path.relpath(os.path.abspath(path), folder)
    if sums is None and tag_of(manifest) in checksummed_sets(folder, sets_readable):
        raise CorruptFile(f"the checksum list {manifest} is missing, but {sets_path(folder)} records that the set "
                          f"'{tag_of(manifest)}' was saved with one, so {path} cannot be checked (a copy or a "
                          f"clean-up left it out). Copy the whole set again from where it came, use another "
                          f"checkpoint (--epoch N), or pass --no_verify to load it unchecked.")
    if not sums or name not in sums:
        return False
    if not os.path.isfile(readable or path):
        raise CorruptFile(f"{path} is missing, though {os.path.basename(manifest)} lists it as part of the set "
                          f"'{tag_of(manifest)}'. {advice or 'Copy it again from where it came, or use another checkpoint (--epoch N).'}"
                          f" --no_verify skips the check.")
    found = sha256_of(readable or path)
    if found != sums[name]:
        raise CorruptFile(f"{path} is corrupt: its SHA-256 is {found[:16]}..., but {os.path.basename(manifest)} "
                          f"recorded {sums[name][:16]}... when it was saved (a disk, copy or transfer error changed "
                          f"it). {advice or 'Copy it again from where it came, or use another checkpoint (--epoch N).'}"
                          f" --no_verify loads it unchecked.")
    return True
