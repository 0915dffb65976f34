"""Scripts run the way pix2pix users call them: `python path/to/script.py` from any folder, as well as with
`python -m`; the download script's advice works as printed."""
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT


def run_file(path, *args, cwd):
    """`python <path> args` from `cwd`, as a user types it."""
    return subprocess.run([sys.executable, path, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


# Started by side_by_side.py with another checkout's PYTHONPATH; it answers requests on stdin, it has no --help.
INTERNAL = {"scripts/bench/worker.py"}


def entry_points():
    scripts = glob.glob(os.path.join(ROOT, "datasets", "*.py")) + glob.glob(os.path.join(ROOT, "scripts", "*", "*.py"))
    found = [os.path.relpath(p, ROOT) for p in scripts if '__name__ == "__main__"' in open(p).read()]
    return sorted(set(found) - INTERNAL)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["datasets/combine_A_and_B.py", "datasets/make_subset.py"])
def test_dataset_tools_run_as_files_from_the_repository(script):
    proc = run_file(script, "--help", cwd=ROOT)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_the_download_scripts_subset_advice_works_as_printed(demo_root, tmp_path):
    advice = [line for line in open(os.path.join(ROOT, "datasets", "download_pix2pix_dataset.sh"))
              if "python datasets/" in line]
    assert advice
    for line in advice:
        command = re.search(r'"\s*(python [^"]+)"', line).group(1)
        command = command.replace("${TARGET}", str(tmp_path / "demo")).replace("$TARGET", demo_root)
        argv = shlex.split(command.replace("--n 5000", "--n 3"))
        proc = run_file(argv[1], *argv[2:], cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
    assert len(os.listdir(tmp_path / "demo_5k" / "train")) == 3


@pytest.mark.slow
@pytest.mark.parametrize("script", entry_points())
def test_every_script_runs_as_a_file_from_another_folder(script, tmp_path):
    proc = run_file(os.path.join(ROOT, script), "--help", cwd=tmp_path)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr[-2000:]


@pytest.mark.slow
def test_demo_script_documents_its_settings_and_how_to_run_it_again():
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    for word in ("MODEL=", "NAME=", "EPOCHS=", "EPOCHS_DECAY=", "bash scripts/demo.sh --continue_train",
                 "bash scripts/demo.sh --start_over"):
        assert word in proc.stdout, word


@pytest.mark.slow
def test_demo_script_on_an_earlier_run_says_how_to_resume_or_start_over_before_setting_up(tmp_path):
    name = f"demo_check_{os.getpid()}"
    run = os.path.join(ROOT, "checkpoints", name)
    os.makedirs(run)
    try:
        with open(os.path.join(run, "train_opt.json"), "w") as handle:
            handle.write("{}\n")
        proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo.sh")], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, NAME=name), cwd=tmp_path)
        assert proc.returncode == 2 and "already holds a run" in proc.stderr
        advice = [line.strip() for line in proc.stderr.splitlines() if "scripts/demo.sh" in line.strip()[:40]]
        assert "bash scripts/demo.sh --continue_train" in advice and "bash scripts/demo.sh --start_over" in advice
        assert os.listdir(run) == ["train_opt.json"]  # nothing set up, nothing trained
    finally:
        import shutil
        shutil.rmtree(run)
