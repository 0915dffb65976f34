"""Throughput and memory of the fast paths (bf16 autocast, channels_last, torch.compile) against fp32 eager.

    python scripts/benchmark.py --model atme --size 256 --batch_size 4 --repeats 2 --out bench_atme.json
    python scripts/benchmark.py --model pix2pix --size 256 --batch_size 4 --modes fp32,bf16,cl,bf16+cl
    python scripts/benchmark.py --pool --pool_sizes 1000,1000000 --out bench_pool.json
    python scripts/benchmark.py --model atme --dataroot datasets/demo --size 64 --epochs 2 --modes fp32,cl

Which mode is fastest depends on the hardware: bf16 pays off on CUDA and on CPUs with AVX512-BF16 or AMX,
and is from several to tens of times slower than fp32 on CPUs without them (the results name the CPU and
whether it has native bf16). The model kind runs all modes in one process. Each model is built through the
real option parser and `models.create_model` (a temporary checkpoints directory, synthetic batches), so the
numbers measure the framework's code.
Throughput is images/s of the median of `--repeats` timed steps after `--warmup` untimed ones. Peak memory
is torch.cuda.max_memory_allocated on CUDA; on the CPU it is the highest resident set sampled during the
mode, minus the resident set before it (ru_maxrss only ever grows, so it cannot separate modes). The first
(warm-up) step is timed apart: for the compile modes, `compile_s` is its excess over a steady step.

With `--dataroot`, each mode instead trains with train.py itself (a subprocess, same seed, real data and
loader workers) for `--epochs` epochs and reads its loss_log.csv: the loop's images/s, the share of the step
spent waiting for data, and the final L1 loss (and val L1, when the data has a val split) against fp32's.
"""
import argparse
import gc
import json
import logging
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from models import create_model  # noqa: E402
from options.train_options import TrainOptions  # noqa: E402
from util.devices import cpu_has_native_bf16, hardware_info  # noqa: E402
from util.run_logs import CsvLog  # noqa: E402

log = logging.getLogger("benchmark")

# mode name -> extra train.py flags
MODE_FLAGS = {
    "fp32": [],
    "bf16": ["--amp", "bf16"],
    "cl": ["--channels_last"],
    "bf16+cl": ["--amp", "bf16", "--channels_last"],
    "compile": ["--compile"],
    "cl+compile": ["--channels_last", "--compile"],
    "bf16+cl+compile": ["--amp", "bf16", "--channels_last", "--compile"],
}


def default_modes(with_compile, native_bf16):
    """The modes worth timing here: bf16 ones only where bf16 is native (CUDA, AVX512-BF16/AMX CPUs)."""
    modes = ["fp32", "bf16", "cl", "bf16+cl"] if native_bf16 else ["fp32", "cl"]
    if with_compile:
        modes += ["compile", "bf16+cl+compile"] if native_bf16 else ["compile", "cl+compile"]
    return ",".join(modes)


# Small but paper-shaped defaults per model; the size-dependent generator is picked for pix2pix.
MODEL_FLAGS = {
    "pix2pix": lambda size: ["--netG", "unet_256" if size >= 256 else "unet_128" if size >= 128 else "unet"],
    "atme": lambda size: [],
    "segan": lambda size: [],
}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def rss_parts_mb():
    """Anonymous and file-backed resident memory (MB): memory-mapped pool pages count as file-backed."""
    parts = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1]) / 1024
    return parts.get("RssAnon", float("nan")), parts.get("RssFile", float("nan"))


