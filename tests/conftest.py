"""Shared fixtures: a tiny demo data set and a helper that runs the CLIs in-process or as subprocesses."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _load_demo_module():
    spec = importlib.util.spec_from_file_location("make_demo_dataset", os.path.join(ROOT, "datasets", "make_demo_dataset.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A 32x32 demo data set in the aligned layout (train/val/test), shared by the whole session."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    _load_demo_module().make_demo_dataset(str(out), size=32, n_train=8, n_val=4, n_test=4, seed=0)
    return str(out)


def run_cli(script, *args, cwd=None, timeout=600, check=True, env=None):
    """Run `python <script> args...` from the repository root; return the CompletedProcess."""
    full_env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\n"
                             f"STDERR:\n{proc.stderr[-4000:]}")
    return proc
