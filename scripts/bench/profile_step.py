"""Where a training step's CPU time goes: torch.profiler over whole steps, the ops ranked by self CPU time.

    python -m scripts.bench.profile_step --model atme --size 256 --batch_size 2 --steps 2 --top 10

Shares are the useful figure: they stay meaningful on a busy machine, where absolute times do not. Convolutions
(forward and backward) are summed apart, so the table says how much of the step is not convolution.
"""
import argparse
import contextlib
import os
import sys
import tempfile

if not __package__:  # run as `python scripts/bench/profile_step.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scripts.bench.common import MODE_FLAGS, MODEL_FLAGS, log, report, start
from scripts.bench.models import build_model, synthetic_batch
from scripts.bench.worker import profile_rows
from util.process import cpu_allocator

CONVOLUTION_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
                   "aten::convolution", "aten::conv2d", "aten::thnn_conv2d", "aten::_slow_conv2d_forward",
                   "aten::_slow_conv2d_backward", "aten::mkldnn_convolution_backward")


def shares(rows):
    """{op: share of the total self CPU time} and the convolutions' total share."""
    total = sum(s for _, s, _ in rows) or 1.0
    return {name: s / total for name, s, _ in rows}, sum(s for name, s, _ in rows if name in CONVOLUTION_OPS) / total


def op_table(rows, top, other_rows=None, labels=("share", "baseline's share")):
    """The `top` ops by self CPU time with their share (and the same op's share in `other_rows`, when given), and
    the convolutions' total share."""
    share, conv = shares(rows)
    other, other_conv = shares(other_rows) if other_rows is not None else ({}, None)
    extra = other_rows is not None
    lines = [f"| op | self CPU {labels[0]} | calls |" + (f" {labels[1]} |" if extra else ""),
             "| --- | ---: | ---: |" + (" ---: |" if extra else "")]
    for name, _, calls in rows[:top]:
        lines.append(f"| {name} | {100 * share[name]:.1f}% | {calls} |"
                     + (f" {100 * other.get(name, 0.0):.1f}% |" if extra else ""))
    lines.append(f"convolutions (forward and backward): {100 * conv:.1f}% of the step's self CPU time"
                 + (f" ({labels[1]}: {100 * other_conv:.1f}%)" if extra else ""))
    return "\n".join(lines), conv


def profile_model(model_name, size, batch_size, mode, steps, warmup, extra=()):
    """Profile `steps` training steps of a freshly built model (after `warmup` untimed ones), with the C library's
    allocator set as train.py sets it: without that, every large block is mapped afresh and the page faults land
    in whichever op first writes it (mostly forward ops), which the table would then blame."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as process_settings:
        model, opt = build_model(model_name, size, batch_size, MODE_FLAGS[mode], tmp, list(extra))
        process_settings.enter_context(cpu_allocator.applied(opt.cpu_allocator, model.device.type))
        batch = synthetic_batch(model, opt, batch_size, size)
        model.train()

        def step():
            model.set_input(batch)
            model.optimize_parameters()
        for _ in range(warmup):
            step()
        return profile_rows(step, steps)


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="atme", choices=sorted(MODEL_FLAGS))
    p.add_argument("--size", type=int, default=256, help="square image side")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--mode", default="fp32", choices=sorted(MODE_FLAGS))
    p.add_argument("--steps", type=int, default=1, help="profiled training steps")
    p.add_argument("--warmup", type=int, default=2,
                   help="untimed steps before the profiled ones (the process's heap grows over the first two)")
    p.add_argument("--top", type=int, default=10, help="ops listed")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.top < 1:
        p.error("--steps and --top must be at least 1 and --warmup at least 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    info = start()
    log.info("profiling %d step(s) of %s %dx%d batch %d %s", args.steps, args.model, args.size, args.size,
             args.batch_size, args.mode)
    rows = profile_model(args.model, args.size, args.batch_size, args.mode, args.steps, args.warmup)
    table, conv_share = op_table(rows, args.top)
    result = {"kind": "profile", "model": args.model, "size": args.size, "batch_size": args.batch_size,
              "mode": args.mode, "steps": args.steps, **info, "conv_share": conv_share,
              "ops": [{"op": name, "self_cpu_s": s, "calls": n} for name, s, n in rows[:args.top]]}
    return report(result, table, args.out)


if __name__ == "__main__":
    main()
