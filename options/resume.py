"""A resume continues the run it resumes: `--continue_train` takes every stored option the user did not type from
the run's `train_opt.json`. What a typed flag may do follows its lifetime (util/command_line/flags.py): a `data`
or `run` flag may change (schedule, learning rate, display, batch size, ...), each change logged as one WARNING,
old -> new; an `architecture` or `loss` flag is refused with the run's value in the message; an `invocation`
flag is never taken from the run."""
from util.command_line.cli import UsageError
from util.command_line.flags import FIXED_ON_RESUME


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


def continue_run(opt, parser, stored, explicit, directory, retry):
    """Fill `opt` from `stored` (the run's stored flags: options.base_options.stored_values) for every flag not in
    `explicit`. Returns the changes the user typed as (flag, old, new); raises UsageError for a flag a resume must
    not change, naming the run's value. The caller logs each change as one WARNING."""
    fixed = set(parser.flag_table.names(*FIXED_ON_RESUME))
    changes, refused = [], []
    for key, value in sorted(stored.items()):
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
