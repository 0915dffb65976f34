"""Train-step and inference time of this checkout against another commit of the project, measured side by side.

    git worktree add ../baseline 1aebf11
    python -m scripts.bench.side_by_side --baseline ../baseline --model atme --size 256 --batch_size 4 --rounds 5

Each checkout runs in a worker process of its own (scripts/bench/worker.py, with cwd and PYTHONPATH set to the
checkout), so each builds its model through its own option parser and reads the same small aligned data set
(written here, `--batch_size` random A|B images at `--size`) through its own dataset code; both use seed 0. Every
round times `--steps` training steps and then `--steps` inference steps (`set_input` plus `optimize_parameters`,
or plus `test` in eval mode), each request after `--warmup` untimed steps of its kind, in one worker and then in
the other, the order swapped every round (baseline first in even rounds: ABBA), so drifts of the
machine's speed fall on both alike and the workers never run at once. A worker gives the memory it freed back
to the OS before it answers, so the idle one does not hold its peak while the other runs (two ATME workers at
256x256 would not fit in 24 GB otherwise); the untimed steps take that memory again, so the timed ones run as
in a training run.

Reported per checkout: the median seconds per image over all timed steps. The speed-up is baseline time / current
time (> 1: this checkout is faster), computed per round from the two checkouts' median steps of that round, and
given as the median of the rounds' ratios with their min..max. The losses after each worker's first training step
are reported too: for two checkouts of the same commit they are equal.

Each checkout's peak resident memory (ru_maxrss of its worker) is printed next to its times. After the rounds,
each worker profiles `--profile_steps` more training steps (torch.profiler, self CPU time per op) and the table
lists this checkout's `--top` ops with their share of the step and the same op's share in the baseline. Then
fresh workers of this checkout time the scaling table: seconds per image over `--scale_batches` at
`--scale_size`, and per pixel over `--scale_sizes` at `--scale_batch` (flat is good; `--scale_batches ''
--scale_sizes ''` skips it).

`--mode` sets this checkout's speed mode and `--baseline_mode` the baseline's (default: the same), so
`--mode bf16+cl --baseline_mode fp32` compares the fastest mode a user gets here with the baseline's fp32.
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

if not __package__:  # run as `python scripts/bench/side_by_side.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scripts.bench.common import MODE_FLAGS, MODEL_FLAGS, ROOT, hardware_line, log, report, start, train_flags
from scripts.bench.profile_step import op_table
from scripts.bench.scaling import int_list, run_scaling, scaling_table, scaling_warmup

WORKER = os.path.join(ROOT, "scripts", "bench", "worker.py")
SEED = 0
STDERR_TAIL_LINES = 25


def git_commit(path):
    """The short commit of the checkout at `path` ('+ uncommitted changes' when its tracked files differ), or
    'not a git checkout' when `path` is not the top of a git work tree."""
    def git(*args):
        return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, check=True).stdout.strip()
    try:
        if os.path.realpath(git("rev-parse", "--show-toplevel")) != os.path.realpath(path):
            return "not a git checkout"
        commit = git("rev-parse", "--short", "HEAD")
        return commit + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"


def write_aligned_images(folder, count, size, seed=SEED):
    """`count` random `A|B` images (2 size x size PNGs) in `folder`/train, as the aligned data sets store pairs."""
    train = os.path.join(folder, "train")
    os.makedirs(train)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, size=(size, 2 * size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(train, f"{i:04d}.png"))
    return folder


class Worker:
    """A worker process for one checkout, spoken to in JSON lines; its stderr goes to a log file."""

    def __init__(self, label, checkout, log_path):
        self.label, self.checkout, self.log_path = label, checkout, log_path
        self._log = open(log_path, "w")
        env = dict(os.environ, PYTHONPATH=checkout)
        self.proc = subprocess.Popen([sys.executable, WORKER], cwd=checkout, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.first_losses, self.max_rss_mb, self.last_op = None, None, None

    def send(self, op, **fields):
        self.last_op = op
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reply's absence reports it, with the worker's stderr

    def receive(self):
        line = self.proc.stdout.readline()
        if not line:
            raise self.failure()
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise RuntimeError(f"the {self.label} worker ({self.checkout}) answered {self.last_op!r} with a line "
                               f"that is not JSON: {line[:200]!r}") from None
        self.first_losses = reply.pop("first_losses") or self.first_losses
        self.max_rss_mb = reply.pop("max_rss_mb", self.max_rss_mb)
        return reply

    def ask(self, op, **fields):
        self.send(op, **fields)
        return self.receive()

    def failure(self):
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            tail = "".join(f.readlines()[-STDERR_TAIL_LINES:]).rstrip()
        return RuntimeError(f"the {self.label} worker ({self.checkout}) exited with code {code} during "
                            f"{self.last_op!r}; the end of its stderr:\n{tail or '(empty)'}")

    def close(self):
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._log.close()


def per_image(times, batch_size):
    return [t / batch_size for t in times]


def spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": values}


def run_rounds(workers, args):
    """Time the rounds, alternating the order, each timed request after `--warmup` untimed steps of its kind:
    per-image step times per label."""
    times = {label: {"train": [], "infer": []} for label in workers}
    orders = []
    for r in range(args.rounds):
        order = ["baseline", "current"] if r % 2 == 0 else ["current", "baseline"]
        orders.append(order)
        for kind in ("train", "infer"):
            for label in order:
                step_times = workers[label].ask(kind, steps=args.steps, warmup=args.warmup)["times"]
                times[label][kind].append(per_image(step_times, args.batch_size))
        log.info("round %d/%d (%s first): train %s", r + 1, args.rounds, order[0],
                 ", ".join(f"{label} {statistics.median(times[label]['train'][-1]):.4g} s/img" for label in order))
    return times, orders


def summarise(times):
    """Per-label medians over all steps, and the per-round ratios baseline / current."""
    summary, speedup = {}, {}
    for label, kinds in times.items():
        summary[label] = {f"{kind}_s_per_img": statistics.median([t for rnd in rounds for t in rnd])
                          for kind, rounds in kinds.items()}
        summary[label].update({f"{kind}_round_s_per_img": [statistics.median(rnd) for rnd in rounds]
                               for kind, rounds in kinds.items()})
    for kind in ("train", "infer"):
        ratios = [b / c for b, c in zip(summary["baseline"][f"{kind}_round_s_per_img"],
                                        summary["current"][f"{kind}_round_s_per_img"])]
        speedup[kind] = spread(ratios)
    return summary, speedup


def side_by_side_table(result):
    v, s = result["versions"], result["speedup"]
    lines = [f"{result['model']} {result['size']}x{result['size']}, batch {result['batch_size']}, mode "
             f"{result['mode']} (baseline: {result['baseline_mode']}): {result['rounds']} rounds of {result['steps']} timed step(s), order alternated "
             f"(ABBA), each after {result['warmup']} warm-up step(s)",
             f"CPU: {hardware_line(result)}, device {v['current']['device']}, {v['current']['threads']} threads",
             "",
             "| checkout | commit | mode | train s/img | inference s/img | peak RSS GB |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for label in ("baseline", "current"):
        lines.append(f"| {label} ({v[label]['path']}) | {v[label]['commit']} | {v[label]['mode']} | "
                     f"{v[label]['train_s_per_img']:.4g} | {v[label]['infer_s_per_img']:.4g} | "
                     f"{v[label]['max_rss_mb'] / 1024:.2f} |")

    def ratio(kind):
        return f"{s[kind]['median']:.3f} ({s[kind]['min']:.3f}..{s[kind]['max']:.3f})"
    rss = v["current"]["max_rss_mb"] / v["baseline"]["max_rss_mb"]
    lines += [f"| speed-up, baseline/current: median of per-round ratios (min..max); memory: current/baseline | | | "
              f"{ratio('train')} | {ratio('infer')} | {rss:.3f} |",
              "",
              "s/img: median over all timed steps; a speed-up above 1 means the current checkout is faster.",
              f"losses after the first training step: baseline {v['baseline']['first_losses']}; current "
              f"{v['current']['first_losses']} ({'equal' if result['first_losses_equal'] else 'different'})",
              f"peak RSS: each worker's ru_maxrss over the whole run; this checkout's allocator: "
              f"{v['current'].get('allocator') or 'as the checkout sets it'}"]
    if result.get("profile"):
        table, _ = op_table(result["profile"]["current"], result["top"], result["profile"]["baseline"],
                            labels=("share here", "baseline's share"))
        lines += ["", f"top {result['top']} ops of this checkout's training step by self CPU time "
                      f"({result['profile_steps']} profiled step(s) per checkout; shares hold on a busy machine, "
                      f"times do not):", table]
    if result.get("scaling"):
        lines += ["", f"scaling of this checkout's training step ({result['mode']}; median of {result['steps']} "
                      f"step(s) after {scaling_warmup(result['warmup'])} warm-up step(s), a fresh worker per row):",
                  scaling_table(result["scaling"], argparse.Namespace(**result["scaling_args"]))]
    return "\n".join(lines)


def check_checkout(parser, path):
    if not os.path.isdir(path):
        parser.error(f"--baseline {path}: not a directory; pass a checkout of this project, "
                     f"e.g. made with `git worktree add ../baseline <commit>`")
    missing = [name for name in ("train.py", "models") if not os.path.exists(os.path.join(path, name))]
    if missing:
        parser.error(f"--baseline {path}: not a checkout of this project (no {' or '.join(missing)}); pass the "
                     f"top folder of one, e.g. made with `git worktree add ../baseline <commit>`")


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", required=True, help="a checkout (or git worktree) of another commit of the project")
    p.add_argument("--model", default="atme", choices=sorted(MODEL_FLAGS))
    p.add_argument("--size", type=int, default=256, help="square image side")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--mode", default="fp32", help=f"speed mode of the current checkout, one of {', '.join(MODE_FLAGS)}")
    p.add_argument("--baseline_mode", default=None,
                   help="speed mode of the baseline (default: --mode); e.g. --mode bf16+cl --baseline_mode fp32 "
                        "compares this checkout's fastest mode with the baseline's fp32")
    p.add_argument("--rounds", type=int, default=5, help="rounds; each times both checkouts, the order alternating")
    p.add_argument("--steps", type=int, default=1, help="timed training (and inference) steps per round and checkout")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps before the timed ones of every request (each worker gives its freed memory "
                        "back to the OS while the other one runs; these steps take it again, and after one of them "
                        "a step still faults part of it in: steady state needs two)")
    p.add_argument("--extra", default="", help="more train.py flags for both checkouts, e.g. '--ngf 32'")
    p.add_argument("--top", type=int, default=10, help="ops listed from the profile of each checkout's step (0: none)")
    p.add_argument("--profile_steps", type=int, default=1, help="training steps profiled per checkout")
    p.add_argument("--scale_batches", type=int_list, default=[1, 2, 4],
                   help="batch sizes of the scaling table, at --scale_size (e.g. 1,2,4,8; '' for none)")
    p.add_argument("--scale_size", type=int, default=128, help="image side of the batch rows of the scaling table")
    p.add_argument("--scale_sizes", type=int_list, default=[64, 128, 256],
                   help="image sides of the scaling table, at --scale_batch (e.g. 64,128,256,512; '' for none)")
    p.add_argument("--scale_batch", type=int, default=1, help="batch size of the size rows of the scaling table")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.baseline_mode is None:
        args.baseline_mode = args.mode
    for flag, mode in (("--mode", args.mode), ("--baseline_mode", args.baseline_mode)):
        if mode not in MODE_FLAGS:
            p.error(f"{flag}: unknown mode {mode!r}; choose from {', '.join(MODE_FLAGS)}")
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0 or args.size < 1 or args.batch_size < 1:
        p.error("--rounds, --steps, --size and --batch_size must be at least 1 and --warmup at least 0")
    if args.top < 0 or args.profile_steps < 1 or args.scale_size < 1 or args.scale_batch < 1:
        p.error("--top must be at least 0, --profile_steps, --scale_size and --scale_batch at least 1")
    if "compile" in args.mode + args.baseline_mode and args.warmup < 1:
        p.error("the compile modes need --warmup 1 or more: the first step compiles")
    args.baseline = os.path.abspath(args.baseline)
    check_checkout(p, args.baseline)
    return args


def side_by_side(args, tmp):
    data = write_aligned_images(os.path.join(tmp, "data"), args.batch_size, args.size)
    checkouts = {"baseline": args.baseline, "current": ROOT}
    modes = {"baseline": args.baseline_mode, "current": args.mode}
    workers = {}
    try:
        for label, path in checkouts.items():
            workers[label] = Worker(label, path, os.path.join(tmp, f"{label}.log"))
        for label, w in workers.items():  # both build their models at once: nothing is timed yet
            flags = train_flags(args.model, args.size, args.batch_size, os.path.join(tmp, f"checkpoints_{label}"),
                                data, [*MODE_FLAGS[modes[label]], "--no_flip"], shlex.split(args.extra))
            w.send("init", flags=flags, seed=SEED)
        info = {label: w.receive() for label, w in workers.items()}
        for label, path in checkouts.items():
            if not info[label]["models_file"].startswith(os.path.realpath(path) + os.sep):
                raise RuntimeError(f"the {label} worker imported {info[label]['models_file']}, not the checkout's "
                                   f"models at {path}")
        times, orders = run_rounds(workers, args)
        profiles = None
        if args.top:
            log.info("profiling %d training step(s) per checkout", args.profile_steps)
            profiles = {label: w.ask("profile", steps=args.profile_steps)["ops"] for label, w in workers.items()}
    finally:
        for w in workers.values():
            w.close()
    summary, speedup = summarise(times)
    versions = {label: {"path": path, "commit": git_commit(path), "mode": modes[label], **info[label],
                        **summary[label],
                        "first_losses": workers[label].first_losses, "max_rss_mb": workers[label].max_rss_mb}
                for label, path in checkouts.items()}
    return versions, speedup, orders, profiles


def main(argv=None):
    args = parse_args(argv)
    hardware = start()
    with tempfile.TemporaryDirectory(prefix="side_by_side_") as tmp:
        versions, speedup, orders, profiles = side_by_side(args, tmp)
        scaling = None
        if args.scale_batches or args.scale_sizes:
            log.info("scaling table: batches %s at %d, sizes %s at batch %d", args.scale_batches, args.scale_size,
                     args.scale_sizes, args.scale_batch)
            scaling = run_scaling(args, tmp, Worker, write_aligned_images, ROOT)
    losses = [versions[label]["first_losses"] for label in ("baseline", "current")]
    result = {"kind": "side_by_side", "model": args.model, "size": args.size, "batch_size": args.batch_size,
              "mode": args.mode, "baseline_mode": args.baseline_mode, "rounds": args.rounds, "steps": args.steps,
              "warmup": args.warmup,
              "extra": args.extra, **hardware, "versions": versions, "speedup": speedup, "orders": orders,
              "speedup_definition": "per round, baseline s/img / current s/img of the round's median steps; "
                                    "median and min..max over rounds; > 1: the current checkout is faster",
              "first_losses_equal": losses[0] == losses[1], "top": args.top, "profile_steps": args.profile_steps,
              "profile": profiles, "scaling": scaling,
              "scaling_args": {k: getattr(args, k) for k in ("scale_batches", "scale_size", "scale_sizes",
                                                            "scale_batch")}}
    return report(result, side_by_side_table(result), args.out)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as error:  # a worker's failure: its message already holds the worker's stderr
        sys.exit(f"side_by_side: {error}")
