"""A per-dataset experiment script driven end to end, as a person runs it: `bash scripts/experiments/pix2pix/
facades.sh AtoB prepare train test --executor local -- <tiny network>` on a tiny aligned facades set made in
DATASETS_DIR (its train/ folder is how experiment.sh's `prepare` knows the data is there, so nothing is
downloaded), through experiment.sh, experiment_jobs.py and the job layer, with one epoch at 32 px. The run folder
ends trained, test.py's images are where experiment.sh says (<RESULTS_DIR>/<name>/test_latest/), the job's events
end in `finished`, --status says so, and the same command again submits nothing and changes no file of the run.
The same with --executor debug, after a failed run; a finished run asked for a stage more runs only that one. Every command the scripts print (the refused --executor
slurm's, the refused job flags', a failure's retry and status) is typed into a shell without the venv.

The KID stage is left out of the runs' stages: it needs the Inception-v3 weights, which cannot be downloaded here.
It is asked for once, of a finished run, to check that it stops with compute_kid's message naming
--inception_weights (KID_ARGS passes that flag on)."""
import os
import re
import subprocess

import pytest

from conftest import ROOT, folder_state, printed_commands
from datasets.make_demo_dataset import make_demo_dataset
from scripts.experiments.jobs import events
from scripts.experiments.jobs.run_job import saved_progress, training_state

SCRIPT = "scripts/experiments/pix2pix/facades.sh"
STAGES = ["prepare", "train", "test"]  # no kid: see the docstring
TINY = ["--netG", "unet", "--ngf", "8", "--ndf", "8", "--load_size", "32", "--crop_size", "32", "--batch_size", "2",
        "--gpu_ids", "-1", "--num_threads", "0", "--display_id", "0", "--no_html"]
N_TEST = 2


@pytest.fixture
def place(tmp_path):
    """The data set, the folders and a shell's environment without the venv on its PATH (nor sbatch)."""
    data = tmp_path / "data"
    make_demo_dataset(str(data / "facades"), size=32, n_train=4, n_val=2, n_test=N_TEST, seed=0)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env.update(PATH="/usr/bin:/bin", OMP_NUM_THREADS="1", DATASETS_DIR=str(data), RESULTS_DIR=str(tmp_path / "results"),
               CHECKPOINTS_DIR=str(tmp_path / "checkpoints"), N_EPOCHS="1", N_EPOCHS_DECAY="0")
    return tmp_path, env


def shell(env, line):
    """`line` typed into bash at the repository root; its output and errors in one stream, as a terminal shows them."""
    return subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


def script(env, *args):
    return subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)


def assert_trained_and_tested(tmp_path, name):
    run_dir = str(tmp_path / "checkpoints" / name)
    assert saved_progress(run_dir) == (2, 0) and training_state(run_dir, 1) == "finished"  # epoch 1 of 1 saved
    assert os.path.isfile(os.path.join(run_dir, "1_net_G.pth"))
    results = tmp_path / "results" / name / "test_latest"
    assert (results / "index.html").is_file()
    assert sorted(p.name for p in (results / "images").glob("*_fake_B.png")) == [f"{i:04d}_fake_B.png"
                                                                                for i in range(N_TEST)]
    rows = events.read(str(tmp_path / "results" / "jobs" / name / "events.csv"))
    assert rows[-1]["event"] == "finished", rows
    return run_dir


def status_line(out, name):
    return next(line.split() for line in out.splitlines() if line.startswith(name + " "))


