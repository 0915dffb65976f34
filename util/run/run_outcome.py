"""How a training process ended, in the words the run's views show: "finished 8 of 8 epochs", "stopped by SIGINT at
epoch 3 of 6; resumable with <command>", "failed: <message>". train.py picks one and hands it to the dashboard
when it closes; the HTML page shows it under the run's heading."""
import argparse
import shlex
import signal

from util.command_line.arg_types import str2bool

FAILURE_CHARS = 300  # a traceback's message can be long; the page shows its start, train.log has all of it


def finished(epochs_done, planned):
    return f"finished {int(epochs_done)} of {int(planned)} epochs"


def stopped(signum, epoch, planned, command, within_epoch=True):
    """A stop on a signal. `within_epoch`: the stop came during `epoch` (its state is saved part-way), else
    after `epoch` was complete."""
    name = signal.Signals(signum).name if signum else "a signal"
    where = f"at epoch {int(epoch)}" if within_epoch else f"after epoch {int(epoch)}"
    return f"stopped by {name} {where} of {int(planned)}; resumable with {command}"


def failed(exc):
    message = " ".join(str(exc).split()) or type(exc).__name__
    if len(message) > FAILURE_CHARS:
        message = message[:FAILURE_CHARS - 3] + "..."
    return f"failed: {message}"


RESTART_FLAGS = ("--start_over", "--continue_train")  # booleans: `--flag`, `--flag true`, `--flag=true`
FRESH_RUN_FLAGS = ("--epoch_count",)  # take a value; a resume takes its epoch from the checkpoint


def resume_command(args, script="train.py"):
    """The command that continues a run started with `args` (train.py's arguments): the same flags with
    --continue_train, without --start_over (which would move the run aside) and --epoch_count (which only a
    fresh run takes)."""
    args, kept, k = [str(a) for a in args], [], 0
    while k < len(args):
        flag, inline = args[k].split("=", 1)[0], "=" in args[k]
        k += 1
        if flag in FRESH_RUN_FLAGS:
            k += 0 if inline else 1
        elif flag not in RESTART_FLAGS:
            kept.append(args[k - 1])
        elif not inline and k < len(args) and _is_bool_word(args[k]):
            k += 1  # `--start_over true`: the value goes with its flag
    return "python " + shlex.join([script, *kept, "--continue_train"])


def _is_bool_word(text):
    try:
        str2bool(text)
        return True
    except argparse.ArgumentTypeError:
        return False
