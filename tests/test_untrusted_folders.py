"""A run folder is read as untrusted input: it may be a tarball from someone else. A save journal that names
anything but its own set's files, and a symbolic link anywhere a run writes, refuse the folder before anything
is written, inside it or outside it."""
import json
import logging
import os
import shutil

import pytest

from conftest import folder_state, train_main
from util.dashboard.html_sink import HtmlSink
from util.run import atomic, links
from util.run import transaction as transactions
from util.run.run_folder import RunFolder, RunFolderError
from util.run.run_logs import CsvLog, attach_log_file

ARGS = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance", "--load_size", "36",
        "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
        "--display_id", "0", "--n_epochs", "1", "--n_epochs_decay", "0", "--save_epoch_freq", "1"]


def foreign_journal(run, entry):
    (run / "payload").write_text("echo the sender's code runs here\n")
    journal = run / ".latest.journal.json"
    journal.write_text(json.dumps({"renames": [entry]}))
    return journal


@pytest.fixture
def places(tmp_path):
    """(run folder, a folder outside it holding a file worth protecting)."""
    run, outside = tmp_path / "checkpoints" / "run", tmp_path / "outside"
    run.mkdir(parents=True)
    outside.mkdir()
    (outside / "bashrc").write_text("the user's own start-up file\n")
    return run, outside


# ------------------------------------------------------------------------------------------------ journals
@pytest.mark.parametrize("entry", [["payload", "../../outside/bashrc"], ["payload", "/tmp/elsewhere"],
                                   ["../../outside/bashrc", "latest_net_G.pth"], ["payload", ""],
                                   ["payload", "sub/latest_net_G.pth"], ["payload", ".."],
                                   ["payload", "latest_net_G.pth"], "payload"])
def test_a_journal_that_names_anything_but_its_own_files_is_refused_and_changes_nothing(tmp_path, places, entry):
    run, _ = places
    journal = foreign_journal(run, entry)
    before = folder_state(tmp_path)
    for attempt in (RunFolder(str(run)).tidy, lambda: transactions.recover(str(run))):
        with pytest.raises((RunFolderError, transactions.JournalError), match=str(journal)) as refused:
            attempt()
        assert "Nothing was renamed" in str(refused.value) and f"rm '{journal}'" in str(refused.value)
        assert folder_state(tmp_path) == before
    with pytest.raises(transactions.JournalError):  # a reader (test.py) does not read through it either
        transactions.pending(str(run))
    with pytest.raises(RunFolderError, match="save journal"):  # the read-only check before a run writes
        RunFolder(str(run)).check_new_run(continue_train=True, start_over=False)
    assert folder_state(tmp_path) == before


def test_the_journals_advice_works(tmp_path, places):
    run, outside = places
    journal = foreign_journal(run, ["payload", "../../outside/bashrc"])
    os.remove(journal)  # rm, as the refusal says
    RunFolder(str(run)).tidy()
    assert (outside / "bashrc").read_text() == "the user's own start-up file\n"


def test_a_journal_of_its_own_set_is_still_completed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    transaction = transactions.Transaction(str(folder), "latest")
    transaction.write(str(folder / "latest_net_G.pth"), lambda handle: handle.write(b"new"))
    (tmp, final), = transaction.staged
    (folder / ".latest.journal.json").write_text(json.dumps(
        {"renames": [[os.path.basename(tmp), os.path.basename(final)]]}))  # what a commit killed mid-way leaves
    assert transactions.recover(str(folder)) == [final]
    assert (folder / "latest_net_G.pth").read_bytes() == b"new"
    assert sorted(os.listdir(folder)) == ["latest_net_G.pth"]


def test_a_commit_refuses_a_staged_file_that_vanished(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "latest_net_G.pth").write_bytes(b"old G")
    transaction = transactions.Transaction(str(folder), "latest")
    for name in ("latest_net_G.pth", "latest_net_D.pth"):
        transaction.write(str(folder / name), lambda handle: handle.write(b"new"))
    os.remove(transaction.staged[1][0])
    with pytest.raises(atomic.WriteError, match="latest_net_D.pth: its staged copy vanished"):
        transaction.commit()
    assert sorted(os.listdir(folder)) == ["latest_net_G.pth"]  # no half set, no journal, no staged leftovers
    assert (folder / "latest_net_G.pth").read_bytes() == b"old G"


def test_a_transaction_writes_only_files_of_its_folder(tmp_path):
    transaction = transactions.Transaction(str(tmp_path / "run"), "latest")
    with pytest.raises(ValueError, match="files of that folder only"):
        transaction.write(str(tmp_path / "elsewhere.pth"), lambda handle: handle.write(b"x"))
    assert transaction.staged == []