@pytest.mark.slow  # starts bash, train.py and test.py processes
def test_a_per_dataset_script_runs_end_to_end_and_then_leaves_its_run_alone(place):
    tmp_path, env = place
    data_before = folder_state(tmp_path / "data", mtimes=True)
    first = script(env, "AtoB", *STAGES, "--executor", "local", "--", *TINY)
    assert first.returncode == 0, first.stdout[-3000:]
    assert "Downloading" not in first.stdout and folder_state(tmp_path / "data", mtimes=True) == data_before
    run_dir = assert_trained_and_tested(tmp_path, "facades_pix2pix_AtoB")
    events_file = tmp_path / "results" / "jobs" / "facades_pix2pix_AtoB" / "events.csv"

    status = script(env, "AtoB", *STAGES, "--status", "--", *TINY)
    assert status.returncode == 0, status.stdout[-3000:]
    assert status_line(status.stdout, "facades_pix2pix_AtoB") == ["facades_pix2pix_AtoB", "finished"]

    run_before, events_before = folder_state(run_dir, mtimes=True), events_file.read_text()
    again = script(env, "AtoB", *STAGES, "--executor", "local", "--", *TINY)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "0 of 1 runs to submit" in again.stdout
    assert folder_state(run_dir, mtimes=True) == run_before and events_file.read_text() == events_before

    # --executor slurm without SLURM: refused, and its advice, typed, runs here (and submits nothing: done)
    refused = script(env, "AtoB", *STAGES, "--executor", "slurm", "--", *TINY)
    assert refused.returncode == 2 and "this machine has no SLURM" in refused.stdout
    advice = [line for line in printed_commands(refused.stdout) if "--executor local" in line]
    assert len(advice) == 1, refused.stdout
    typed = shell(env, advice[0])
    assert typed.returncode == 0, typed.stdout[-3000:]
    assert "0 of 1 runs to submit" in typed.stdout
    assert folder_state(run_dir, mtimes=True) == run_before and events_file.read_text() == events_before

    # job flags without the train stage: refused, and the advice keeps the stages and train.py flags given
    refused = script(env, "BtoA", "test", "--dry_run", "--", *TINY)
    assert refused.returncode == 2 and "job flags" in refused.stdout
    advice = printed_commands(refused.stdout)
    assert len(advice) == 1, refused.stdout
    typed = shell(env, advice[0])
    assert typed.returncode == 0, typed.stdout[-3000:]
    shown = next(line for line in typed.stdout.splitlines()
                 if re.search(r"facades_pix2pix_BtoA: \S*python\S* train\.py", line))
    assert " ".join(TINY) in shown
    assert not (tmp_path / "checkpoints" / "facades_pix2pix_BtoA").exists()


