"""What the three benchmarks share: the modes (train.py speed flags), the models' small paper-shaped settings,
resident-memory sampling, the hardware header and the JSON report.

    python -m scripts.bench.models --model atme --size 256 --batch_size 4      # step throughput and memory per mode
    python -m scripts.bench.loop --model atme --dataroot datasets/demo --size 64  # train.py on real data per mode
    python -m scripts.bench.pool --pool_sizes 1000,1000000                       # the ATME pool on disk

`python -m scripts.bench.side_by_side --baseline PATH` times this checkout against another commit of the
project (PATH, e.g. a `git worktree add ../baseline <commit>`): one worker process per checkout on the same data
and seed, rounds alternating which goes first, the baseline/current speed-up per round and the first-step losses.

Which mode is fastest depends on the hardware: bf16 pays off on CUDA and on CPUs with AVX512-BF16 or AMX,
and is from several to tens of times slower than fp32 on CPUs without them (every report names the CPU and
whether it has native bf16).
"""
import logging
import os
import threading
import time

import torch

from util.run.atomic import write_json
from util.process.devices import cpu_has_native_bf16, hardware_info

log = logging.getLogger("benchmark")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # where train.py is

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

# Small but paper-shaped defaults per model; the size-dependent generator is picked for pix2pix.
MODEL_FLAGS = {
    "pix2pix": lambda size: ["--netG", "unet_256" if size >= 256 else "unet_128" if size >= 128 else "unet"],
    "atme": lambda size: [],
    "segan": lambda size: [],
}


def reference_row(rows):
    """The row the ratios are taken against: fp32 eager when it was run, else the first mode run. Every table
    names it, so a run without fp32 does not print ratios labelled as fp32's."""
    return next((r for r in rows if r["mode"] == "fp32"), rows[0])


def train_flags(name, size, batch_size, checkpoints_dir, dataroot, mode_flags=(), extra=()):
    """train.py's flags for benchmarking model `name`: a run `bench` in `checkpoints_dir`, square `size` images,
    seed 0, no dashboard, data loaded in the calling process; then the model's defaults, the mode's and `extra`."""
    return ["--model", name, "--name", "bench", "--checkpoints_dir", checkpoints_dir, "--dataroot", dataroot,
            "--load_size", str(size), "--crop_size", str(size), "--batch_size", str(batch_size), "--seed", "0",
            "--display_id", "0", "--no_html", "--num_threads", "0", *MODEL_FLAGS[name](size), *mode_flags, *extra]


def default_modes(with_compile, native_bf16):
    """The modes worth timing here: bf16 ones only where bf16 is native (CUDA, AVX512-BF16/AMX CPUs)."""
    modes = ["fp32", "bf16", "cl", "bf16+cl"] if native_bf16 else ["fp32", "cl"]
    if with_compile:
        modes += ["compile", "bf16+cl+compile"] if native_bf16 else ["compile", "cl+compile"]
    return ",".join(modes)

def selected_modes(args):
    modes = args.modes.split(",")
    for mode in modes:
        if mode not in MODE_FLAGS:
            raise ValueError(f"--modes: unknown mode {mode!r}; choose from {', '.join(MODE_FLAGS)}")
    return modes

def add_mode_args(parser):
    """--model, --size, --batch_size, --modes, --compile and --extra, shared by the model and loop benchmarks."""
    parser.add_argument("--model", default="atme", choices=sorted(MODEL_FLAGS))
    parser.add_argument("--size", type=int, default=256, help="square image side")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--modes", default=None,
                        help=f"comma-separated, from {', '.join(MODE_FLAGS)} (default: fp32,bf16,cl,bf16+cl where "
                             f"bf16 is native, on CUDA or AVX512-BF16/AMX CPUs; fp32,cl elsewhere)")
    parser.add_argument("--compile", action="store_true",
                        help="with the default modes, add compile and bf16+cl+compile (cl+compile without native bf16)")
    parser.add_argument("--extra", default="", help="more train.py flags for the model, e.g. '--ngf 32'")
    parser.add_argument("--out", default=None, help="write the results as JSON here")


def resolve_modes(parser, args):
    """Fill in the default modes for this hardware; refuse --compile next to an explicit --modes."""
    if args.modes is None:
        native = torch.cuda.is_available() or cpu_has_native_bf16()
        args.modes = default_modes(args.compile, native)
    elif args.compile:
        parser.error("--compile adds to the default modes; with --modes, name the compile modes there")
    selected_modes(args)


def start(quiet=("models", "util")):
    """Logging for a benchmark run, and the hardware header: returns hardware_info()."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
    info = hardware_info()
    log.info("%s, %d threads", hardware_line(info), info["threads"])
    return info


def hardware_line(info):
    """One line on what decides the speed flags' pay-off, from hardware_info(): the benchmarks' header."""
    def yes(flag):
        return "yes" if info.get(flag) else "no"
    cap = f", oneDNN capped at {info['onednn_isa_cap']}" if info.get("onednn_isa_cap") else ""
    return (f"{info['cpu']} ({info['cpu_capability']}, native bf16: {yes('cpu_native_bf16')}, AMX: {yes('cpu_amx')}"
            f"{cap}), torch {info['torch']}, CUDA: {info['cuda'] or 'none'}")


def report(result, table, out=None):
    """Print the table; write `result` (with the process's peak RSS) as JSON to `out`; return `result`."""
    import resource
    result["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(table)
    if out:
        write_json(out, result)
        log.info("wrote %s", out)
    return result


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
