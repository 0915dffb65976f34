"""Every command the framework prints for a person to type (resume, retry, start over, export, test) is built
here, so that what one part prints another part accepts:

- the interpreter that is running: `.venv/bin/python` (relative to the working folder) when it is the
  project's virtual environment, `python` when that is the same interpreter, else its full path;
- the script as it is found from the working folder (`train.py`, `../repo/test.py`; `-m scripts.tools.export`
  from the repository root);
- the arguments given to `main(args)` (never `sys.argv` of a caller that trains in-process), shell-quoted;
- the run's name as typed, groups kept (`--name group/run`).

`without(args, drop)` removes flags and their values from an argument list the way argparse would have read
them, so a refusal can say "your command, without X, with Y".
"""
import os
import shlex
import shutil
import sys

from util.command_line.arg_types import BOOL_WORDS
from util.command_line.registry import REPO_ROOT

# What each entry point is, from the repository root: a script file, or a module run with -m (which also runs
# as a file: every script in scripts/ and datasets/ does).
ENTRY_POINTS = {
    "train": "train.py",
    "test": "test.py",
    "export": "scripts/tools/export.py",
    "demo": "scripts/demo.sh",
    "convergence_study": "scripts/experiments/convergence_study.py",
    "table2": "scripts/experiments/table2.py",
    "experiment_jobs": "scripts/experiments/experiment_jobs.py",
}
DEFAULT_CHECKPOINTS_DIR = "./checkpoints"


def _relative(path):
    """`path` as typed from the working folder: relative when it is inside it or near it, else absolute."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir + os.sep + os.pardir) else relative


def interpreter():
    """The Python to type: the one running this code, in its shortest form that names the same interpreter."""
    venv = os.path.join(REPO_ROOT, ".venv")
    if os.path.abspath(sys.prefix) == os.path.abspath(venv):
        on_path = shutil.which("python")
        if on_path and os.path.dirname(os.path.abspath(on_path)) == os.path.join(venv, "bin"):
            return "python"  # the venv is activated
        return _relative(os.path.join(venv, "bin", "python"))
    for name in ("python", "python3"):
        on_path = shutil.which(name)
        if on_path and os.path.realpath(on_path) == os.path.realpath(sys.executable) and sys.prefix == sys.base_prefix:
            return name
    return sys.executable


def script_tokens(entry):
    """The tokens that run `entry` (a key of ENTRY_POINTS) from the working folder."""
    path = ENTRY_POINTS[entry]
    if path.endswith(".sh"):
        return ["bash", _relative(os.path.join(REPO_ROOT, path))]
    if path.startswith("scripts/") and os.path.abspath(os.getcwd()) == REPO_ROOT:
        return [interpreter(), "-m", path[:-3].replace("/", ".")]
    return [interpreter(), _relative(os.path.join(REPO_ROOT, path))]


def command(entry, args=(), env=None):
    """The shell command that runs `entry` with `args`: one line, quoted for a POSIX shell. `env` ({name: value})
    is put in front (`MODEL=segan bash scripts/demo.sh ...`)."""
    prefix = [f"{key}={shlex.quote(str(value))}" for key, value in (env or {}).items()]
    return " ".join(prefix + [shlex.join(script_tokens(entry) + [str(a) for a in args])])


def takes_value(action):
    """Whether the argparse `action` reads a value after its flag (booleans read one only when it is a bool
    word; None for those)."""
    if action is None:
        return True
    if action.nargs == 0:
        return False
    if action.nargs == "?":
        return None
    return True


def without(args, drop, actions=None):
    """`args` without the flags in `drop` and the values that go with them. `actions` maps option strings to
    argparse actions (parser._option_string_actions), to tell booleans and flags without values apart."""
    actions = actions or {}
    kept, tokens = [], [str(a) for a in args]
    while tokens:
        token = tokens.pop(0)
        flag = token.split("=", 1)[0]
        if flag not in drop:
            kept.append(token)
            continue
        if "=" in token or not tokens:
            continue
        value = takes_value(actions.get(flag))
        if value is None:
            if tokens[0].lower() in BOOL_WORDS:
                tokens.pop(0)
        elif value and not tokens[0].startswith("--"):
            tokens.pop(0)
    return kept


def run_flags(name, checkpoints_dir=None):
    """`--name` (as typed, groups kept) and `--checkpoints_dir` when it is not the default."""
    flags = ["--name", name]
    if checkpoints_dir and os.path.normpath(checkpoints_dir) != os.path.normpath(DEFAULT_CHECKPOINTS_DIR):
        flags += ["--checkpoints_dir", checkpoints_dir]
    return flags


def demo_env():
    """The environment `scripts/demo.sh` set for the train.py it runs ({} when train.py was not started by it):
    a demo run is resumed through the demo, which then tests it."""
    if os.environ.get("LAUNCHED_BY") != ENTRY_POINTS["demo"]:
        return None
    env = {}
    model = os.environ.get("DEMO_MODEL", "atme")
    if model != "atme":
        env["MODEL"] = model
    name = os.environ.get("DEMO_NAME", f"demo_{model}")
    if name != f"demo_{model}":
        env["NAME"] = name
    return env


def resume_command(name, checkpoints_dir=None, extra=()):
    """The shortest command that resumes the run `name`: every other option comes from its train_opt.json."""
    env = demo_env()
    if env is not None and not extra:
        return command("demo", ["--continue_train"], env=env)
    return command("train", run_flags(name, checkpoints_dir) + ["--continue_train", *extra])


def checkpoint_flags(tag):
    """The flags that pick checkpoint `tag` (`iter_<N>` is --load_iter N; any other tag --epoch)."""
    tag = str(tag)
    if tag.startswith("iter_") and tag[5:].isdigit():
        return ["--load_iter", tag[5:]]
    return [] if tag == "latest" else ["--epoch", tag]


def export_command(name, checkpoints_dir, tag):
    """The command that exports checkpoint `tag` of the run `name` (python -m scripts.tools.export ...)."""
    return command("export", run_flags(name, checkpoints_dir) + checkpoint_flags(tag))


def test_command(name, checkpoints_dir, tag, extra=()):
    """The command that tests checkpoint `tag` of the run `name` on its own data (test.py takes the run's
    --dataroot and architecture from its train_opt.json); `extra` are further test.py flags."""
    return command("test", run_flags(name, checkpoints_dir) + checkpoint_flags(tag) + list(extra))