class PeakRss:
    """Samples the resident set in a thread; `.peak` is the highest value seen while active."""

    def __init__(self, interval=0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def build_model(name, size, batch_size, mode_flags, checkpoints_dir, extra=()):
    """A training model of `name` as train.py builds it, on a synthetic data set of `batch_size` images."""
    args = ["--model", name, "--name", "bench", "--checkpoints_dir", checkpoints_dir, "--dataroot", checkpoints_dir,
            "--load_size", str(size), "--crop_size", str(size), "--batch_size", str(batch_size), "--seed", "0",
            "--display_id", "0", "--no_html", "--num_threads", "0", *MODEL_FLAGS[name](size), *mode_flags, *extra]
    opt = TrainOptions().parse(args)
    opt.dataset_size = batch_size  # the ATME pool needs one map per image; no files are read
    torch.manual_seed(0)
    model = create_model(opt)
    model.setup(opt)
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
    with PeakRss() as mem:
        model, opt = build_model(name, args.size, args.batch_size, MODE_FLAGS[mode], checkpoints_dir,
                                 shlex.split(args.extra))
        device = model.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
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


def selected_modes(args):
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODE_FLAGS:
            raise ValueError(f"--modes: unknown mode {mode!r}; choose from {', '.join(MODE_FLAGS)}")
    return modes


def bench_models(args):
    rows = []
    for mode in selected_modes(args):
        with tempfile.TemporaryDirectory() as tmp:
            log.info("%s %dx%d batch %d: mode %s", args.model, args.size, args.size, args.batch_size, mode)
            rows.append(bench_mode(args.model, mode, args, tmp))
            log.info("  train %.3f img/s, inference %.3f img/s", rows[-1]["train_img_s"], rows[-1]["infer_img_s"])
    base = next((r for r in rows if r["mode"] == "fp32"), rows[0])
    for r in rows:
        r["train_speedup"] = r["train_img_s"] / base["train_img_s"]
        r["infer_speedup"] = r["infer_img_s"] / base["infer_img_s"]
    return rows


def model_table(rows):
    lines = ["| mode | train img/s | x fp32 | infer img/s | x fp32 | peak mem MB | compile s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        compile_s = "" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        lines.append(f"| {r['mode']} | {r['train_img_s']:.3f} | {r['train_speedup']:.2f} | {r['infer_img_s']:.3f} | "
                     f"{r['infer_speedup']:.2f} | {r['peak_mem_mb']:.0f} | {compile_s} |")
    return "\n".join(lines)


def run_training(args, mode, run_root):
    """train.py on `args.dataroot` in `mode`, as a subprocess; returns its run directory."""
    val = os.path.isdir(os.path.join(args.dataroot, "val"))
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--model", args.model, "--dataroot", args.dataroot,
           "--name", mode, "--checkpoints_dir", run_root, "--seed", "0", "--gpu_ids", args.gpu_ids,
           "--load_size", str(args.size), "--crop_size", str(args.size), "--batch_size", str(args.batch_size),
           "--n_epochs", str(args.epochs), "--n_epochs_decay", "0", "--num_threads", str(args.num_threads),
           "--display_id", "0", "--no_html", "--print_freq", str(args.batch_size * args.print_steps),
           "--save_latest_freq", str(10 ** 9), "--save_epoch_freq", str(10 ** 6),
           *(["--val_freq", str(args.epochs)] if val else []),
           *MODEL_FLAGS[args.model](args.size), *MODE_FLAGS[mode], *shlex.split(args.extra)]
    log_path = os.path.join(run_root, f"{mode}.out")
    with open(log_path, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        with open(log_path) as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"train.py failed in mode {mode} (exit {done.returncode}):\n{tail}")
    return os.path.join(run_root, mode)


