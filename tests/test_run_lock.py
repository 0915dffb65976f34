"""The run folder's lock: a regular file opened for reading and writing (what NFS needs), a clear message when
the file system cannot lock, and `--lock none` as the stated-unsafe way out."""
import errno
import fcntl
import os

import pytest

from conftest import train_main
from util.run import run_folder
from util.run.run_folder import LOCK_FILE, RunFolder, RunFolderError, file_system_of

ARGS = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance", "--load_size", "36",
        "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
        "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


def nfs_flock(fd, operation):
    """flock as the Linux NFS client performs it: a POSIX lock over the whole file, which needs a regular file
    and, for an exclusive lock, a descriptor open for writing (EBADF otherwise)."""
    if operation & fcntl.LOCK_UN:
        return fcntl.lockf(fd, fcntl.LOCK_UN)
    return fcntl.lockf(fd, operation)


def test_the_lock_is_a_file_that_nfs_can_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder.fcntl, "flock", nfs_flock)
    run = RunFolder(str(tmp_path / "run"))
    run.lock()
    try:
        assert os.path.isfile(tmp_path / "run" / LOCK_FILE)
    finally:
        run.release()
    RunFolder(str(tmp_path / "run")).check_new_run(continue_train=True, start_over=False)  # the probe, too


def failing_flock(fd, operation):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))


def test_a_file_system_without_locks_gets_a_message_and_nothing_is_written(tmp_path, demo_root, monkeypatch):
    monkeypatch.setattr(run_folder.fcntl, "flock", failing_flock)
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "nolocks", *ARGS]
    refused = train_main(*args, check=False)
    assert refused.returncode != 0
    message = refused.stderr
    assert f"cannot lock {tmp_path / 'nolocks' / LOCK_FILE}" in message and "No locks available" in message
    assert file_system_of(str(tmp_path)) in message and "mounted at" in message
    assert "--lock none" in message and "unsafe" in message
    assert not (tmp_path / "nolocks").exists()  # a refused command writes nothing
    # the way out the message offers, typed as shown
    done = train_main(*args, "--lock", "none")
    said = done.stdout + done.stderr
    assert "--lock none" in said and "nothing stops a second run" in said
    assert (tmp_path / "nolocks" / "latest_net_G.pth").is_file()
    assert not (tmp_path / "nolocks" / LOCK_FILE).exists()


def test_a_resume_on_a_file_system_without_locks_is_refused_by_the_probe(tmp_path, monkeypatch):
    run = RunFolder(str(tmp_path / "run"))
    run.lock()
    run.release()
    before = sorted(os.listdir(tmp_path / "run"))
    monkeypatch.setattr(run_folder.fcntl, "flock", failing_flock)
    with pytest.raises(RunFolderError, match="--lock none"):
        RunFolder(str(tmp_path / "run")).check_new_run(continue_train=True, start_over=False)
    assert sorted(os.listdir(tmp_path / "run")) == before


def test_the_file_system_is_named():
    assert file_system_of("/") != "an unknown file system"
    assert file_system_of(os.path.dirname(os.path.abspath(__file__))).split(" mounted at ")[1].startswith("/")
