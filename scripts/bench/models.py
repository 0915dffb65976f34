"""Train-step and inference throughput and peak memory of the speed modes (fp32, bf16, channels_last,
torch.compile) against fp32 eager, all in one process.

    python -m scripts.bench.models --model atme --size 256 --batch_size 4 --repeats 2 --out bench_atme.json
    python -m scripts.bench.models --model pix2pix --size 256 --batch_size 4 --modes fp32,bf16,cl,bf16+cl

Each model is built through the real option parser and `models.create_model` (a temporary checkpoints
directory, synthetic batches), so the numbers measure the framework's code. Throughput is images/s of the
median of `--repeats` timed steps after `--warmup` untimed ones. Peak memory is torch.cuda.max_memory_allocated
on CUDA; on the CPU it is the highest resident set sampled during the mode, minus the resident set before it
(ru_maxrss only ever grows, so it cannot separate modes). The first (warm-up) step is timed apart: for the
compile modes, `compile_s` is its excess over a steady step.
"""
import argparse
import contextlib
import gc
import os
import shlex
import statistics
import sys
import tempfile
import time

import torch

if not __package__:  # run as `python scripts/bench/models.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import create_model
from options.train_options import TrainOptions
from util.process import cpu_allocator
from scripts.bench.common import (MODE_FLAGS, PeakRss, add_mode_args, log, reference_row, report, resolve_modes,
                                  selected_modes, start, train_flags)


def build_model(name, size, batch_size, mode_flags, checkpoints_dir, extra=()):
    """A training model of `name` as train.py builds it, on a synthetic data set of `batch_size` images."""
    opt = TrainOptions().parse(train_flags(name, size, batch_size, checkpoints_dir, checkpoints_dir, mode_flags, extra))
    opt.dataset_size = batch_size  # the ATME pool needs one map per image; no files are read
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
    model.attach_run_state(opt)
    return model, opt


def synthetic_batch(model, opt, batch_size, size):
    generator = torch.Generator().manual_seed(0)
    batch = {"A": torch.rand(batch_size, opt.input_nc, size, size, generator=generator) * 2 - 1,
             "B": torch.rand(batch_size, opt.output_nc, size, size, generator=generator) * 2 - 1,
             "A_paths": [f"{i}.png" for i in range(batch_size)], "B_paths": [f"{i}.png" for i in range(batch_size)],
             "index": torch.arange(batch_size)}
    pool = getattr(model, "disc_pool", None)
    if pool is not None:
        batch["disc_prev"] = pool.read(range(batch_size))
    return batch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, warmup, repeats):
    """(median of the timed steps, their times, time of the first warm-up step or None)."""
    times, first = [], None
    for i in range(warmup + repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        elapsed = time.perf_counter() - start
        if i == 0 and warmup:
            first = elapsed
        if i >= warmup:
            times.append(elapsed)
    return statistics.median(times), times, first


def bench_mode(name, mode, args, checkpoints_dir):
    """Train-step and inference throughput and peak memory of one mode."""
    gc.collect()
    with PeakRss() as mem, contextlib.ExitStack() as process_settings:
        model, opt = build_model(name, args.size, args.batch_size, MODE_FLAGS[mode], checkpoints_dir,
                                 shlex.split(args.extra))
        device = model.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        # As train.py does for a CPU run, and put back after the mode: this process is the benchmark's entry point.
        process_settings.enter_context(cpu_allocator.applied(opt.cpu_allocator, device.type))
        batch = synthetic_batch(model, opt, args.batch_size, args.size)

        def train_step():
            model.set_input(batch)
            model.optimize_parameters()

        model.train()
        train_s, train_all, train_first = timed(train_step, device, args.warmup, args.repeats)
        model.eval()
        model.set_input(batch)
        infer_s, infer_all, infer_first = timed(model.test, device, args.warmup, args.repeats)
        losses = model.get_current_losses()
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else mem.peak - mem.start)
    del model
    compile_s = None
    if "compile" in mode:  # the first training and inference steps compile the graphs they run
        compile_s = (train_first - train_s) + (infer_first - infer_s)
    return {"mode": mode, "train_img_s": args.batch_size / train_s, "infer_img_s": args.batch_size / infer_s,
            "train_step_s": train_all, "infer_step_s": infer_all, "train_first_step_s": train_first,
            "infer_first_step_s": infer_first, "compile_s": compile_s, "peak_mem_mb": peak / 2 ** 20,
            "memory_measure": "cuda_max_allocated" if device.type == "cuda" else "rss_peak_minus_start",
            "losses": losses, "device": str(device)}

def bench_models(args):
    rows = []
    for mode in selected_modes(args):
        with tempfile.TemporaryDirectory() as tmp:
            log.info("%s %dx%d batch %d: mode %s", args.model, args.size, args.size, args.batch_size, mode)
            rows.append(bench_mode(args.model, mode, args, tmp))
            log.info("  train %.3f img/s, inference %.3f img/s", rows[-1]["train_img_s"], rows[-1]["infer_img_s"])
    base = reference_row(rows)
    for r in rows:
        r["reference_mode"] = base["mode"]
        r["train_speedup"] = r["train_img_s"] / base["train_img_s"]
        r["infer_speedup"] = r["infer_img_s"] / base["infer_img_s"]
    return rows


def model_table(rows):
    ref = rows[0]["reference_mode"]
    lines = [f"| mode | train img/s | x {ref} | infer img/s | x {ref} | peak mem MB | compile s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        compile_s = "" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        lines.append(f"| {r['mode']} | {r['train_img_s']:.3f} | {r['train_speedup']:.2f} | {r['infer_img_s']:.3f} | "
                     f"{r['infer_speedup']:.2f} | {r['peak_mem_mb']:.0f} | {compile_s} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_mode_args(p)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per mode (the median is reported)")
    args = p.parse_args(argv)
    resolve_modes(p, args)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be at least 1 and --warmup at least 0")
    if "compile" in args.modes and args.warmup < 1:
        p.error("the compile modes need --warmup 1 or more: the first step compiles")
    return args


def main(argv=None):
    args = parse_args(argv)
    info = start()
    rows = bench_models(args)
    table = model_table(rows)
    result = {"kind": "model", "model": args.model, "size": args.size, "batch_size": args.batch_size,
              "warmup": args.warmup, "repeats": args.repeats, **info, "rows": rows}
    for kind in ("train", "infer"):
        best = max(rows, key=lambda r: r[f"{kind}_img_s"])
        result[f"fastest_{kind}"] = best["mode"]
        table += f"\nfastest {kind} mode here: {best['mode']} ({best[f'{kind}_speedup']:.2f}x {best['reference_mode']})"
    return report(result, table, args.out)


if __name__ == "__main__":
    main()
