"""Crash consistency of util.run.atomic: a folder replaced in one step (no moment where a reader or a restart finds
neither the old folder nor the new one), and the fsync order that makes a save survive a power loss."""
import errno
import json
import os
import shutil

import pytest

from util.run import atomic, folder_swap
from util.run import transaction as transactions


def contents(folder):
    """{file name: bytes} of a folder (through a symlink), or None when it is missing."""
    if not os.path.isdir(folder):
        return None
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


def fill(folder, tag, names=("a.png", "b.png")):
    for name in names:
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(tag)


class Snapshots:
    """Copies of a folder after every file-system step of `atomic_directory`: what a kill at that moment leaves."""

    def __init__(self, monkeypatch, watched, store):
        self.watched, self.store, self.taken, self.busy = watched, store, [], False
        for owner, name in ((os, "rename"), (os, "replace"), (os, "symlink"), (shutil, "rmtree"),
                            (folder_swap, "_exchange")):
            monkeypatch.setattr(owner, name, self._after(getattr(owner, name)))

    def _after(self, function):
        def step(*args, **kwargs):
            result = function(*args, **kwargs)
            if not self.busy:
                self.busy = True
                try:
                    copy = os.path.join(self.store, str(len(self.taken)))
                    shutil.copytree(self.watched, copy, symlinks=True)
                    self.taken.append(copy)
                finally:
                    self.busy = False
            return result
        return step


@pytest.mark.parametrize("mode", ["exchange", "symlink", "convert"])
def test_a_folder_is_replaced_in_one_step_whenever_the_process_dies(tmp_path, monkeypatch, mode):
    web, store = tmp_path / "web", tmp_path / "snapshots"
    web.mkdir()
    store.mkdir()
    if mode != "exchange":  # a kernel or file system without renameat2(RENAME_EXCHANGE): the symlink idiom
        monkeypatch.setattr(folder_swap, "_exchange", lambda first, second: False)
    target = str(web / "images")
    with folder_swap.atomic_directory(target) as (staging, _):
        fill(staging, b"old")
    if mode == "symlink":  # already converted by an earlier replacement
        with folder_swap.atomic_directory(target) as (staging, _):
            fill(staging, b"old")
        assert os.path.islink(target)
    old = contents(target)
    snapshots = Snapshots(monkeypatch, str(web), str(store))
    with folder_swap.atomic_directory(target) as (staging, replaced):
        fill(staging, b"new", ("a.png", "c.png"))
    monkeypatch.undo()
    new = contents(target)
    assert new == {"a.png": b"new", "c.png": b"new"} and replaced == [2]
    assert len(snapshots.taken) >= 2
    for copy in snapshots.taken:
        images = os.path.join(copy, "images")
        if mode != "convert":  # a reader at that moment (converting a real folder has one such moment, see docs)
            assert contents(images) in (old, new), f"a reader after step {os.path.basename(copy)} finds a mix or nothing"
        folder_swap.remove_stale_temporaries(copy, recursive=False)  # the next start
        assert contents(images) in (old, new), f"a restart after step {os.path.basename(copy)} lost the folder"
        left = [n for n in os.listdir(copy) if n != "images" and not (os.path.islink(images)
                                                                     and os.readlink(images) == n)]
        assert left == [], f"a restart after step {os.path.basename(copy)} left {left}"


def test_a_swap_that_fails_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    target = str(tmp_path / "images")
    with folder_swap.atomic_directory(target) as (staging, _):
        fill(staging, b"old")

    def full(first, second):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder_swap, "_exchange", full)
    with pytest.raises(atomic.WriteError, match="images: the disk is full"):
        with folder_swap.atomic_directory(target) as (staging, _):
            fill(staging, b"new")
    assert contents(target) == {"a.png": b"old", "b.png": b"old"}
    assert os.listdir(tmp_path) == ["images"]


