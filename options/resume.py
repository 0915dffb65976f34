"""A resume continues the run it resumes: `--continue_train` takes every option the user did not type from the
run's `train_opt.json`. A typed flag may change what can change (schedule, learning rate, display, batch size,
...), and each change is logged as one WARNING, old -> new; a flag that defines the networks or the loss (the
model's `architecture_flags` and `loss_flags`) is refused with the run's value in the message."""
from util.command_line.cli import UsageError

# Properties of this invocation, never taken from the stored run.
OWN_FLAGS = ("name", "checkpoints_dir", "suffix", "continue_train", "start_over", "epoch", "load_iter", "verbose",
             "isTrain", "help")


def shown(value):
    """A value as it is typed on the command line."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if value is None:
        return "(none)"
    return str(value)


def same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def continue_run(opt, parser, stored, explicit, fixed, directory, retry):
    """Fill `opt` from `stored` (the run's options) for every flag not in `explicit`. `fixed` are the flags a
    resume must not change. Returns the changes the user typed as (flag, old, new); raises UsageError for a
    fixed one, naming the run's value. The caller logs each change as one WARNING."""
    dests = {action.dest for action in parser._actions}
    changes, refused = [], []
    for key, value in sorted(stored.items()):
        if key in OWN_FLAGS or key not in dests:
            continue
        if key == "gpu_ids":  # stored resolved ([] is the CPU); parsed from its command-line form
            value = ",".join(str(i) for i in value) if value else "-1"
        elif isinstance(value, list):
            value = tuple(value)
        current = getattr(opt, key)
        if key not in explicit:
            setattr(opt, key, value)
        elif not same(current, value):
            (refused if key in fixed else changes).append((key, value, current))
    if refused:
        lines = "; ".join(f"--{k} is {shown(new)}, the run has {shown(old)}" for k, old, new in refused)
        flags = tuple(f"--{k}" for k, _, _ in refused)
        raise UsageError(
            f"--continue_train cannot change what the run in {directory} is: {lines}.\n"
            f"These define its networks or its loss (and what convergence.csv records). Resume it as it is:\n"
            f"  {retry(flags, ())}\nor start a new run under another --name with them.")
    return changes