def loop_row(mode, run_dir):
    """Throughput, data-wait share and final losses of one train.py run from its CSV logs."""
    rows = CsvLog(os.path.join(run_dir, "loss_log.csv")).rows()
    if not rows:
        raise RuntimeError(f"{run_dir}/loss_log.csv is empty: train longer (--epochs) or lower --print_steps")
    # The first interval holds start-up (worker launch, compilation): steady state is the rest.
    steady = rows[1:] or rows
    per_image = statistics.mean(float(r["time_per_image"]) for r in steady)
    data = statistics.mean(float(r["data_time"]) for r in steady)
    last = rows[-max(1, len(rows) // 4):]
    l1 = statistics.mean(float(r["G_L1"]) for r in last) if "G_L1" in rows[0] else None
    val = CsvLog(os.path.join(run_dir, "val_log.csv")).rows()
    return {"mode": mode, "loop_img_s": 1 / per_image, "data_wait_share": data / per_image,
            "final_train_L1": l1, "val_L1": float(val[-1]["l1"]) if val else None, "log_rows": len(rows)}


def bench_loop(args):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in selected_modes(args):
            log.info("%s on %s, %d epochs: mode %s", args.model, args.dataroot, args.epochs, mode)
            rows.append(loop_row(mode, run_training(args, mode, tmp)))
            log.info("  %.2f img/s, data wait %.1f%%", rows[-1]["loop_img_s"], 100 * rows[-1]["data_wait_share"])
    base = next((r for r in rows if r["mode"] == "fp32"), rows[0])
    for r in rows:
        r["loop_speedup"] = r["loop_img_s"] / base["loop_img_s"]
        for key in ("final_train_L1", "val_L1"):
            ok = r[key] is not None and base[key]
            r[key + "_vs_fp32"] = r[key] / base[key] - 1 if ok else None
    return rows


def loop_table(rows):
    def pct(value):
        return "" if value is None else f"{100 * value:+.1f}%"

    def num(value):
        return "" if value is None else f"{value:.4f}"

    lines = ["| mode | loop img/s | x fp32 | data wait | final G_L1 loss | vs fp32 | val L1 | vs fp32 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['loop_img_s']:.2f} | {r['loop_speedup']:.2f} | "
                     f"{100 * r['data_wait_share']:.1f}% | {num(r['final_train_L1'])} | "
                     f"{pct(r['final_train_L1_vs_fp32'])} | {num(r['val_L1'])} | {pct(r['val_L1_vs_fp32'])} |")
    return "\n".join(lines)


def bench_pool(args):
    """DiscPool read+write time per batch and the process RSS, for pools of each size in `--pool_sizes`."""
    from util.disc_pool import DiscPool
    rows = []
    side = args.pool_map
    rng = np.random.default_rng(0)
    for count in (int(float(s)) for s in args.pool_sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            rss_before = rss_bytes()
            start = time.perf_counter()
            pool = DiscPool.create(os.path.join(tmp, "disc_pool.npy"), count, (side, side))
            create_s = time.perf_counter() - start
            maps = torch.rand(args.batch_size, 1, side, side)
            times = []
            for _ in range(args.pool_batches):
                idx = rng.choice(count, size=min(args.batch_size, count), replace=False)
                start = time.perf_counter()
                pool.read(idx)
                pool.write_deferred(idx, maps[:len(idx)])  # as the trainer does; the next read stores it
                times.append(time.perf_counter() - start)
            anon_mb, file_mb = rss_parts_mb()
            rows.append({"images": count, "rss_anon_mb": anon_mb, "rss_file_mb": file_mb, "map": f"{side}x{side}",
                         "file_mb": os.path.getsize(pool.path) / 2 ** 20, "create_s": create_s,
                         "read_write_ms_median": 1e3 * statistics.median(times),
                         "rss_mb": rss_bytes() / 2 ** 20, "rss_growth_mb": (rss_bytes() - rss_before) / 2 ** 20})
            pool.close()
            del pool
    return rows


def pool_table(rows):
    lines = ["| images | map | file MB | create s | read+write ms/batch | RSS MB | RSS growth MB | anon / file MB |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['images']} | {r['map']} | {r['file_mb']:.0f} | {r['create_s']:.1f} | "
                     f"{r['read_write_ms_median']:.3f} | {r['rss_mb']:.0f} | {r['rss_growth_mb']:.0f} | "
                     f"{r['rss_anon_mb']:.0f} / {r['rss_file_mb']:.0f} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="atme", choices=sorted(MODEL_FLAGS))
    p.add_argument("--size", type=int, default=256, help="square image side")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--modes", default=None,
                   help=f"comma-separated, from {', '.join(MODE_FLAGS)} (default: fp32,bf16,cl,bf16+cl where bf16 "
                        f"is native, on CUDA or AVX512-BF16/AMX CPUs; fp32,cl elsewhere)")
    p.add_argument("--compile", action="store_true",
                   help="with the default modes, add compile and bf16+cl+compile (cl+compile without native bf16)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per mode (the median is reported)")
    p.add_argument("--extra", default="", help="more train.py flags for the model, e.g. '--ngf 32'")
    p.add_argument("--dataroot", default=None,
                   help="train with train.py on this data instead (data wait share, final L1 against fp32)")
    p.add_argument("--epochs", type=int, default=2, help="with --dataroot: epochs per mode")
    p.add_argument("--num_threads", type=int, default=2, help="with --dataroot: data-loading workers")
    p.add_argument("--print_steps", type=int, default=5, help="with --dataroot: steps per loss_log.csv row")
    p.add_argument("--gpu_ids", default="0", help="with --dataroot: train.py's --gpu_ids (-1 forces the CPU)")
    p.add_argument("--pool", action="store_true", help="benchmark util/disc_pool.DiscPool instead of a model")
    p.add_argument("--pool_sizes", default="1000,1000000", help="pool sizes (images), comma-separated")
    p.add_argument("--pool_map", type=int, default=30, help="side of a pool map (30 for 256x256 basic PatchGAN)")
    p.add_argument("--pool_batches", type=int, default=200, help="timed read+write batches per pool size")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.modes is None:
        native = torch.cuda.is_available() or cpu_has_native_bf16()
        args.modes = default_modes(args.compile, native)
    elif args.compile:
        p.error("--compile adds to the default modes; with --modes, name the compile modes there")
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be at least 1 and --warmup at least 0")
    if "compile" in args.modes and args.warmup < 1:
        p.error("the compile modes need --warmup 1 or more: the first step compiles")
    if args.dataroot is not None:
        if not os.path.isdir(args.dataroot):
            p.error(f"--dataroot {args.dataroot} is not a directory (make the demo set with "
                    f"`python datasets/make_demo_dataset.py --out datasets/demo`)")
        args.dataroot = os.path.abspath(args.dataroot)  # train.py runs from the repository root
    if args.epochs < 1 or args.print_steps < 1:
        p.error("--epochs and --print_steps must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("models").setLevel(logging.WARNING)
    logging.getLogger("util").setLevel(logging.WARNING)
    info = hardware_info()
    log.info("%s (%s, native bf16: %s), %d threads, torch %s, CUDA: %s", info["cpu"], info["cpu_capability"],
             "yes" if info["cpu_native_bf16"] else "no", info["threads"], info["torch"], info["cuda"] or "none")
    if args.pool:
        rows = bench_pool(args)
        table = pool_table(rows)
        result = {"kind": "pool", "batch_size": args.batch_size, **info, "rows": rows}
    elif args.dataroot:
        rows = bench_loop(args)
        table = loop_table(rows)
        result = {"kind": "loop", "model": args.model, "dataroot": args.dataroot, "size": args.size,
                  "batch_size": args.batch_size, "epochs": args.epochs, **info, "rows": rows}
    else:
        rows = bench_models(args)
        table = model_table(rows)
        result = {"kind": "model", "model": args.model, "size": args.size, "batch_size": args.batch_size,
                  "warmup": args.warmup, "repeats": args.repeats, **info, "rows": rows}
        for kind in ("train", "infer"):
            best = max(rows, key=lambda r: r[f"{kind}_img_s"])
            result[f"fastest_{kind}"] = best["mode"]
            table += f"\nfastest {kind} mode here: {best['mode']} ({best[f'{kind}_speedup']:.2f}x fp32 eager)"
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        log.info("wrote %s", args.out)
    return result


if __name__ == "__main__":
    main()
