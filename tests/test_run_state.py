"""What survives what: SIGKILL at any moment, a full disk, two runs on one name, refused commands, divergence,
non-finite checkpoints and fp16 scalers. Runs that must die are subprocesses (slow tier); the rest run in-process."""
import csv
import errno
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import ROOT, folder_state, stored_train_options, test_main, train_main
from util.run.run_folder import RunFolder, RunFolderError

PIX2PIX = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance"]
ATME = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8"]
COMMON = ["--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
          "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--print_freq", "2", "--n_epochs", "2",
          "--n_epochs_decay", "1", "--save_latest_freq", "4", "--save_epoch_freq", "1"]
MODELS = {"pix2pix": PIX2PIX, "atme": ATME}

# Runs train.main with one function replaced by a version that SIGKILLs the process at its Nth call.
KILLER = r"""
import os, signal, sys
fault, count, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = [0]

def die_at_count():
    calls[0] += 1
    if calls[0] == count:
        os.kill(os.getpid(), signal.SIGKILL)

def kill_on(owner, name):
    original = getattr(owner, name)
    def wrapper(*a, **k):
        die_at_count()
        return original(*a, **k)
    setattr(owner, name, wrapper)

import train
from util.run import atomic, transaction
if fault == "step":          # before the Nth optimiser step
    from models.base_model import BaseModel
    kill_on(BaseModel, "optimizer_step")
elif fault == "stage":       # while a checkpoint set is being staged (before its Nth file)
    kill_on(atomic, "stage")
elif fault == "commit":      # inside the Nth commit, after its first rename
    apply = transaction._apply
    def partial(folder, names):
        calls[0] += 1
        if calls[0] == count:
            apply(folder, names[:1])
            os.kill(os.getpid(), signal.SIGKILL)
        apply(folder, names)
    transaction._apply = partial
elif fault == "flush":       # at the Nth flush of the ATME pool (the end-of-epoch flush among them)
    from models.atme.pool import EpochPool
    kill_on(EpochPool, "flush")
sys.exit(train.main(args))
"""


def run_args(model, ck, name, *extra):
    return ["--dataroot", DEMO["root"], "--checkpoints_dir", str(ck), "--name", name, *MODELS[model], *COMMON, *extra]


DEMO = {}


@pytest.fixture(autouse=True)
def _demo(demo_root):
    DEMO["root"] = demo_root


def killed_run(args, fault, count):
    # The killed run takes this process's torch thread count: the reference and the resume train in this process,
    # and a different count sums in a different order, which a bit-for-bit comparison would report.
    threads = str(torch.get_num_threads())
    proc = subprocess.run([sys.executable, "-c", KILLER, fault, str(count), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS=threads))
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def weights(run_dir):
    return {name: torch.load(os.path.join(run_dir, name), map_location="cpu", weights_only=True)
            for name in sorted(os.listdir(run_dir)) if name.startswith("latest_net_")}


def pool_files(run_dir):
    return {name: np.load(os.path.join(run_dir, name)) for name in sorted(os.listdir(run_dir))
            if name.startswith(("disc_pool_", "1_disc_pool", "2_disc_pool", "3_disc_pool"))}


def rows(path, columns=None):
    with open(path) as handle:
        found = list(csv.DictReader(handle))
    return [{k: v for k, v in r.items() if columns is None or k in columns} for r in found]


def assert_same_run(a, b, kept_pools="all"):
    """Runs `a` and `b` are the same bit for bit: weights, pools, convergence and loss rows. `kept_pools="common"`
    compares only the pools kept with an epoch that both have (an extended run also kept one with the epoch it
    first ended at) besides the live ones."""
    wa, wb = weights(a), weights(b)
    assert list(wa) == list(wb)
    for name in wa:
        for key in wa[name]:
            assert torch.equal(wa[name][key], wb[name][key]), f"{name} {key} differs"
    pa, pb = pool_files(a), pool_files(b)
    if kept_pools == "common":
        live = {"disc_pool_a.npy", "disc_pool_b.npy"}
        assert live & set(pa) == live & set(pb)
        pa, pb = ({k: v for k, v in p.items() if k in set(pa) & set(pb)} for p in (pa, pb))
    assert list(pa) == list(pb)
    for name in pa:
        assert np.array_equal(pa[name], pb[name]), f"{name} differs"
    assert rows(os.path.join(a, "convergence.csv")) == rows(os.path.join(b, "convergence.csv"))
    losses = ("epoch", "total_iters", "G_GAN", "G_L1", "D_real", "D_fake")
    assert rows(os.path.join(a, "loss_log.csv"), losses) == rows(os.path.join(b, "loss_log.csv"), losses)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, demo_root):
    """Uninterrupted runs of each model, the standard every killed-and-resumed run must match bit for bit."""
    DEMO["root"] = demo_root
    ck = tmp_path_factory.mktemp("reference")
    for model in MODELS:
        train_main(*run_args(model, ck, model))
    return ck


