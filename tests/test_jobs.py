"""Runs as jobs (scripts/experiments/jobs): the status view read from run folders and events files, the executor
flags (a refused --executor slurm, what --dry_run shows), and, in the slow tier, a study whose runs are local
submitit jobs: two at a time equals one after another, a job sent submitit's checkpoint signal mid-epoch is
requeued and ends equal to an uninterrupted run, a failing job is listed with its log while the others finish."""
import csv
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, printed_commands, run_main, script_args
from scripts.experiments.jobs import events
from scripts.experiments.jobs.run_job import RunJob
from scripts.experiments.jobs.status import run_state, status_table
from scripts.experiments.jobs.submit import still_running
from scripts.experiments.study import cli as convergence_study
from util.command_line.commands import interpreter
from util.run.run_logs import CsvLog

TINY = ["--load_size", "32", "--crop_size", "32", "--netD", "n_layers", "--n_layers_D", "1", "--ndf", "8",
        "--gpu_ids", "-1", "--num_threads", "0", "--smooth", "2"]
FLAGS = {"atme": "atme=--dim 8 --init_dim 8 --dim_mults 1,2 --groups 4", "pix2pix": "pix2pix=--netG unet --ngf 8"}


def study_args(dataroot, study_dir, models=("atme", "pix2pix"), seeds=(0, 1), epochs=(2, 1), batch=4, *extra):
    return ["--dataroot", str(dataroot), "--study_dir", str(study_dir), "--models", *models,
            "--seeds", *map(str, seeds), "--n_epochs", str(epochs[0]), "--n_epochs_decay", str(epochs[1]),
            "--batch_size", str(batch), *TINY, *[a for m in models for a in ("--model_flags", FLAGS[m])], *extra,
            "--", "--no_html"]


def fake_job(tmp_path, name, epochs=3):
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    return RunJob(name, str(run_dir), [], epochs, events.events_path(str(tmp_path / "jobs"), name), str(tmp_path))


# ------------------------------------------------------------------------------------------- fast: the status view
def test_status_names_each_state_from_the_folders_alone(tmp_path):
    new, pending, running, preempted, failed, finished, gone = (
        fake_job(tmp_path, n) for n in ("new", "pending", "running", "preempted", "failed", "finished", "gone"))
    events.record(pending.events, "submitted", "17")
    events.record(running.events, "submitted")
    events.record(running.events, "started", "18")  # this process: alive
    CsvLog(os.path.join(running.run_dir, "loss_log.csv")).append(dict(epoch=2, iters=4, G_GAN=0.7))
    for _ in range(2):
        events.record(preempted.events, "started", "19")
        events.record(preempted.events, "preempted", "19", detail="SIGUSR2 saved latest in epoch 2 after 4 images")
    log = tmp_path / "failed.err"
    log.write_text("Traceback (most recent call last):\nValueError: the data ran out\n"
                   "\repoch 1/3: 100%|##########| 2/2 [00:01<00:00,  1.88batch/s]\n")
    events.record(failed.events, "started", "20", str(log))
    events.record(failed.events, "failed", "20", str(log), "ValueError: the data ran out")
    events.record(finished.events, "finished", "21")
    events.record(gone.events, "started", "22")
    with open(gone.events) as handle:  # a process that no longer runs on this host
        text = handle.read()
    with open(gone.events, "w") as handle:
        handle.write(text.replace(f",{os.getpid()},", ",999999999,"))
    queued, abandoned = fake_job(tmp_path, "queued"), fake_job(tmp_path, "abandoned")
    events.record(queued.events, "queued", detail="local executor, at most 2 at once")  # this process: alive
    events.record(abandoned.events, "queued", detail="local executor, at most 2 at once")
    with open(abandoned.events) as handle:  # queued by a study that stopped before submitting it
        text = handle.read()
    with open(abandoned.events, "w") as handle:
        handle.write(text.replace(f",{os.getpid()},", ",999999999,"))
    assert run_state(queued) == ("pending", f"queued by the submitting process ({socket.gethostname()}:"
                                            f"{os.getpid()}): local executor, at most 2 at once")
    assert run_state(abandoned) == ("not submitted", "")
    assert still_running(queued) and not still_running(abandoned)  # a second call leaves the first's queue alone
    states = {job.name: run_state(job) for job in (new, pending, running, preempted, failed, finished, gone)}
    assert states["new"] == ("not submitted", "")
    assert states["pending"][0] == "pending" and "job 17 submitted" in states["pending"][1]
    assert states["running"] == ("running (epoch 2 of 3)", "")
    assert states["preempted"] == ("pending", "preempted and requeued 2 times")
    assert states["failed"][0] == "failed"
    assert states["failed"][1].startswith("ValueError: the data ran out; log: ") and str(log) in states["failed"][1]
    assert states["finished"] == ("finished", "")
    assert states["gone"][0] == "ended without a report" and ":999999999) is gone" in states["gone"][1]
    table = status_table([new, running, failed])
    assert table.splitlines()[0].split() == ["run", "state", "detail"]
    assert "1 not submitted, 1 running, 1 failed" in table