@pytest.mark.slow  # starts bash, train.py and test.py processes
def test_the_debug_executor_after_a_failure_and_the_failures_printed_commands(place):
    tmp_path, env = place
    name = "facades_pix2pix_BtoA"
    # --netG unet_256 needs 256 px: the job fails while train.py sets up
    failed = script(env, "BtoA", *STAGES, "--executor", "debug", "--", *TINY, "--netG", "unet_256")
    assert failed.returncode == 1, failed.stdout[-3000:]
    typed_commands = printed_commands(failed.stdout)
    status = [line for line in typed_commands if "--status" in line]
    retry = [line for line in typed_commands if "--status" not in line]
    assert len(status) == 1 and len(retry) == 1, failed.stdout
    shown = shell(env, status[0])
    assert shown.returncode == 0, shown.stdout[-3000:]
    assert status_line(shown.stdout, name)[:2] == [name, "failed"]
    again = shell(env, retry[0])  # the same command: it fails the same way, and says so again
    assert again.returncode == 1 and "unet_256" in again.stdout

    fixed = script(env, "BtoA", "prepare", "train", "--executor", "debug", "--", *TINY)  # no test yet
    assert fixed.returncode == 0, fixed.stdout[-3000:]
    run_dir = str(tmp_path / "checkpoints" / name)
    assert training_state(run_dir, 1) == "finished" and not (tmp_path / "results" / name).exists()
    rows = events.read(str(tmp_path / "results" / "jobs" / name / "events.csv"))
    assert [row["event"] for row in rows][-3:] == ["submitted", "started", "finished"]
    status = script(env, "BtoA", "prepare", "train", "--status", "--", *TINY)
    assert status_line(status.stdout, name) == [name, "finished"]
    before, events_before = folder_state(run_dir, mtimes=True), rows
    status = script(env, "BtoA", *STAGES, "--status", "--", *TINY)  # asked with a stage its job did not run
    assert status_line(status.stdout, name)[:3] == [name, "finished", "not"]  # before: plain "finished"
    assert "not run yet: test (asked now; the command runs it)" in status.stdout

    # the same run with the test stage too: trained and finished, so only test.py runs (before: nothing ran)
    tested = script(env, "BtoA", *STAGES, "--executor", "debug", "--", *TINY)
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "without test; running it here" in tested.stdout
    assert_trained_and_tested(tmp_path, name)
    assert folder_state(run_dir, mtimes=True) == before
    assert events.read(str(tmp_path / "results" / "jobs" / name / "events.csv")) == events_before
    # and with KID, whose Inception weights cannot be had here: compute_kid says what to do
    kid_env = dict(env, KID_ARGS="--kid_subset_size 2", TORCH_HOME=str(tmp_path / "torch_home"))
    kid = subprocess.run(["bash", SCRIPT, "BtoA", *STAGES, "kid", "--", *TINY], cwd=ROOT, env=kid_env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert kid.returncode == 1 and "without kid; running it here" in kid.stdout, kid.stdout[-3000:]
    assert "could not download the Inception-v3 weights" in kid.stdout and "--inception_weights" in kid.stdout
    # the report names the stage and compute_kid's own last line (before: a CalledProcessError and the command)
    report = next(line for line in kid.stdout.splitlines() if f"{name}: stage kid: " in line)
    assert "compute_kid.py: error: could not download the Inception-v3 weights" in report
    assert "CalledProcessError" not in kid.stdout
    assert folder_state(run_dir, mtimes=True) == before


@pytest.mark.slow  # starts bash and Python processes
def test_table2s_refused_slurm_names_a_command_that_runs_in_a_shell_without_the_venv(place):
    tmp_path, env = place
    venv_python = os.path.join(ROOT, ".venv", "bin", "python")
    refused = subprocess.run([venv_python, "-m", "scripts.experiments.table2", "--models", "pix2pix", "--datasets",
                              "facades", "--directions", "AtoB", "--executor", "slurm"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert refused.returncode == 2 and "this machine has no SLURM" in refused.stdout
    advice = printed_commands(refused.stdout)
    assert len(advice) == 1 and "--executor local" in advice[0], refused.stdout
    typed = shell(env, advice[0] + " --dry_run")  # before: `python -m ...`, and this shell has no `python`
    assert typed.returncode == 0, typed.stdout[-3000:]
    assert "executor: local" in typed.stdout
    assert re.search(r"facades_pix2pix_AtoB: \S*python\S* train\.py", typed.stdout)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow  # starts bash and Python processes
def test_flags_after_the_dash_dash_that_would_move_the_run_are_refused_with_a_command_without_them(place):
    """--name (or --checkpoints_dir, --dataroot, --direction, --model) after `--` trained one run while test.py
    and KID read the script's: the job trained `mine`, then test.py found no facades_pix2pix_AtoB."""
    tmp_path, env = place
    for moved in (["--name", "mine"], ["--checkpoints_dir=elsewhere"], ["--direction", "BtoA"]):
        refused = script(env, "AtoB", *STAGES, "--executor", "local", "--", *TINY[:4], *moved, *TINY[4:])
        assert refused.returncode == 2 and f"{moved[0].split('=')[0]} after --" in refused.stdout, refused.stdout
        assert not (tmp_path / "results").exists() and not (tmp_path / "checkpoints").exists()
        advice = printed_commands(refused.stdout)
        assert len(advice) == 1 and moved[-1] not in advice[0] and " ".join(TINY) in advice[0], refused.stdout
    typed = shell(env, advice[0].replace("--executor local", "--status"))
    assert typed.returncode == 0, typed.stdout[-3000:]
    assert status_line(typed.stdout, "facades_pix2pix_AtoB") == ["facades_pix2pix_AtoB", "not", "submitted"]
