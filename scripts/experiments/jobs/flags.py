"""The flags every experiment command shares to hand its runs to a scheduler, the submitit executor they make,
and the parameters --dry_run shows. submitit is imported only when a job is submitted."""
import argparse
import shlex
import shutil

EXECUTORS = ("local", "slurm", "debug")
LOCAL_TIMEOUT_MIN = 60 * 24 * 365  # a local job has no time limit
MAX_TIME_LIMITS = 50  # time limits a job may reach (each time it is requeued); preemptions do not count
SLURM_SIGNAL_DELAY_S = 120  # the warning signal (SIGUSR2) comes this long before the time limit


def default_executor():
    """slurm where `sbatch` is on the PATH, else local."""
    return "slurm" if shutil.which("sbatch") else "local"


def key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. qos=high or constraint=a100)")
    return key.strip(), value


def add_job_flags(parser):
    g = parser.add_argument_group("jobs: every run a job through submitit (docs/cluster.md)")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="slurm: one SLURM job per run; local: one process per run on this machine; debug: one "
                        "run after another in this process (default: slurm where sbatch exists, else local)")
    g.add_argument("--max_parallel", type=int, default=None,
                   help="jobs running at once (default: 1 for local, every job for slurm)")
    g.add_argument("--slurm_partition", default=None, help="SLURM partition (default: the cluster's)")
    g.add_argument("--slurm_gpus_per_job", type=int, default=1, help="GPUs of one job")
    g.add_argument("--slurm_time_min", type=int, default=24 * 60,
                   help=f"time limit of one job in minutes; a run that needs longer is requeued and resumes "
                        f"(up to {MAX_TIME_LIMITS} times)")
    g.add_argument("--slurm_extra", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="another SLURM setting, passed to submitit's SlurmExecutor (e.g. cpus_per_task=8, "
                        "mem=64G, qos=high, constraint=a100, account=lab; repeatable)")
    g.add_argument("--status", action="store_true",
                   help="list every run's state (pending, running, preempted, finished, failed) and exit")
    g.add_argument("--dry_run", action="store_true",
                   help="show the jobs and the submitit parameters each would use, and exit")
    return g


def check_job_flags(opts, command):
    """Resolve --executor and refuse what cannot work; `command(flag, value)` is the command line with one flag
    replaced, shown in the refusal."""
    opts.executor = opts.executor or default_executor()
    if opts.max_parallel is not None and opts.max_parallel < 1:
        raise ValueError(f"--max_parallel {opts.max_parallel}: at least 1 job must run at once; pass "
                         f"--max_parallel 1 or more")
    if opts.slurm_time_min < 1 or opts.slurm_gpus_per_job < 0:
        raise ValueError("--slurm_time_min must be >= 1 and --slurm_gpus_per_job >= 0")
    if opts.executor == "slurm" and not opts.dry_run and not opts.status and not shutil.which("sbatch"):
        raise ValueError("--executor slurm: this machine has no SLURM (sbatch is not on the PATH), so nothing was "
                         "submitted. Run the jobs here instead:\n  " + command("--executor", "local")
                         + "\n(or see what SLURM would get: add --dry_run)")


def _number(value):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def submitit_parameters(opts, n_jobs):
    """The keyword arguments of the executor's update_parameters, as submitted."""
    if opts.executor == "debug":
        return {}
    if opts.executor == "local":
        return dict(timeout_min=LOCAL_TIMEOUT_MIN, gpus_per_node=0)
    params = dict(nodes=1, ntasks_per_node=1, gpus_per_node=opts.slurm_gpus_per_job, time=opts.slurm_time_min,
                  signal_delay_s=SLURM_SIGNAL_DELAY_S, array_parallelism=opts.max_parallel or max(n_jobs, 1))
    if opts.slurm_partition:
        params["partition"] = opts.slurm_partition
    from submitit.slurm.slurm import SlurmExecutor
    valid = SlurmExecutor._valid_parameters()
    extra = {}
    for key, value in opts.slurm_extra:
        if key in valid:
            params[key] = _number(value)
        else:  # any other sbatch option, as --KEY=VALUE
            extra[key] = _number(value)
    if extra:
        params["additional_parameters"] = extra
    return params


def make_executor(opts, folder, n_jobs):
    """The submitit executor of --executor with its parameters; it writes its files under `folder`."""
    import submitit
    if opts.executor == "debug":
        return submitit.DebugExecutor(folder)
    if opts.executor == "local":
        executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIME_LIMITS)
    else:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIME_LIMITS)
    executor.update_parameters(**submitit_parameters(opts, n_jobs))
    return executor


def split_train_flags(argv):
    """(the command's own arguments, train.py's flags after the first `--`)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def replaced(prog, argv, flag, value):
    """`prog argv` with `flag`'s value replaced by `value` (or the flag added), quoted to paste."""
    argv = list(argv)
    if flag in argv:
        index = argv.index(flag)
        argv[index + 1] = value
    else:
        cut = argv.index("--") if "--" in argv else len(argv)
        argv[cut:cut] = [flag, value]
    return f"{prog} {shlex.join(argv)}"