def test_status_with_the_study_folder_alone_reads_the_study_record(demo_root, tmp_path, monkeypatch):
    """`--study_dir S --status` from another shell shows what the full command's --status shows."""
    study_dir = tmp_path / "s"
    args = study_args(demo_root, study_dir)
    alone = run_main(convergence_study.main, "--study_dir", study_dir, "--status", check=False)
    assert alone.returncode == 2 and f"{study_dir / 'study.json'} does not exist" in alone.stderr
    assert "--dataroot" in alone.stderr and not study_dir.exists()
    missing = run_main(convergence_study.main, "--study_dir", study_dir, check=False)
    assert missing.returncode == 2 and "--dataroot" in missing.stderr and not study_dir.exists()
    # the study starts (study.json written), one job runs to its second epoch, then the study is stopped
    monkeypatch.setattr(convergence_study, "run_jobs",
                        lambda jobs, *a: {job.name: dict(name=job.name, state="stopped", detail="SIGINT")
                                          for job in jobs})
    run_main(convergence_study.main, *args, check=False)
    running = RunJob("x", str(study_dir / "runs" / "atme_seed1"), [], 3,
                     events.events_path(str(study_dir / "jobs"), "atme_seed1"), str(tmp_path))
    os.makedirs(running.run_dir)
    events.record(running.events, "submitted")
    events.record(running.events, "started", "18")
    CsvLog(os.path.join(running.run_dir, "loss_log.csv")).append(dict(epoch=2, iters=4, G_GAN=0.7))
    full = status_of(args)
    assert "running (epoch 2 of 3)" in full and full.splitlines()[-1] == "3 not submitted, 1 running"
    assert run_main(convergence_study.main, "--study_dir", study_dir, "--status").stdout == full
    # a mistyped study folder: the refusal names the studies beside it, as commands that work when pasted
    typo = run_main(convergence_study.main, "--study_dir", tmp_path / "z", "--status", check=False)
    assert typo.returncode == 2 and "or look at a study beside it" in " ".join(typo.stderr.split())
    suggested = printed_commands(typo.stderr)
    assert len(suggested) == 1, typo.stderr
    pasted = script_args(suggested[0], "scripts.experiments.convergence_study")
    assert run_main(convergence_study.main, *pasted).stdout == full
    (study_dir / "study.json").write_text("{}")
    old = run_main(convergence_study.main, "--study_dir", study_dir, "--status", check=False)
    assert old.returncode == 2 and "is not a study record this version reads" in old.stderr


