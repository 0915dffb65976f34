"""Inference speed of the generator's test-time graph on each backend, interleaved in one process.

    python -m scripts.bench.backends --model pix2pix --size 256 --batch_sizes 1,8 --rounds 5
    python -m scripts.bench.backends --model atme --size 256 --batch_sizes 1 --profile bench_profile/

A run folder with the model's initial weights is made in a temporary directory and exported with
`scripts.tools.export` (the parity check included), so every backend runs the file a user would get. Backends:
each of util.export.backends at each of its precisions, named `<backend>_<precision>`: torch eager fp32
(`torch_fp32`), torch bf16 autocast + channels_last (`torch_bf16`, its --amp), ONNX Runtime fp32
(`onnxruntime_fp32`), OpenVINO fp32 (`openvino_fp32`) and bf16 (`openvino_bf16`); the bf16 ones only on CPUs with
native bf16. Every backend gets the same threads
(torch's, i.e. OMP_NUM_THREADS). After one warm-up call each, every round times one call of each backend, the
order rotating from round to round; the table gives seconds per image (median over rounds), the speed-up over
torch fp32 as the median (min..max) of the per-round ratios, which a shared machine disturbs least, and the
largest absolute difference of each backend's outputs to torch fp32's.

`--profile DIR` also writes ONNX Runtime's per-node profile and OpenVINO's per-layer counters there, and prints
the time per operator type of each: where a runtime spends its time on this graph.
"""
import argparse
import collections
import copy
import json
import os
import sys
import statistics
import tempfile
import time

import torch

if not __package__:  # run as `python scripts/bench/backends.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models import create_model
from options.test_options import TestOptions
from options.train_options import TrainOptions
from scripts.bench.common import log, report, start, train_flags
from scripts.bench.models import synthetic_batch
from util.process.devices import cpu_has_native_bf16
from util.export.backends import BACKENDS as BACKEND_LIST
from util.export.onnx_export import graph_paths
from util.export.runtimes import OnnxRuntimeRunner, OpenVinoRunner

# {name: (backend, precision, description)}: every backend of the one list at each precision it runs (torch's
# mixed precisions as autocast + channels_last).
VARIANTS = {f"{b.name}_{p}": (b.name, p, f"{b.description} {p}" + (" autocast + channels_last" if p in b.mixed else ""))
            for b in BACKEND_LIST.values() for p in b.precisions + tuple(m for m in b.mixed if m == "bf16")}
BACKENDS = tuple(VARIANTS)
REFERENCE = "torch_fp32"
DESCRIPTIONS = {name: description for name, (_, _, description) in VARIANTS.items()}


def exported_model(name, size, folder, extra=()):
    """(test-mode model, its GraphSpec, ONNX path): initial weights saved as a run in `folder`, then exported."""
    from scripts.tools import export as export_cli
    options = TrainOptions()
    opt = options.parse(train_flags(name, size, 1, folder, folder, ("--gpu_ids", "-1"), extra))
    options.save(opt)
    torch.manual_seed(0)
    opt.dataset_size = 1
    model = create_model(opt)
    model.setup(opt)
    calibrate_batch_norm(model, opt, size)
    model.save_networks("latest")
    export_cli.main(["--checkpoints_dir", folder, "--name", "bench"])
    test_opt = TestOptions().parse(["--checkpoints_dir", folder, "--name", "bench", "--gpu_ids", "-1"])
    model = create_model(test_opt)
    model.setup(test_opt)
    model.eval()
    return model, model.export_graph(), graph_paths(os.path.join(folder, "bench"), "latest")[0]


@torch.no_grad()
def calibrate_batch_norm(model, opt, size, batches=4):
    """Batch-norm running statistics from a few forward passes, as training leaves them. With the initial
    statistics (mean 0, variance 1) and N(0, 0.02) weights, eval-mode activations shrink layer by layer into
    denormal numbers, which the CPU computes many times slower: the timings would not be those of a trained model."""
    norms = [m for m in model.netG.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the calibration batches
    model.netG.train()
    for _ in range(batches):
        model.set_input(synthetic_batch(model, opt, 2, size))
        model.forward()


def torch_runner(module, bf16_channels_last=False):
    """{name: tensor} -> {output name: tensor} for the torch module, optionally in bf16 + channels_last."""
    if bf16_channels_last:
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)

    @torch.no_grad()
    def run(feeds):
        inputs = [v.contiguous(memory_format=torch.channels_last) if bf16_channels_last and v.dim() == 4 else v
                  for v in feeds.values()]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_channels_last):
            out = module(*inputs)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {f"out{i}": o.float() for i, o in enumerate(out)}
    return run


def make_runners(spec, path, backends, profile_dir=None):
    runners = {}
    for name in backends:
        backend, precision, _ = VARIANTS[name]
        if backend == "torch":
            runners[name] = torch_runner(spec.module, precision == "bf16")
        elif backend == "onnxruntime":
            prefix = os.path.join(profile_dir, "ort") if profile_dir else None
            # Without spinning: ORT's idle threads would otherwise busy-wait through the next backend's turn.
            runners[name] = OnnxRuntimeRunner(path, profile_prefix=prefix, spinning=False)
        else:
            config = {"PERF_COUNT": True} if profile_dir else None
            runners[name] = OpenVinoRunner(path, precision, config=config)
    return runners