@pytest.mark.slow
@pytest.mark.parametrize("model, fault, count", [
    ("pix2pix", "step", 7), ("pix2pix", "stage", 6), ("pix2pix", "commit", 3),
    ("atme", "step", 6), ("atme", "stage", 7), ("atme", "commit", 4), ("atme", "flush", 4), ("atme", "flush", 9),
])
def test_sigkill_anywhere_then_resume_matches_an_uninterrupted_run(reference, tmp_path, model, fault, count):
    args = run_args(model, tmp_path, model)
    killed_run(args, fault, count)
    assert os.path.isfile(tmp_path / model / "latest_train_state.pth"), "no checkpoint before the kill: pick later"
    train_main(*args, "--continue_train")
    assert not [f for f in os.listdir(tmp_path / model) if f.endswith(".tmp") or f.endswith(".journal.json")]
    assert_same_run(str(reference / model), str(tmp_path / model))


@pytest.mark.slow
def test_killed_inside_a_commit_is_completed_and_readable_without_writing(tmp_path):
    """test.py reads the set a killed commit left half-renamed, without writing to the run folder."""
    args = run_args("pix2pix", tmp_path, "half")
    killed_run(args, "commit", 2)
    run = tmp_path / "half"
    journals = [f for f in os.listdir(run) if f.endswith(".journal.json")]
    assert journals, "the kill should leave a journal of the unfinished renames"
    before = folder_state(run)
    test_main("--dataroot", DEMO["root"], "--checkpoints_dir", tmp_path, "--name", "half",
              "--results_dir", tmp_path / "results", "--num_test", "2")
    assert folder_state(run) == before
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_main(*args, "--continue_train")  # completes the journal, then trains on
    assert not [f for f in os.listdir(run) if f.endswith(".journal.json") or f.endswith(".tmp")]
    # it steps the schedule before its first optimizer step: no torch warning that a value is skipped (none is)
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]


def test_full_disk_keeps_the_previous_set_and_says_what_to_do(tmp_path, monkeypatch):
    args = run_args("pix2pix", tmp_path, "full", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    run = tmp_path / "full"
    before = {name: folder_state(run)[name] for name in folder_state(run) if name.startswith("latest_")}
    from util.run import atomic
    real_stage, calls = atomic.stage, [0]

    def full_disk(path, fill):
        calls[0] += 1
        if calls[0] == 2:  # the second file of the set: one is already staged
            def no_space(tmp):
                with open(tmp, "wb") as handle:
                    handle.write(b"partial")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_stage(path, no_space)
        return real_stage(path, fill)

    monkeypatch.setattr(atomic, "stage", full_disk)
    result = train_main(*args[:-4], "--n_epochs", "2", "--n_epochs_decay", "0", "--continue_train", check=False)
    assert result.returncode != 0
    message = result.stderr
    assert "the disk is full" in message and str(run) in message and "--continue_train" in message
    assert "is intact" in message and "Traceback" not in message
    after = folder_state(run)
    assert {name: after[name] for name in before} == before  # the previous set, byte for byte
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]
    state = torch.load(run / "latest_train_state.pth", weights_only=True)
    g = torch.load(run / "latest_net_G.pth", weights_only=True)
    assert all(torch.equal(g[k], v.cpu()) for k, v in state["networks"]["G"].items())  # one moment, not two


