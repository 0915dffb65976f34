"""What a checkpoints folder holds, read before any data set or network is built: which runs exist, which
checkpoint tags a run has, and the refusals of a resume or a test that has nothing to load. Each refusal lists
what does exist and ends with a command that works."""
import glob
import os

from util.run import transaction
from util.run.run_folder import RunFolderError, holds_a_run

SHOWN = 8  # runs or tags listed in a message


NESTING = 3  # run names may be nested (group/run): folders this deep are looked into


def existing_runs(checkpoints_dir):
    """Names of the runs under `checkpoints_dir`, as --name takes them (`group/run` for a nested one), sorted."""
    found = []

    def look(folder, name, depth):
        if not os.path.isdir(folder) or os.path.islink(folder):
            return
        if name and holds_a_run(folder):
            found.append(name)
            return
        if depth < NESTING:
            for child in sorted(os.listdir(folder)):
                if not child.startswith(".") and ".old-" not in child:
                    look(os.path.join(folder, child), f"{name}/{child}" if name else child, depth + 1)
    look(checkpoints_dir, "", 0)
    return sorted(found)


def run_name_of(folder, checkpoints_dir):
    """The --name of `folder` under `checkpoints_dir` (groups kept)."""
    return os.path.relpath(folder, checkpoints_dir).replace(os.sep, "/")


def _tags(folder, marker):
    """Checkpoint tags of the files `<tag><marker>...` in `folder`, with the ones a killed save left staged;
    epochs in order, then the named tags."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(folder, f"*{marker}*"))]
    names += [os.path.basename(final) for final in transaction.pending(folder)]
    tags = {name.split(marker)[0] for name in names if marker in name and name.endswith(".pth")}
    return sorted(tags, key=lambda t: (not t.isdigit(), int(t) if t.isdigit() else 0, t))


def training_state_tags(folder):
    """Tags of `<tag>_train_state.pth` in a run folder: what --continue_train --epoch can name."""
    return _tags(folder, "_train_state")


def weight_tags(folder):
    """Tags of `<tag>_net_<NAME>.pth` in a run folder: what test.py --epoch can name."""
    return _tags(folder, "_net_")


def _listing(items, empty):
    if not items:
        return empty
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _runs_line(checkpoints_dir):
    runs = existing_runs(checkpoints_dir)
    return f"Runs in {checkpoints_dir}: {_listing(runs, 'none')}."


def check_resumable(folder, tag, retry, checkpoints_dir, start_over, resume, has_data):
    """Refuse --continue_train when `folder` has no training state `tag`. `retry(drop, add)` is the user's
    command without the flags `drop` and with the arguments `add`; `start_over()` the command that trains the
    run afresh with its stored options; `resume(name)` the command that resumes another run; `has_data`
    whether the command names its --dataroot (a new run needs it): what the message says to type instead."""
    if tag in training_state_tags(folder):
        return
    name = run_name_of(folder, checkpoints_dir)
    if not holds_a_run(folder):
        runs = existing_runs(checkpoints_dir)
        if has_data:
            way = f"start this run without --continue_train:\n  {retry(('--continue_train', '--epoch', '--load_iter'), ())}"
        else:
            way = ("start a new run without --continue_train and with its --dataroot DIR" +
                   (f", or resume one that exists:\n  {resume(runs[0])}" if runs else "."))
        raise RunFolderError(
            f"--continue_train: there is no run {name!r} in {checkpoints_dir} to resume.\n"
            f"{_runs_line(checkpoints_dir)} Resume one with --name, or {way}")
    tags = training_state_tags(folder)
    if tags:
        pick = "latest" if "latest" in tags else tags[-1]
        raise RunFolderError(
            f"--continue_train: the run in {folder} has no training state {tag!r} ({tag}_train_state.pth).\n"
            f"It has {_listing(tags, 'none')}; pass one of them as --epoch, e.g.:\n"
            f"  {retry(('--epoch', '--load_iter'), ('--epoch', pick))}")
    raise RunFolderError(
        f"--continue_train: the run in {folder} saved no resumable state (it stopped before its first save).\n"
        f"Start it afresh with its own options; --start_over moves the earlier files aside first:\n"
        f"  {start_over()}")


def check_trained(folder, tag, retry, checkpoints_dir):
    """Refuse a test of a run folder that does not exist or has no weights `tag`; `retry` as for
    `check_resumable`."""
    name = run_name_of(folder, checkpoints_dir)
    runs = existing_runs(checkpoints_dir)
    if tag in weight_tags(folder):
        return
    tags = weight_tags(folder)
    if tags:
        pick = "latest" if "latest" in tags else tags[-1]
        raise RunFolderError(f"--epoch {tag}: {folder} has no weights {tag}_net_*.pth.\n"
                             f"It has {_listing(tags, 'none')}; pass one of them as --epoch, e.g.:\n"
                             f"  {retry(('--epoch', '--load_iter'), ('--epoch', pick))}")
    what = (f"there is no run folder {folder}" if not os.path.isdir(folder) else
            f"{folder} holds no weights (*_net_*.pth) yet")
    others = [run for run in runs if run != name and weight_tags(os.path.join(checkpoints_dir, run))]
    if not others:
        raise RunFolderError(f"--name {name}: {what}.\n{_runs_line(checkpoints_dir)} Train it with train.py "
                             f"(with its --dataroot), or pass the --checkpoints_dir that holds yours.")
    raise RunFolderError(f"--name {name}: {what}.\n{_runs_line(checkpoints_dir)} Test one of them, e.g.:\n"
                         f"  {retry(('--name',), ('--name', others[0]))}")