def as_list(outputs):
    return [v.float() for v in outputs.values()]


def bench_batch(runners, feeds, rounds):
    """{backend: (times, max abs difference to torch fp32)} for one input batch."""
    reference = as_list(runners[REFERENCE](feeds)) if REFERENCE in runners else None
    differences = {}
    for backend, run in runners.items():  # the warm-up call (OpenVINO compiles for the shape here)
        outputs = as_list(run(feeds))
        if reference is not None:
            differences[backend] = max(float((o - r).abs().max()) for o, r in zip(outputs, reference))
    names = list(runners)
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for backend in order:
            begin = time.perf_counter()
            runners[backend](feeds)
            times[backend].append(time.perf_counter() - begin)
    return times, differences


def summarise(times, differences, batch):
    rows = {}
    base = times.get(REFERENCE)
    for backend, values in times.items():
        row = {"seconds_per_image": statistics.median(values) / batch, "times": values,
               "max_abs_difference": differences.get(backend)}
        if base:
            ratios = [b / v for b, v in zip(base, values)]
            row.update(speedup=statistics.median(ratios), speedup_min=min(ratios), speedup_max=max(ratios))
        rows[backend] = row
    return rows


def table(results, model, size):
    lines = [f"{model}, {size}x{size}: seconds per image (median of rounds), speed-up over torch eager fp32 "
             f"(median (min..max) of the per-round ratios), max |output - torch fp32|",
             "| backend | batch | s/img | x torch fp32 | max diff |", "| --- | ---: | ---: | ---: | ---: |"]
    for batch, rows in results.items():
        for backend, row in rows.items():
            speed = (f"{row['speedup']:.2f}x ({row['speedup_min']:.2f}..{row['speedup_max']:.2f})"
                     if "speedup" in row else "")
            diff = "" if row["max_abs_difference"] is None else f"{row['max_abs_difference']:.1e}"
            lines.append(f"| {DESCRIPTIONS[backend]} | {batch} | {row['seconds_per_image']:.4f} | {speed} | {diff} |")
    return "\n".join(lines)


def ort_profile(path, top):
    """[(op type, milliseconds, share)] from an ONNX Runtime profile JSON, largest first."""
    events = json.load(open(path))
    per_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000
    total = sum(per_op.values()) or 1
    return [(op, ms, ms / total) for op, ms in per_op.most_common(top)]


def ov_profile(runner, top):
    """[(layer type / kernel, milliseconds, share)] of OpenVINO's last inference, largest first."""
    per_op = collections.Counter()
    for info in runner.request.profiling_info:
        if info.status.name == "EXECUTED":
            per_op[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds() * 1000
    total = sum(per_op.values()) or 1
    return [(op, ms, ms / total) for op, ms in per_op.most_common(top)]


def print_profiles(runners, profile_dir, top=15):
    found = {}
    for name, runner in runners.items():
        backend = VARIANTS[name][0]
        if backend == "onnxruntime":
            found[name] = ort_profile(runner.end_profiling(), top)
        elif backend == "openvino":
            found[name] = ov_profile(runner, top)
    for backend, rows in found.items():
        print(f"\n{DESCRIPTIONS[backend]}: time per operator type (all profiled calls)")
        for op, ms, share in rows:
            print(f"  {op:<48} {ms:10.1f} ms  {100 * share:5.1f}%")
    with open(os.path.join(profile_dir, "per_op.json"), "w") as handle:
        json.dump(found, handle, indent=1)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pix2pix", choices=["pix2pix", "atme", "segan"], help="model family")
    parser.add_argument("--size", type=int, default=256, help="square image side")
    parser.add_argument("--batch_sizes", default="1,8", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per backend and batch size")
    parser.add_argument("--backends", default=None, help=f"comma-separated from {', '.join(BACKENDS)} (default: "
                                                         f"all; the bf16 ones only with native bf16)")
    parser.add_argument("--extra", default="", help="more train.py flags for the model, e.g. '--netG resnet_9blocks'")
    parser.add_argument("--profile", default=None, metavar="DIR", help="write and summarise per-operator profiles")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    backends = args.backends.split(",") if args.backends else [
        b for b in BACKENDS if cpu_has_native_bf16() or VARIANTS[b][1] != "bf16"]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        parser.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    batches = [int(b) for b in args.batch_sizes.split(",")]
    info = start(quiet=("models", "util", "options", "export", "scripts"))
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        model, spec, path = exported_model(args.model, args.size, folder, args.extra.split())
        runners = make_runners(spec, path, backends, args.profile)
        results = {}
        for batch in batches:
            feeds = spec.example_inputs(batch, args.size, args.size)
            log.info("batch %d: %d rounds of %s", batch, args.rounds, ", ".join(backends))
            results[batch] = summarise(*bench_batch(runners, feeds, args.rounds), batch)
        profiles = print_profiles(runners, args.profile) if args.profile else None
    result = {"hardware": info, "model": args.model, "size": args.size, "extra": args.extra, "rounds": args.rounds,
              "results": {str(b): rows for b, rows in results.items()}, "profiles": profiles}
    report(result, table(results, args.model, args.size), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
