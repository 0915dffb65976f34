"""Start the torchrun path from a plain `python train.py --gpu_ids 0,1 ...`: one process per GPU (or N on the CPU).

The script re-runs itself, with the same arguments, under `python -m torch.distributed.run --standalone`, so
every worker takes the same DistributedDataParallel path as a hand-written torchrun command. Several nodes
still need torchrun itself. No process outlives the one above it: torchrun and every worker get SIGTERM from the
kernel when their parent ends (`stop_with_parent`), so killing the launcher by any signal stops the run with a
resumable state.
"""
import ctypes
import logging
import os
import signal
import subprocess
import sys

import torch

from util.run.run_logs import LAUNCHER_LOG_ENV, kept_lines

log = logging.getLogger(__name__)

# Signals passed on to the workers: SIGINT and SIGTERM make them save a resumable state (train.StopRequest);
# SIGHUP is what torchrun's agent would get from a closing terminal.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def stop_with_parent(signum=signal.SIGTERM):
    """Have the kernel send `signum` to this process when its parent ends, however it ends (SIGKILL included), so
    no process of a run trains on as an orphan. Linux only (prctl); elsewhere nothing happens. Called in torchrun
    before it starts (by the launcher) and in every worker under torchrun, whose agent starts them in sessions of
    their own. SIGTERM makes a worker finish its step and save a resumable state.

    A worker calls it once its imports are done, seconds after it started: an agent that ended meanwhile (a
    torchrun killed during start-up) is no longer its parent, and the worker, adopted by init or a subreaper,
    signals itself rather than wait for the other ranks forever."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    # The parent ended before the request took effect, or (a worker) before this was called: as if the signal
    # had come.
    if os.getppid() != parent or (under_torchrun() and agent_gone(parent)):
        os.kill(os.getpid(), signum)


def agent_gone(parent):
    """Whether this worker's parent `parent` shows that torchrun's agent (a Python process) has ended: the worker
    was adopted by init (pid 1) or by a subreaper that is not a Python interpreter. False when it cannot be told
    (no /proc, another user's process)."""
    if parent == 1:
        return True
    try:
        executable = os.readlink(f"/proc/{parent}/exe")
    except OSError:
        return False
    return "python" not in os.path.basename(executable).lower()


def under_torchrun(environ=None):
    """Whether this process is a worker started by torchrun's agent."""
    return "TORCHELASTIC_RUN_ID" in (os.environ if environ is None else environ)


def local_processes(gpu_ids, nproc_per_node, environ=None):
    """How many processes this invocation should start on this machine; 1 means: run here, in this process.

    nproc_per_node 0 is automatic: one process per listed GPU when CUDA is available, else 1. A value N > 1
    without CUDA (or with --gpu_ids -1) starts N CPU processes (gloo). Under torchrun already (WORLD_SIZE is
    set) nothing is started again.
    """
    environ = os.environ if environ is None else environ
    if nproc_per_node < 0:
        raise ValueError(f"--nproc_per_node must be 0 (one process per --gpu_ids entry) or a positive count, "
                         f"got {nproc_per_node}")
    if "WORLD_SIZE" in environ:
        if nproc_per_node:
            log.debug("already under torchrun (WORLD_SIZE=%s): --nproc_per_node %d is ignored",
                      environ["WORLD_SIZE"], nproc_per_node)
        return 1
    on_cuda = bool(gpu_ids) and torch.cuda.is_available()
    if not on_cuda:
        return nproc_per_node or 1
    processes = nproc_per_node or len(gpu_ids)
    if processes > len(gpu_ids):
        raise ValueError(f"--nproc_per_node {processes} asks for more processes than --gpu_ids "
                         f"{','.join(map(str, gpu_ids))} lists GPUs (one GPU per process): list more GPUs in "
                         f"--gpu_ids or lower --nproc_per_node")
    if processes > 1:
        visible = torch.cuda.device_count()
        missing = [i for i in gpu_ids[:processes] if i >= visible]
        if missing:
            raise ValueError(f"--gpu_ids lists GPU {missing[0]}, but only {visible} GPU(s) are visible "
                             f"(ids 0..{visible - 1}): list visible GPUs in --gpu_ids")
    return processes


# Seconds torchrun's agent waits, after passing on a stop signal, before it kills the workers (its own default
# is 30): long enough for a slow CPU step plus the save of the resumable state.
SHUTDOWN_TIMEOUT = 300


def worker_environment(processes, environ=None):
    """torchrun's environment: OMP_NUM_THREADS shares the cores and the agent gives the workers time to save,
    unless the user set these."""
    env = dict(os.environ if environ is None else environ)
    if "OMP_NUM_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // processes))
    if "TORCH_ELASTIC_SHUTDOWN_TIMEOUT" not in env and "PET_SHUTDOWN_TIMEOUT" not in env:
        env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(SHUTDOWN_TIMEOUT)
    return env


def launch_local_workers(script, argv, processes):
    """Run `script argv` in `processes` local processes under torchrun; return the exit code to exit with.

    SIGINT/SIGTERM received here are passed on, so the workers finish their step and save a resumable state;
    the exit code is then 128 + the signal number (130, 143), as for a single process.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               script, *map(str, argv)]
    env = worker_environment(processes)
    log.info("starting %d processes (OMP_NUM_THREADS=%s each): %s", processes, env["OMP_NUM_THREADS"],
             " ".join(["torchrun", *command[3:]]))
    env[LAUNCHER_LOG_ENV] = kept_lines()  # the workers own the run folder: rank 0 puts these lines in train.log
    received, children, pending = [], [], []

    def forward(signum, frame):
        if not received:
            log.warning("%s received: passed on to the %d processes, which save a resumable state and stop",
                        signal.Signals(signum).name, processes)
        received.append(signum)
        if not children:
            pending.append(signum)  # torchrun is being started: passed on as soon as it exists
        for child in children:
            try:
                os.killpg(child.pid, signum)
            except ProcessLookupError:
                pass

    # Installed before the start, so no signal can stop this process and leave torchrun running. A signal the
    # user ignores (nohup) stays ignored.
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        # torchrun runs in a session of its own so that a terminal's Ctrl-C reaches it once, through here, and
        # not also directly; its agent passes the signal on to the workers.
        # It also ends when this process ends, however that happens (its agent then stops the workers).
        children.append(subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=stop_with_parent))
        for signum in pending:
            os.killpg(children[0].pid, signum)
        code = children[0].wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code < 0:  # torchrun itself killed by a signal
        code = 128 - code
    if received and code != 0:
        # torchrun reports an interrupted run as a failure (exit 1, with a SignalException traceback); keep the
        # convention of one process instead.
        code = 128 + received[0]
        log.info("stopped on %s (torchrun's SignalException above is its report of the signal); resume with "
                 "--continue_train", signal.Signals(received[0]).name)
    if code != 0 and not received:
        log.error("the %d processes failed (torchrun exited %d); see the messages above", processes, code)
    return code