class Trace:
    """The order of fsyncs, renames and removals that util.run.atomic performs."""

    def __init__(self, monkeypatch):
        self.events = []
        real_fsync, real_replace, real_rename, real_remove = os.fsync, os.replace, os.rename, os.remove

        def fsync(fd):
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            return real_fsync(fd)

        def moved(real):
            def move(src, dst, *args, **kwargs):
                self.events.append(("rename", os.path.abspath(src), os.path.abspath(dst)))
                return real(src, dst, *args, **kwargs)
            return move

        def remove(path, *args, **kwargs):
            self.events.append(("remove", os.path.abspath(path)))
            return real_remove(path, *args, **kwargs)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", moved(real_replace))
        monkeypatch.setattr(os, "rename", moved(real_rename))
        monkeypatch.setattr(os, "remove", remove)

    def index(self, kind, *match, start=0):
        for i, event in enumerate(self.events[start:], start):
            if event[0] == kind and all(m is None or m == e for m, e in zip(match, event[1:])):
                return i
        return None


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps descriptors to paths through /proc")
def test_a_committed_set_survives_a_power_loss_at_any_moment(tmp_path, monkeypatch):
    """A power loss keeps only what was fsynced: the files' data, and a folder's names as of its last fsync. So
    each staged file is fsynced before its name is used, the journal and its name before the first rename, and
    the renames before the journal goes."""
    folder = str(tmp_path)
    finals = [os.path.join(folder, name) for name in ("latest_net_G.pth", "latest_train_state.pth")]
    trace = Trace(monkeypatch)
    with transactions.Transaction(folder, "latest") as transaction:
        for final in finals:
            transaction.write(final, lambda handle: handle.write(b"new"))
        journal = transaction.journal
    monkeypatch.undo()
    placed = trace.index("rename", None, journal)
    assert placed is not None
    journal_tmp = trace.events[placed][1]
    assert trace.index("fsync", journal_tmp) < placed, "the journal's data is not on the disk before its name"
    first_final = min(trace.index("rename", None, final) for final in finals)
    for final in finals:
        staged = trace.events[trace.index("rename", None, final)][1]
        assert trace.index("fsync", staged) < placed, f"{staged} is not on the disk before the journal names it"
        named = trace.index("fsync", folder, start=trace.index("fsync", staged))
        assert named is not None and named < placed, f"the name {staged} is not on the disk before the journal's"
    durable = trace.index("fsync", folder, start=placed)
    assert durable is not None and durable < first_final, \
        "the journal's name is not on the disk before the renames it protects: a power loss can keep a rename " \
        "and lose the journal that would complete the set"
    last_final = max(trace.index("rename", None, final) for final in finals)
    gone = trace.index("remove", journal)
    after = trace.index("fsync", folder, start=last_final)
    assert after is not None and after < gone, "the journal goes before the renames are on the disk"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps descriptors to paths through /proc")
def test_a_single_file_and_a_folder_swap_are_durable_when_they_return(tmp_path, monkeypatch):
    path = str(tmp_path / "train_opt.json")
    trace = Trace(monkeypatch)
    atomic.write_json(path, {"a": 1})
    renamed = trace.index("rename", None, path)
    assert trace.index("fsync", trace.events[renamed][1]) < renamed
    assert trace.index("fsync", str(tmp_path), start=renamed) is not None, "the new name is not fsynced"
    target = str(tmp_path / "images")
    with folder_swap.atomic_directory(target) as (staging, _):
        fill(staging, b"old")
    swapped = trace.index("rename", None, target)
    assert trace.index("fsync", str(tmp_path), start=swapped) is not None
    start = len(trace.events)
    with folder_swap.atomic_directory(target) as (staging, _):
        fill(staging, b"new")
    assert trace.index("fsync", str(tmp_path), start=start) is not None, "the replacement is not fsynced"


