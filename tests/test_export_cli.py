"""`python -m scripts.tools.export` beside a training and as a user types it: the run's lock, the `--epoch` check,
an export racing a training start, and the printed "run it" command typed as printed in a shell without the venv.

The exports and trainings run as subprocesses (ONNX Runtime and OpenVINO never load into this process)."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import ROOT, folder_state, run_main
from util.run.integrity import sha256_of
from util.run.run_folder import RunFolder

TINY = ["--load_size", "32", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--ndf", "8", "--n_epochs", "1", "--n_epochs_decay",
        "0", "--max_dataset_size", "4"]
MODELS = {
    "pix2pix": ["--model", "pix2pix", "--netG", "unet", "--ngf", "8"],  # batch norm and dropout: needs --eval
    "atme": ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4"],
}
VENV_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")


def plain_env():
    """A shell's environment where the virtual environment is not activated: no venv on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def python(*args, wait=True):
    """`.venv/bin/python args...` from the repository root in the plain environment."""
    command = [VENV_PYTHON if os.path.exists(VENV_PYTHON) else sys.executable, *map(str, args)]
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=plain_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=ROOT, env=plain_env(), capture_output=True, text=True, timeout=900)


def train(dataroot, checkpoints, name, model, *extra):
    proc = python("train.py", "--dataroot", dataroot, "--checkpoints_dir", checkpoints, "--name", name, *TINY,
                  *MODELS[model], *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]


def export(checkpoints, name, *extra, wait=True):
    return python("-m", "scripts.tools.export", "--checkpoints_dir", checkpoints, "--name", name, *extra, wait=wait)


def graph_matches_its_json(run_dir, tag="latest"):
    """Whether the exported graph is the one its JSON describes (None when there is no export)."""
    onnx_path, json_path = (os.path.join(run_dir, f"{tag}_test_graph.{ext}") for ext in ("onnx", "json"))
    if not os.path.exists(onnx_path) and not os.path.exists(json_path):
        return None
    payload = json.load(open(json_path))
    return sha256_of(onnx_path) == payload["graph"]["sha256"]


@pytest.mark.parametrize("epoch", ["../other/latest", "/abs/latest", "sub/latest", "..", "~x"])
def test_epoch_that_is_not_a_plain_name_is_refused_before_anything_is_written(demo_root, tmp_path, epoch):
    from scripts.tools import export as export_cli
    checkpoints = tmp_path / "ck"
    (checkpoints / "a").mkdir(parents=True)
    (checkpoints / "other").mkdir()
    before = folder_state(tmp_path)
    proc = run_main(export_cli.main, "--checkpoints_dir", checkpoints, "--name", "a", "--epoch", epoch, check=False)
    assert proc.returncode == 2 and "--epoch" in proc.stderr and epoch in proc.stderr, proc.stderr
    assert folder_state(tmp_path) == before and sorted(os.listdir(checkpoints)) == ["a", "other"]
    assert os.listdir(checkpoints / "a") == [] and os.listdir(checkpoints / "other") == []


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """{model: checkpoints dir} with a tiny run `a` trained for one epoch."""
    found = {}
    for model in MODELS:
        checkpoints = str(tmp_path_factory.mktemp(f"export_{model}"))
        train(demo_root, checkpoints, "a", model)
        found[model] = checkpoints
    return found


@pytest.mark.slow  # trains and exports in subprocesses
def test_export_is_refused_while_a_training_holds_the_run_naming_it(trained, tmp_path):
    checkpoints = str(tmp_path / "ck")
    shutil.copytree(os.path.join(trained["atme"], "a"), os.path.join(checkpoints, "a"))
    run_dir = os.path.join(checkpoints, "a")
    folder = RunFolder(run_dir)
    folder.lock(["python", "train.py", "--name", "a", "--continue_train"])  # as a training holds it
    try:
        before = folder_state(checkpoints)
        proc = export(checkpoints, "a")
        assert proc.returncode == 2, proc.stderr
        assert f"process {os.getpid()}" in proc.stderr and "train.py" in proc.stderr
        assert "-m scripts.tools.export" in proc.stderr and "Traceback" not in proc.stderr
        assert folder_state(checkpoints) == before
    finally:
        folder.release()


@pytest.mark.slow  # trains and exports in subprocesses
def test_an_export_racing_a_training_start_never_leaves_a_graph_its_json_does_not_describe(demo_root, trained,
                                                                                           tmp_path):
    """A training that starts while the export writes is refused (the export holds the run's lock), or the export
    is refused; whichever order, the graph left is the one its JSON describes."""
    checkpoints = str(tmp_path / "ck")
    shutil.copytree(os.path.join(trained["atme"], "a"), os.path.join(checkpoints, "a"))
    run_dir = os.path.join(checkpoints, "a")
    outcomes = []
    for epochs, delay in ((2, 0.0), (3, 3.0), (4, 8.0)):
        exporting = export(checkpoints, "a", wait=False)
        time.sleep(delay)
        training = python("train.py", "--dataroot", demo_root, "--checkpoints_dir", checkpoints, "--name", "a",
                          "--continue_train", "--n_epochs", epochs, "--num_threads", "0", wait=False)
        (_, export_err), (_, train_err) = exporting.communicate(timeout=900), training.communicate(timeout=900)
        assert exporting.returncode in (0, 2) and training.returncode in (0, 2), (export_err[-2000:], train_err[-2000:])
        if exporting.returncode == 2:
            assert "in use by process" in export_err and "train.py" in export_err, export_err[-2000:]
        if training.returncode == 2:
            assert "in use by process" in train_err and "scripts.tools.export" in train_err, train_err[-2000:]
        assert graph_matches_its_json(run_dir) in (None, True)
        assert not [f for f in os.listdir(run_dir) if f.endswith(".tmp") or f.endswith(".journal.json")]
        outcomes.append((exporting.returncode, training.returncode))
    assert any(code == (0, 2) or code == (2, 0) for code in outcomes), outcomes  # the two met at least once


@pytest.mark.slow  # trains, exports and tests in subprocesses
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("group", [False, True])
def test_printed_run_it_command_works_typed_as_printed(demo_root, trained, tmp_path, model, group):
    name = f"export_cmd_{uuid.uuid4().hex[:8]}" + ("/a" if group else "")
    checkpoints = str(tmp_path / "ck")
    shutil.copytree(os.path.join(trained[model], "a"), os.path.join(checkpoints, name))
    proc = export(checkpoints, name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    command = re.search(r"run it \(or with --backend openvino\):\n\s+(.+)", output).group(1).strip()
    assert command.startswith(".venv/bin/python test.py ") and "--backend onnxruntime" in command
    assert ("--eval" in command) == (model == "pix2pix") and f"--name {name}" in command
    meta = json.load(open(os.path.join(checkpoints, name, "latest_test_graph.json")))
    assert meta["export_command"].startswith(".venv/bin/python -m scripts.tools.export ")
    results = os.path.join(ROOT, "results", name.split("/")[0])
    try:
        typed = subprocess.run(["bash", "-c", command], cwd=ROOT, env=plain_env(),
                               capture_output=True, text=True, timeout=900)
        assert typed.returncode == 0, typed.stderr[-3000:]
        assert os.path.exists(os.path.join(ROOT, "results", name, "test_latest", "index.html"))
    finally:
        shutil.rmtree(results, ignore_errors=True)
