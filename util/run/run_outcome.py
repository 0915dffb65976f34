"""How a training process ended, in the words the run's views show: "finished 8 of 8 epochs", "stopped by SIGINT at
epoch 3 of 6; resumable with <command>", "failed: <message>". train.py picks one and hands it to the dashboard
when it closes; the HTML page shows it under the run's heading."""
import signal

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
