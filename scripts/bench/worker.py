"""One side of `scripts.bench.side_by_side`: trains and runs one checkout's model on request, timing each step.

Run as a file with cwd and PYTHONPATH set to a checkout of this project, so `data`, `models` and `options` are
that checkout's. It uses only what every version of the project has (`data.create_dataset`, `models.create_model`,
`TrainOptions().parse(args)`, `model.setup`, `set_input`, `optimize_parameters`, `test`, `get_current_losses`),
and neither imports nor needs anything else from the repository it lives in.

Protocol: one JSON object per line on stdin, one reply per line on stdout; everything else the process prints
(option tables, logs, warnings) goes to stderr.

    {"op": "init", "flags": [train.py flags], "seed": 0}  -> {"models_file", "device", "threads", "images", "allocator"}
    {"op": "train", "steps": n, "warmup": w} / {"op": "infer", ...}  -> {"times": [seconds per timed step]}
    {"op": "profile", "steps": n}  -> {"ops": [[op name, self CPU seconds, calls], ...]} (training steps)
    {"op": "quit"}  -> {}

A train or infer request runs `warmup` untimed steps, then `steps` timed ones. Before every reply the worker
hands the memory it freed back to the OS (glibc's malloc_trim), so an idle worker does not hold the peak of its
last step while the other one runs; the untimed steps of the next request fault that memory in again, and the
timed steps see the process as a run in progress does.

Every reply also carries `first_losses` (the losses after the first training step, once there was one) and
`max_rss_mb`. An error ends the process with its traceback on stderr.
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Run as a file, Python puts this folder first on sys.path; its models.py would shadow the checkout's package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]


def seed_everything(seed):
    import random

    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Session:
    """The checkout's model, built through its own option parser, and one batch read by its own dataset code."""

    def __init__(self):
        self.model = self.batch = self.first_losses = None
        self.training = None

    def init(self, flags, seed):
        import models
        import torch
        from torch.utils.data import default_collate

        from data import create_dataset
        from models import create_model
        from options.train_options import TrainOptions

        opt = TrainOptions().parse(flags)
        seed_everything(seed)
        dataset = create_dataset(opt)
        self.batch = default_collate([dataset[i] for i in range(len(dataset))])
        opt.dataset_size = len(dataset)  # read by versions whose ATME pool is sized before the run starts
        seed_everything(seed)
        self.model = create_model(opt)
        self.model.setup(opt)
        if hasattr(self.model, "attach_run_state"):  # versions that open run state (ATME's pool) apart from setup
            self.model.attach_run_state(opt)
        self.device = torch.device(getattr(self.model, "device", "cpu"))
        apply_cpu_allocator(opt, self.device)
        allocator = (sys.modules.get("util.process.cpu_allocator")  # versions with --cpu_allocator say what is in
                     or sys.modules.get("util.cpu_allocator"))  # effect (util.cpu_allocator before util/process/)
        describe = getattr(allocator, "describe", None)
        return {"models_file": os.path.abspath(models.__file__), "device": str(self.device),
                "threads": torch.get_num_threads(), "images": len(dataset),
                "allocator": describe() if describe else getattr(allocator, "_applied", None)}

    def _sync(self):
        import torch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _set_training(self, training):
        if self.training != training:
            self.model.train() if training else self.model.eval()
            self.training = training

    def train_step(self):
        self._set_training(True)
        self.model.set_input(self.batch)
        self.model.optimize_parameters()
        if self.first_losses is None:
            self.first_losses = {k: float(v) for k, v in self.model.get_current_losses().items()}

    def infer_step(self):
        self._set_training(False)
        self.model.set_input(self.batch)
        self.model.test()

    def timed(self, step, steps, warmup=0):
        for _ in range(warmup):
            step()
        self._sync()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            self._sync()
            times.append(time.perf_counter() - start)
        return {"times": times}

    def profile(self, steps):
        return {"ops": profile_rows(self.train_step, steps)}

    def handle(self, request):
        op = request["op"]
        if op == "init":
            return self.init(request["flags"], int(request.get("seed", 0)))
        if op == "train":
            return self.timed(self.train_step, int(request["steps"]), int(request.get("warmup", 0)))
        if op == "infer":
            return self.timed(self.infer_step, int(request["steps"]), int(request.get("warmup", 0)))
        if op == "profile":
            return self.profile(int(request.get("steps", 1)))
        if op == "quit":
            return {}
        raise ValueError(f"unknown request {op!r}")


def apply_cpu_allocator(opt, device):
    """The checkout's --cpu_allocator for the rest of this process, as its train.py applies it to a CPU run.
    Versions without `cpu_allocator.applied` set it in the model's constructor, or have no such flag; before
    util/process/ the module was util.cpu_allocator."""
    try:
        from util.process import cpu_allocator
    except ImportError:
        try:
            from util import cpu_allocator
        except ImportError:
            return
    if hasattr(cpu_allocator, "applied") and device.type == "cpu":
        cpu_allocator.configure(getattr(opt, "cpu_allocator", "auto"))
def profile_rows(run_step, steps):
    """[(op name, self CPU seconds, calls)] of `steps` calls of `run_step` under torch.profiler, most expensive
    first. (Here rather than in scripts.bench.profile_step: this file runs in checkouts that lack that module.)"""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run_step()
    rows = {}
    for event in prof.key_averages():
        seconds, calls = rows.get(event.key, (0.0, 0))
        rows[event.key] = (seconds + event.self_cpu_time_total / 1e6, calls + event.count)
    return sorted(([name, s, n] for name, (s, n) in rows.items()), key=lambda r: -r[1])


def release_freed_memory():
    """Give the memory this process has freed back to the OS, where the C library is glibc. (The glibc test is
    written here, not taken from util/process/cpu_allocator: a baseline checkout need not have that module.)"""
    import ctypes
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        glibc = None
    if glibc and glibc.startswith("glibc"):
        ctypes.CDLL(None).malloc_trim(0)


def max_rss_mb():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    replies = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol keeps the real stdout
    os.dup2(2, 1)  # whatever else writes to fd 1 (prints, C libraries) lands on stderr
    sys.stdout = sys.stderr
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    session = Session()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        reply = session.handle(request)
        reply.update(first_losses=session.first_losses, max_rss_mb=max_rss_mb())
        release_freed_memory()  # before the reply: the other worker's timed steps start after it
        replies.write(json.dumps(reply) + "\n")
        if request["op"] == "quit":
            break


if __name__ == "__main__":
    main()
