"""Peak resident memory and page faults per training step under C allocator settings, each in a fresh process.

    python -m scripts.bench.allocator --model atme --size 256 --batch_size 2 --steps 4 \
        --settings reuse,system,thp,bounded:128:128

`reuse` and `system` are --cpu_allocator modes; `bounded:M:T` leaves malloc's mmap on but raises its threshold to
M MB (blocks up to M MB come from the heap and are reused) and trims the heap's free top above T MB; `thp` is
`system` in a process started with THP_MEM_ALLOC_ENABLE=1 (torch then asks for transparent huge pages for its
large blocks, so a fresh block faults in 2 MB at a time). Page faults per step (after the first step) and the
process's CPU seconds per step (user + system, which holds the kernel's page zeroing) measure the allocator's
cost so that it holds on a busy machine; wall seconds are printed too, for a quiet one. Run with
OMP_NUM_THREADS=1 for CPU seconds free of threads spinning while they wait.
"""
import argparse
import contextlib
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

if not __package__:  # run as `python scripts/bench/allocator.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scripts.bench.common import ROOT, log, report, start

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def apply_setting(setting):
    """The --cpu_allocator flag for `setting`; a bounded setting is applied here, with the allocator left at system."""
    if setting in ("reuse", "system"):
        return ["--cpu_allocator", setting]
    if setting == "thp":
        return ["--cpu_allocator", "system"]
    kind, mmap_mb, trim_mb = setting.split(":")
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(M_MMAP_THRESHOLD, int(mmap_mb) << 20) and libc.mallopt(M_TRIM_THRESHOLD, int(trim_mb) << 20)):
        raise RuntimeError(f"glibc refused mallopt for {setting}")
    return ["--cpu_allocator", "system"]


def measure_one(setting, model_name, size, batch_size, steps):
    """Run in the fresh process: `steps` training steps; peak RSS, faults and seconds per step after the first."""
    from scripts.bench.models import build_model, synthetic_batch
    from util.process import cpu_allocator
    flags = apply_setting(setting)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as process_settings:
        model, opt = build_model(model_name, size, batch_size, [], tmp, flags)
        # This process is the entry point: it sets --cpu_allocator for the steps as train.py does for a CPU run.
        process_settings.enter_context(cpu_allocator.applied(opt.cpu_allocator, model.device.type))
        batch = synthetic_batch(model, opt, batch_size, size)
        model.train()
        times, cpu, faults = [], [], []
        for _ in range(steps):
            before, start_time, start_cpu = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(),
                                             time.process_time())
            model.set_input(batch)
            model.optimize_parameters()
            times.append(time.perf_counter() - start_time)
            cpu.append(time.process_time() - start_cpu)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"setting": setting, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "faults_per_step": statistics.median(faults[1:]), "cpu_s_per_step": statistics.median(cpu[1:]),
            "s_per_step": statistics.median(times[1:])}


def check_setting(parser, setting):
    if setting in ("reuse", "system", "thp"):
        return
    parts = setting.split(":")
    if len(parts) != 3 or parts[0] != "bounded" or not all(p.isdigit() and int(p) > 0 for p in parts[1:]):
        parser.error(f"--settings: {setting!r} is not reuse, system, thp or bounded:MMAP_MB:TRIM_MB "
                     f"(e.g. bounded:128:128)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="atme")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="training steps per setting; the first is not counted")
    p.add_argument("--settings", default="reuse,system,thp,bounded:128:128")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # the child process's own setting
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be at least 2: the first step is not counted")
    for setting in ([args.one] if args.one else args.settings.split(",")):
        check_setting(p, setting)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one, args.model, args.size, args.batch_size, args.steps)))
        return None
    info = start()
    rows = []
    for setting in args.settings.split(","):
        log.info("%s: %d steps of %s %dx%d batch %d in a fresh process", setting, args.steps, args.model, args.size,
                 args.size, args.batch_size)
        proc = subprocess.run([sys.executable, "-m", "scripts.bench.allocator", "--one", setting, "--model",
                               args.model, "--size", str(args.size), "--batch_size", str(args.batch_size),
                               "--steps", str(args.steps)], cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT,
                                       **({"THP_MEM_ALLOC_ENABLE": "1"} if setting == "thp" else {})))
        if proc.returncode:
            sys.exit(f"allocator: the {setting} process failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    lines = ["| setting | peak RSS GB | page faults per step | CPU s per step | wall s per step |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['setting']} | {r['peak_rss_gb']:.2f} | {r['faults_per_step']:.0f} | {r['cpu_s_per_step']:.3g} | "
              f"{r['s_per_step']:.3g} |" for r in rows]
    result = {"kind": "allocator", "model": args.model, "size": args.size, "batch_size": args.batch_size,
              "steps": args.steps, **info, "rows": rows}
    return report(result, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