@pytest.mark.slow
def test_file_size_limit_in_a_child_is_a_write_error(tmp_path):
    """A real failing write (RLIMIT_FSIZE, as a full disk behaves) in a subprocess: torch's zip writer error is
    reported as the project's message and the previous set stays loadable."""
    args = run_args("pix2pix", tmp_path, "limit", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    run = tmp_path / "limit"
    before = {k: v for k, v in folder_state(run).items() if k.startswith("latest_")}
    limiter = ("import resource, signal, sys, train; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000)); "
               "from util.command_line.cli import run_main; sys.argv = ['train.py'] + sys.argv[1:]; run_main(train.main)")
    more = [a if a != "1" or args[i - 1] != "--n_epochs" else "2" for i, a in enumerate(map(str, args))]
    proc = subprocess.run([sys.executable, "-c", limiter, *more, "--continue_train"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "could not write" in proc.stderr and "larger than this process may write" in proc.stderr
    assert "enforce fail" not in proc.stderr
    assert {k: v for k, v in folder_state(run).items() if k.startswith("latest_")} == before


def test_a_refused_command_changes_nothing(tmp_path):
    args = run_args("pix2pix", tmp_path, "kept", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    run = tmp_path / "kept"
    before = folder_state(run)
    # a resume that would change the architecture
    refused = train_main(*args, "--continue_train", "--ngf", "16", check=False)
    assert refused.returncode != 0 and "--ngf is 16" in refused.stderr
    # a new run on a folder that holds one
    again = train_main(*args, check=False)
    assert again.returncode != 0 and "--continue_train" in again.stderr and "--start_over" in again.stderr
    assert folder_state(run) == before
    # a resume of a run that does not exist creates no folder, and neither does test.py on an unknown name
    missing = train_main(*run_args("pix2pix", tmp_path, "nobody"), "--continue_train", check=False)
    assert missing.returncode != 0 and not (tmp_path / "nobody").exists()
    unknown = test_main("--dataroot", DEMO["root"], "--checkpoints_dir", tmp_path, "--name", "nobody2",
                        "--results_dir", tmp_path / "results", check=False)
    assert unknown.returncode != 0 and "--name" in unknown.stderr
    assert not (tmp_path / "nobody2").exists() and not (tmp_path / "results").exists()


def test_start_over_moves_the_old_run_aside(tmp_path):
    args = run_args("pix2pix", tmp_path, "again", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    old = folder_state(tmp_path / "again")
    train_main(*args, "--start_over")
    aside = [p for p in os.listdir(tmp_path) if p.startswith("again.old-")]
    assert len(aside) == 1 and folder_state(tmp_path / aside[0]) == old
    assert len(rows(tmp_path / "again" / "convergence.csv")) == 1  # the new run's rows only


def test_test_py_reads_a_read_only_run_folder(tmp_path):
    args = run_args("pix2pix", tmp_path, "store", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    run = tmp_path / "store"
    before = folder_state(run)
    modes = {}
    for root, dirs, files in os.walk(run):
        for name in dirs + files:
            path = os.path.join(root, name)
            modes[path] = os.stat(path).st_mode
            os.chmod(path, 0o555 if name in dirs else 0o444)
    os.chmod(run, 0o555)
    try:
        test_main("--dataroot", DEMO["root"], "--checkpoints_dir", tmp_path, "--name", "store",
                  "--results_dir", tmp_path / "results", "--num_test", "2")
    finally:
        os.chmod(run, 0o755)
        for path, mode in modes.items():
            os.chmod(path, mode)
    assert folder_state(run) == before
    assert (tmp_path / "results" / "store" / "test_latest" / "test_opt.txt").is_file()


@pytest.mark.slow
def test_only_the_process_that_takes_the_lock_probes_it(tmp_path):
    # The busy probe takes the lock for a moment: a sibling rank probing while rank 0 takes it made rank 0 fail.
    owner, sibling = RunFolder(str(tmp_path / "run")), RunFolder(str(tmp_path / "run"))
    owner.lock()
    try:
        sibling.check_new_run(continue_train=True, start_over=False, probe_lock=False)  # does not touch the lock
        with pytest.raises(RunFolderError, match="in use"):
            sibling.check_new_run(continue_train=True, start_over=False)
    finally:
        owner.release()


@pytest.mark.slow  # a training subprocess of 500 epochs holds the run while a second one tries it
def test_two_runs_on_one_name(tmp_path):
    args = run_args("pix2pix", tmp_path, "busy", "--n_epochs", "500", "--n_epochs_decay", "0")
    first = subprocess.Popen([sys.executable, "train.py", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        owner = tmp_path / "busy" / "running.json"
        for _ in range(600):
            if (tmp_path / "busy" / "loss_log.csv").exists() and owner.exists():
                break
            first.poll()
            assert first.returncode is None, first.stdout.read()
            time.sleep(0.1)
        second = train_main(*args, "--continue_train", check=False)
        assert second.returncode != 0
        assert f"process {first.pid}" in second.stderr and "in use" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(60)
    # the lock of a killed process does not block
    resumed = train_main(*run_args("pix2pix", tmp_path, "busy", "--n_epochs", "1", "--n_epochs_decay", "0"),
                         "--continue_train", check=False)
    assert "in use" not in resumed.stderr


def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path):
    args = run_args("pix2pix", tmp_path, "tmp", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    stale = tmp_path / "tmp" / ".latest_net_G.pth.abcd1234.tmp"
    stale.write_bytes(b"\0" * 1000)
    train_main(*args[:-4], "--n_epochs", "2", "--n_epochs_decay", "0", "--continue_train")
    assert not stale.exists()


def test_a_non_finite_loss_stops_training_before_it_is_saved(tmp_path, monkeypatch):
    import models.pix2pix_model as pix2pix
    real, calls = pix2pix.conditional_g_losses, [0]

    def poisoned(*a, **k):
        loss, gan, l1, fake_map = real(*a, **k)
        calls[0] += 1
        if calls[0] >= 7:  # from the 7th generator step on (epoch 2, second step)
            gan = gan * float("nan")
        return loss + gan, gan, l1, fake_map

    monkeypatch.setattr(pix2pix, "conditional_g_losses", poisoned)
    args = run_args("pix2pix", tmp_path, "nan", "--save_latest_freq", "1000")
    result = train_main(*args, check=False)
    assert result.returncode != 0
    message = result.stderr
    assert "training diverged" in message and "the loss of the G step was nan at epoch 2" in message
    assert "--lr" in message and "'latest' (epoch 2, 8 images)" in message
    state = torch.load(tmp_path / "nan" / "latest_train_state.pth", weights_only=True)
    assert state["epoch"] == 2 and state["total_iters"] == 8  # the epoch-1 checkpoint stayed the newest
    for name in ("G", "D"):
        net = torch.load(tmp_path / "nan" / f"latest_net_{name}.pth", weights_only=True)
        assert all(torch.isfinite(v).all() for v in net.values() if v.is_floating_point())


def test_non_finite_checkpoints_are_refused_by_name(tmp_path):
    args = run_args("pix2pix", tmp_path, "bad", "--n_epochs", "1", "--n_epochs_decay", "0")
    train_main(*args)
    run = tmp_path / "bad"
    net = torch.load(run / "latest_net_G.pth", weights_only=True)
    key = next(k for k, v in net.items() if v.is_floating_point())
    net[key][0] = float("nan")
    torch.save(net, run / "latest_net_G.pth")
    state = torch.load(run / "latest_train_state.pth", weights_only=True)
    state["networks"]["D"][next(iter(state["networks"]["D"]))].fill_(float("inf"))
    torch.save(state, run / "latest_train_state.pth")
    # --no_verify: the files were rewritten after their set was committed, which the checksums alone would refuse
    tested = test_main("--dataroot", DEMO["root"], "--checkpoints_dir", tmp_path, "--name", "bad",
                       "--results_dir", tmp_path / "r", "--no_verify", check=False)
    assert tested.returncode != 0 and "latest_net_G.pth" in tested.stderr and key in tested.stderr
    resumed = train_main(*args[:-4], "--n_epochs", "2", "--n_epochs_decay", "0", "--continue_train", "--no_verify",
                         check=False)
    assert resumed.returncode != 0 and "latest_train_state.pth" in resumed.stderr and "networks.D." in resumed.stderr


def test_fp16_scalers_return_to_their_own_optimisers(tmp_path):
    """Scalers are created in first-use order (D, then G) but belong to optimisers [G, D]: a resume must give
    each optimiser its own scale."""
    from models import create_model
    opt = stored_train_options(run_args("pix2pix", tmp_path, "amp"))
    opt.dataset_size = 8
    model = create_model(opt)
    model.setup(opt)
    model.amp_dtype = torch.float16  # fp16 needs CUDA; the bookkeeping is what is tested here
    model._scalers[id(model.optimizer_D)] = torch.amp.GradScaler("cpu", init_scale=8.0)
    model._scalers[id(model.optimizer_G)] = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for scaler in model._scalers.values():
        scaler._lazy_init_scale_growth_tracker(torch.device("cpu"))
    model.save_training_state("latest", 1, 0, 0)
    opt.continue_train = True
    resumed = create_model(opt)
    resumed.amp_dtype = torch.float16
    resumed.setup(opt)
    assert resumed._scalers[id(resumed.optimizer_G)].get_scale() == 1024.0
    assert resumed._scalers[id(resumed.optimizer_D)].get_scale() == 8.0


@pytest.mark.slow
def test_resume_from_an_older_epoch_restores_its_pool(reference, tmp_path):
    """`--epoch 1` continues from the pool kept with the epoch-1 checkpoint: its epoch 2 equals the uninterrupted
    run's epoch 2, although the run had gone on to epoch 3."""
    import shutil
    shutil.copytree(reference / "atme", tmp_path / "atme")
    train_main(*run_args("atme", tmp_path, "atme"), "--continue_train", "--epoch", "1", "--n_epochs", "2",
               "--n_epochs_decay", "0")
    ours = torch.load(tmp_path / "atme" / "2_net_G.pth", weights_only=True)
    theirs = torch.load(reference / "atme" / "2_net_G.pth", weights_only=True)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
