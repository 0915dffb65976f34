"""Several files that become visible together: each is staged (complete and durable under a temporary name),
then `commit()` renames them under a journal, which `recover()` completes after a kill.

A journal is read back from the run folder, which may have come from someone else: its entries must be the plain
file names of its own set (a staged `.<name>.<random>.tmp` and its `<name>`, no folder part), else the folder is
refused (`JournalError`) before anything is renamed.
"""
import json
import os

from util.run import atomic
from util.run.atomic import _remove_quietly, _write_with, atomic_write_text, fsync_folder

JOURNAL_SUFFIX = ".journal.json"


class JournalError(RuntimeError):
    """A save journal names something other than the files of its own set; nothing was renamed."""
    refusal = True  # util.command_line.cli: no traceback hint


class Transaction:
    """Files written together: each is staged (complete and durable under a temporary name) as it is added;
    `commit()` records the renames in a journal, performs them and removes the journal. A process killed during
    the renames leaves the journal, and `recover()` completes it; a failure before `commit()` (a full disk)
    removes the staged files and leaves every existing file as it was.

        with Transaction(folder, "latest") as t:
            t.write(path_a, lambda f: torch.save(a, f))
            t.fill(path_b, lambda tmp: shutil.copyfile(src, tmp))
        # committed here; an exception inside the block aborts instead
    """

    def __init__(self, folder, name):
        self.folder = os.path.abspath(folder)
        self.journal = os.path.join(self.folder, f".{name}{JOURNAL_SUFFIX}")
        self.staged = []  # (temporary path, final path)

    def write(self, path, write):
        """Stage `path`'s new content, written by `write(binary file)`."""
        self.fill(path, _write_with(write))

    def fill(self, path, fill):
        """Stage `path`'s new content, written by `fill(temporary path)`. `path` is a file of this folder (its
        journal records plain names, which is what `recover` accepts)."""
        path = os.path.abspath(path)
        if os.path.dirname(path) != self.folder:
            raise ValueError(f"a transaction of {self.folder} writes files of that folder only, not {path}")
        self.staged.append((atomic.stage(path, fill), path))

    def commit(self):
        if not self.staged:
            return
        vanished = [final for tmp, final in self.staged if not os.path.isfile(tmp)]
        if vanished:  # something removed a staged file: renaming the others would make a set without it
            self.abort()
            raise atomic.WriteError(vanished[0], f"its staged copy vanished before the set was committed (another "
                                    f"process removed files in {self.folder}?), so none of the set was renamed")
        names = [[os.path.basename(tmp), os.path.basename(final)] for tmp, final in self.staged]
        # Power-loss order: the staged files' names are on the disk before the journal's name (a journal that
        # survives finds every file it names), and the journal's name before the first rename (atomic_write
        # fsyncs its folder), so renames that survive always have their journal.
        for folder in sorted({os.path.dirname(tmp) for tmp, _ in self.staged}):
            fsync_folder(folder)
        atomic_write_text(self.journal, json.dumps({"renames": names}) + "\n")
        _apply(self.folder, names)
        _remove_quietly(self.journal)
        self.staged = []

    def abort(self):
        for tmp, _ in self.staged:
            _remove_quietly(tmp)
        self.staged = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        if kind is None:
            self.commit()
        else:
            self.abort()
        return False


def _apply(folder, names, skip_missing=False):
    """Rename each staged file of `names` (checked plain names) to its final name. A commit finds every staged
    file (a vanished one is a WriteError naming it); `recover` skips the ones a killed commit already renamed."""
    for tmp, final in names:
        tmp, final = os.path.join(folder, tmp), os.path.join(folder, final)
        if not os.path.lexists(tmp):
            if skip_missing:
                continue
            raise atomic.WriteError(final, f"its staged copy {os.path.basename(tmp)} vanished during the commit; "
                                    f"the next start of the run completes the rest of the set")
        os.replace(tmp, final)
    # The renames are durable before the journal that would redo them goes.
    for parent in sorted({os.path.dirname(os.path.join(folder, final)) for _, final in names}):
        fsync_folder(parent)


def _journals(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.startswith(".") and f.endswith(JOURNAL_SUFFIX))


def _read_journal(path):
    """The checked [staged name, final name] pairs of a journal; None for one that is unreadable (never completed:
    it is written atomically before the first rename, so nothing was renamed under it). A journal that names
    anything but plain file names of its folder raises JournalError."""
    try:
        with open(path) as handle:
            renames = json.load(handle)["renames"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(renames, list):
        raise _foreign(path, renames)
    for entry in renames:
        if not (isinstance(entry, list) and len(entry) == 2 and _is_own_pair(*entry)):
            raise _foreign(path, entry)
    return renames


def is_plain_name(name):
    """A file name with no folder part: not empty, no separator, not '.' or '..', no NUL."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "\0" not in name and "/" not in name
            and os.sep not in name and not (os.altsep and os.altsep in name))


def _is_own_pair(tmp, final):
    """Whether (tmp, final) is what `commit` writes: `final` a plain name, `tmp` its staged `.<final>.<id>.tmp`."""
    return (is_plain_name(tmp) and is_plain_name(final) and atomic.is_temporary(tmp)
            and tmp.startswith(f".{final}."))


def _foreign(journal, entry):
    return JournalError(
        f"the save journal {journal} lists {json.dumps(entry)[:200]}, which is not a file of its own set (a journal "
        f"written by a save here holds only plain names of the folder's files and their staged copies). Nothing was "
        f"renamed or written. If the run folder came from someone else, delete the journal (rm '{journal}') and run "
        f"the command again, or start afresh (--start_over moves the folder aside, or use another --name).")


def check_journals(folder):
    """Raise JournalError when a journal in `folder` names anything but its own set's files; reads only."""
    for journal in _journals(folder):
        _read_journal(journal)


def recover(folder):
    """Complete the renames of transactions whose process was killed while committing; returns the final
    paths it completed. Call it before `remove_stale_temporaries`, by the folder's only writer."""
    journals = [(journal, _read_journal(journal)) for journal in _journals(folder)]  # all checked before any rename
    done = []
    for journal, names in journals:
        if names:
            done += [os.path.join(folder, final) for tmp, final in names if os.path.lexists(os.path.join(folder, tmp))]
            _apply(folder, names, skip_missing=True)
        _remove_quietly(journal)
    return done


def pending(folder):
    """{final path: staged temporary path} of committed transactions whose renames a killed process did not
    finish: what a reader that must not write (test.py) reads instead of the final names."""
    found = {}
    for journal in _journals(folder):
        for tmp, final in _read_journal(journal) or []:
            if os.path.isfile(os.path.join(folder, tmp)):
                found[os.path.join(folder, final)] = os.path.join(folder, tmp)
    return found