class PowerLoss:
    """A file system that forgets: records the folder's name operations (create, rename, remove) and its fsyncs,
    and lists every state a power loss can leave: the names as of the folder's last fsync, plus any subset of the
    operations after it. File data is fsynced before every rename in util.run.atomic, so only names are at stake."""

    def __init__(self, monkeypatch, folder):
        self.folder, self.events, self.journal_text = folder, [], {}
        real_new, real_fsync = atomic._new_temporary, os.fsync
        real_replace, real_rename, real_remove = os.replace, os.rename, os.remove

        def new_temporary(path):
            tmp = real_new(path)
            self._note("create", tmp)
            return tmp

        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}") == self.folder:
                self.events.append(("fsync",))
            return real_fsync(fd)

        def moved(real):
            def move(src, dst, *args, **kwargs):
                if str(dst).endswith(transactions.JOURNAL_SUFFIX):
                    self.journal_text[os.path.basename(src)] = open(src).read()
                result = real(src, dst, *args, **kwargs)
                self._note("rename", src, dst)
                return result
            return move

        def remove(path, *args, **kwargs):
            result = real_remove(path, *args, **kwargs)
            self._note("remove", path)
            return result

        monkeypatch.setattr(atomic, "_new_temporary", new_temporary)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", moved(real_replace))
        monkeypatch.setattr(os, "rename", moved(real_rename))
        monkeypatch.setattr(os, "remove", remove)

    def _note(self, kind, *paths):
        if all(os.path.dirname(os.path.abspath(p)) == self.folder for p in paths):
            self.events.append((kind, *(os.path.basename(p) for p in paths)))

    def states_after_a_power_loss(self, names):
        """Every {name: content label} a power loss at any moment can leave, from `names` before the first event."""
        durable, current, since = dict(names), dict(names), []
        for event in [None] + self.events:
            if event is not None:
                if event[0] == "fsync":
                    durable, since = dict(current), []
                else:
                    _apply_name_op(current, event)
                    since.append(event)
            for mask in range(2 ** len(since)):
                state = dict(durable)
                for i, op in enumerate(since):
                    if mask >> i & 1:
                        _apply_name_op(state, op)
                yield state


def _apply_name_op(names, op):
    if op[0] == "create":
        names[op[1]] = op[1]
    elif op[0] == "rename" and op[1] in names:
        names[op[2]] = names.pop(op[1])
    elif op[0] == "remove":
        names.pop(op[1], None)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="maps descriptors to paths through /proc")
def test_every_state_a_power_loss_leaves_recovers_to_one_whole_set(tmp_path, monkeypatch):
    folder = str(tmp_path / "run")
    os.makedirs(folder)
    finals = ["latest_net_G.pth", "latest_net_D.pth", "latest_train_state.pth"]
    for name in finals:
        with open(os.path.join(folder, name), "wb") as handle:
            handle.write(b"old")
    loss = PowerLoss(monkeypatch, folder)
    with transactions.Transaction(folder, "latest") as transaction:
        for name in finals:
            transaction.write(os.path.join(folder, name), lambda handle: handle.write(b"new"))
    monkeypatch.undo()
    staged_as = {}
    for text in loss.journal_text.values():
        staged_as.update({tmp: final for tmp, final in json.loads(text)["renames"]})
    checked = 0
    for state in loss.states_after_a_power_loss({name: "old" for name in finals}):
        disk = str(tmp_path / f"after{checked}")
        os.makedirs(disk)
        for name, label in state.items():
            if label in loss.journal_text:
                content = loss.journal_text[label]
            else:
                content = "old" if label == "old" else "new" if label in staged_as else "other"
            with open(os.path.join(disk, name), "w") as handle:
                handle.write(content)
        transactions.recover(disk)  # the next start
        folder_swap.remove_stale_temporaries(disk)
        found = {name: open(os.path.join(disk, name)).read() for name in finals}
        assert len(set(found.values())) == 1, f"a power loss left a mixed set {found} from names {state}"
        assert sorted(os.listdir(disk)) == sorted(finals)
        checked += 1
    assert checked > 10