# ------------------------------------------------------------------------------------------------ links, writer by writer
def test_train_log_that_is_a_link_is_not_written_through(tmp_path, places):
    run, outside = places
    (run / "train.log").symlink_to(outside / "bashrc")
    before = folder_state(tmp_path)
    with pytest.raises(links.LinkRefused, match=f"{run / 'train.log'} is a symbolic link.*cp -rL"):
        attach_log_file(str(run / "train.log"))
    logging.getLogger("untrusted").warning("a line after the refusal")
    assert folder_state(tmp_path) == before


def test_a_csv_log_that_is_a_link_is_not_written_through(tmp_path, places):
    run, outside = places
    (run / "loss_log.csv").symlink_to(outside / "bashrc")
    before = folder_state(tmp_path)
    log = CsvLog(str(run / "loss_log.csv"))
    for attempt in (lambda: log.append({"epoch": 1, "G_GAN": 0.5}), lambda: log.keep(lambda row: False)):
        with pytest.raises(links.LinkRefused, match="loss_log.csv is a symbolic link"):
            attempt()
        assert folder_state(tmp_path) == before


@pytest.mark.parametrize("linked", ["web", "web/index.html", "web/images", "web/saved_steps.jsonl"])
def test_the_run_page_is_not_written_through_a_link(tmp_path, places, linked):
    run, outside = places
    (outside / "web").mkdir()
    (outside / "web" / "index.html").write_text("someone's page\n")
    (run / "web").mkdir()
    target = outside / linked
    target.parent.mkdir(parents=True, exist_ok=True)
    if linked == "web/images":
        target.mkdir()
    elif linked != "web":
        target.write_text("someone's file\n")
    if linked == "web":
        (run / "web").rmdir()
    (run / linked).symlink_to(target)
    before = folder_state(tmp_path)
    with pytest.raises(links.LinkRefused, match=f"{run / linked} is a symbolic link"):
        sink = HtmlSink(str(run), "run")
        sink.save_html()
    assert folder_state(tmp_path) == before


def test_a_dangling_lock_link_creates_nothing(tmp_path, places):
    run, outside = places
    (run / "running.lock").symlink_to(outside / "created_by_the_lock")
    before = folder_state(tmp_path)
    folder = RunFolder(str(run))
    with pytest.raises(RunFolderError, match="running.lock is a symbolic link"):
        folder.lock()
    assert folder_state(tmp_path) == before
    assert not (outside / "created_by_the_lock").exists()


# ------------------------------------------------------------------------------------------------ a received run, resumed
@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):
    """A finished one-epoch pix2pix run (with its HTML page), copied by each test that receives it."""
    ck = tmp_path_factory.mktemp("trained")
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *ARGS)
    return ck / "run"


def _link_train_log(run, outside):
    os.remove(run / "train.log")
    (run / "train.log").symlink_to(outside / "bashrc")


def _link_loss_log(run, outside):
    shutil.move(run / "loss_log.csv", outside / "loss_log.csv")
    (run / "loss_log.csv").symlink_to(outside / "loss_log.csv")


def _link_web(run, outside):
    shutil.move(run / "web", outside / "web")
    (run / "web").symlink_to(outside / "web")


def _dangling_lock(run, outside):
    if os.path.lexists(run / "running.lock"):
        os.remove(run / "running.lock")
    (run / "running.lock").symlink_to(outside / "created_by_the_lock")


def _journal(run, outside):
    foreign_journal(run, ["payload", "../../outside/bashrc"])


@pytest.mark.parametrize("received", [_link_train_log, _link_loss_log, _link_web, _dangling_lock, _journal])
def test_a_received_run_with_links_or_a_foreign_journal_is_refused_by_a_resume(tmp_path, trained, demo_root,
                                                                                received):
    run, outside = tmp_path / "checkpoints" / "run", tmp_path / "outside"
    shutil.copytree(trained, run, symlinks=True)
    outside.mkdir()
    (outside / "bashrc").write_text("the user's own start-up file\n")
    received(run, outside)
    before = folder_state(tmp_path)
    refused = train_main("--dataroot", demo_root, "--checkpoints_dir", run.parent, "--name", "run", *ARGS,
                         "--n_epochs", "2", "--continue_train", check=False)
    assert refused.returncode != 0, refused.stdout[-2000:]
    said = " ".join(refused.stderr.split())
    assert str(run) in said and ("cp -rL" in said or "rm '" in said), said
    assert folder_state(tmp_path) == before