# ------------------------------------------------------------------------------------------- fast: the flags
def test_slurm_without_slurm_is_refused_naming_a_command_that_works(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    args = study_args(demo_root, tmp_path / "s")
    refused = run_main(convergence_study.main, *args[:-2], "--executor", "slurm", *args[-2:], check=False)
    assert refused.returncode == 2 and "this machine has no SLURM (sbatch is not on the PATH)" in refused.stderr
    advice = next(line.strip() for line in refused.stderr.splitlines() if "--executor local" in line)
    assert advice.startswith(f"{interpreter()} -m scripts.experiments.convergence_study ")  # the running Python
    assert advice.endswith("-- --no_html")
    assert not (tmp_path / "s").exists()
    words = shlex.split(advice)
    parsed = convergence_study.build_parser().parse_args(words[3:words.index("--")])
    assert parsed.executor == "local"
    # the default on a machine without sbatch is the local executor
    shown = run_main(convergence_study.main, *args[:-2], "--dry_run", *args[-2:])
    assert "executor: local (submitit LocalExecutor), 4 job(s), at most 1 at once" in shown.stdout


def test_dry_run_shows_the_submitit_parameters_and_writes_nothing(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    args = study_args(demo_root, tmp_path / "s")
    shown = run_main(convergence_study.main, *args[:-2], "--executor", "slurm", "--dry_run", "--max_parallel", "3",
                     "--slurm_partition", "gpu", "--slurm_gpus_per_job", "2", "--slurm_time_min", "600",
                     "--slurm_extra", "cpus_per_task=8", "--slurm_extra", "reservation=paper", *args[-2:])
    out = shown.stdout
    assert "executor: slurm (submitit SlurmExecutor), 4 job(s), at most 3 at once" in out
    for part in ("gpus_per_node=2", "time=600", "partition='gpu'", "array_parallelism=3", "cpus_per_task=8",
                 "additional_parameters={'reservation': 'paper'}", "signal_delay_s=120"):
        assert part in out, part
    assert out.count("python train.py --dataroot") == 4 and "--name pix2pix_seed1" in out
    assert not (tmp_path / "s").exists()
    bad = run_main(convergence_study.main, *args[:-2], "--slurm_extra", "qos", *args[-2:], check=False)
    assert bad.returncode == 2 and "'qos' is not KEY=VALUE" in bad.stderr
    bad = run_main(convergence_study.main, *args[:-2], "--max_parallel", "0", *args[-2:], check=False)
    assert bad.returncode == 2 and "--max_parallel 1 or more" in bad.stderr


# ------------------------------------------------------------------------------------------- slow: local jobs
def study_process(args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "scripts.experiments.convergence_study", *map(str, args)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def with_flags(args, *flags):
    """The study's arguments with `flags` before the `--` that starts train.py's."""
    cut = args.index("--")
    return args[:cut] + list(flags) + args[cut:]


def status_of(args):
    return run_main(convergence_study.main, *with_flags(args, "--status")).stdout


def per_run(study_dir):
    """per_run.csv without its wall times (train_minutes), which no two runs share."""
    with open(os.path.join(study_dir, "per_run.csv"), newline="") as handle:
        return [{k: v for k, v in row.items() if k != "train_minutes"} for row in csv.DictReader(handle)]


@pytest.mark.slow  # 4 local jobs, 2 at a time, then the same 4 runs one after another in this process
def test_two_jobs_at_a_time_report_as_one_after_another_and_status_follows_them(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    parallel = study_args(demo_root, tmp_path / "parallel")
    process = study_process(parallel[:-2] + ["--executor", "local", "--max_parallel", "2"] + parallel[-2:])
    seen = set()
    while process.poll() is None:
        for line in status_of(parallel).splitlines()[1:-1]:
            seen.add(line.split()[1])
        time.sleep(0.3)
    output = process.stdout.read()
    assert process.returncode == 0, output
    assert "running" in seen and "finished" in status_of(parallel)
    assert status_of(parallel).splitlines()[-1] == "4 finished"
    sequential = study_args(demo_root, tmp_path / "sequential")
    run_main(convergence_study.main, *sequential[:-2], "--executor", "debug", *sequential[-2:])
    assert per_run(tmp_path / "parallel") == per_run(tmp_path / "sequential")
    assert len(per_run(tmp_path / "parallel")) == 4
    starts = [events.read(events.events_path(str(tmp_path / "parallel" / "jobs"), n)) for n in
              ("atme_seed0", "pix2pix_seed0")]
    assert all(rows[-1]["event"] == "finished" for rows in starts)


@pytest.mark.slow  # one local job, stopped by submitit's checkpoint signal mid-epoch and requeued
def test_a_job_sent_the_checkpoint_signal_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path, monkeypatch):
    from datasets.make_demo_dataset import make_demo_dataset
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = tmp_path / "data"
    make_demo_dataset(str(data), size=32, n_train=48, n_val=4, n_test=4, seed=0)  # 48 steps an epoch
    args = study_args(data, tmp_path / "preempted", ("atme",), (0,), (2, 1), 1) + ["--print_freq", "2"]
    process = study_process(with_flags(args, "--executor", "local"))
    path = events.events_path(str(tmp_path / "preempted" / "jobs"), "atme_seed0")
    loss_log = tmp_path / "preempted" / "runs" / "atme_seed0" / "loss_log.csv"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        rows = CsvLog(str(loss_log)).rows()
        if rows and rows[-1]["epoch"] == "2":
            break
        time.sleep(0.02)
    started = [row for row in events.read(path) if row["event"] == "started"]
    assert started and process.poll() is None, process.communicate()[0]
    os.kill(int(started[-1]["pid"]), signal.SIGUSR2)  # what the local executor's _interrupt() and SLURM send
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    rows = events.read(path)
    assert [r["event"] for r in rows] == ["submitted", "started", "preempted", "started", "finished"], rows
    assert "SIGUSR2 saved latest in epoch 2 after" in rows[2]["detail"]
    assert int(rows[2]["detail"].split(" after ")[1].split()[0]) > 0  # mid-epoch
    assert rows[1]["job_id"] == rows[3]["job_id"]  # requeued: the same job again
    reference = study_args(data, tmp_path / "uninterrupted", ("atme",), (0,), (2, 1), 1) + ["--print_freq", "2"]
    run_main(convergence_study.main, *with_flags(reference, "--executor", "debug"))
    assert per_run(tmp_path / "preempted") == per_run(tmp_path / "uninterrupted")
    for name in ("convergence.csv", "val_log.csv"):
        assert (tmp_path / "preempted" / "runs" / "atme_seed0" / name).read_text() == \
            (tmp_path / "uninterrupted" / "runs" / "atme_seed0" / name).read_text(), name
    assert "preempted and requeued 1 time" in status_of(args)


@pytest.mark.slow  # two local jobs, one of which diverges
def test_a_failing_job_is_listed_with_its_log_and_the_others_finish(demo_root, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    args = study_args(demo_root, tmp_path / "s", ("atme", "pix2pix"), (0,), (1, 0), 4,
                      "--model_flags", "atme=--lr 1e30")
    local = args[:-2] + ["--executor", "local", "--max_parallel", "2"] + args[-2:]
    result = run_main(convergence_study.main, *local, check=False)
    assert result.returncode == 1
    assert "atme_seed0 failed: TrainingDiverged" in result.stdout and "_0_log.err" in result.stdout
    assert "call the same command again to submit only these" in result.stdout
    status = status_of(args)
    failed = next(line for line in status.splitlines() if line.startswith("atme_seed0"))
    assert "failed" in failed and "training diverged" in failed and "log: " in failed
    assert next(line for line in status.splitlines() if line.startswith("pix2pix_seed0")).split()[1] == "finished"
    # called again: only the failed run is submitted
    run_main(convergence_study.main, *local, check=False)
    submitted = {name: sum(r["event"] == "submitted" for r in
                           events.read(events.events_path(str(tmp_path / "s" / "jobs"), name)))
                 for name in ("atme_seed0", "pix2pix_seed0")}
    assert submitted == {"atme_seed0": 2, "pix2pix_seed0": 1}


@pytest.mark.slow  # sends the scheduler's warning signal to this process
def test_a_warning_while_train_py_sets_up_stops_the_run_at_its_first_step_boundary(tmp_path, monkeypatch):
    import train as train_cli
    from datasets.make_demo_dataset import make_demo_dataset
    from scripts.experiments.jobs.run_job import saved_progress
    data = tmp_path / "data"
    make_demo_dataset(str(data), size=32, n_train=16, n_val=2, n_test=2, seed=0)  # 16 steps an epoch
    real = train_cli.main

    def warned_while_setting_up(args):  # the warning comes before train.py has installed its stop handler
        os.kill(os.getpid(), signal.SIGUSR2)
        return real(args)

    monkeypatch.setattr(train_cli, "main", warned_while_setting_up)
    handler = signal.getsignal(signal.SIGUSR2)
    run_dir = tmp_path / "runs" / "pix2pix_seed0"
    train_args = ["--dataroot", str(data), "--checkpoints_dir", str(run_dir.parent), "--name", run_dir.name,
                  "--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--netD", "n_layers", "--n_layers_D", "1",
                  "--ndf", "8", "--load_size", "32", "--crop_size", "32", "--batch_size", "1", "--n_epochs", "1",
                  "--n_epochs_decay", "1", "--gpu_ids", "-1", "--num_threads", "0", "--display_id", "0",
                  "--no_html"]
    path = events.events_path(str(tmp_path / "jobs"), run_dir.name)
    outcome = RunJob(run_dir.name, str(run_dir), train_args, 2, path, str(ROOT))()
    # stopped at a step boundary of the first epoch with `latest` saved, not after training every epoch
    epoch, images = saved_progress(str(run_dir))
    assert epoch == 1 and 0 < images < 16, (epoch, images)
    assert outcome["state"] == "failed" and outcome["detail"] == "stopped by SIGUSR2"  # no submitit: not requeued
    last = events.read(path)[-1]
    assert last["event"] == "failed" and "SIGUSR2 saved latest in epoch 1 after" in last["detail"]
    assert signal.getsignal(signal.SIGUSR2) == handler  # the job gave the process its handler back
