"""Adam's step on a model's networks: the foreach kernel against the fused one, interleaved in one process.

    python -m scripts.bench.optimizer --model atme --rounds 7

Each kernel steps the same parameters (random gradients of the scale 1e-3) once untimed, then the two take
turns; the table gives each one's median seconds per step and the ratio. The optimiser step does not depend
on the image size, only on the parameter count, so the networks are built at the model's defaults.
"""
import argparse
import shlex
import statistics
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a file: python scripts/bench/optimizer.py
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch

from scripts.bench.common import MODEL_FLAGS, report, start
from scripts.bench.models import build_model

KERNELS = ("foreach", "fused")


def time_kernels(params, rounds):
    """Median seconds per Adam step of each kernel over `rounds` interleaved steps (the order alternates)."""
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizers = {k: torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999), **{k: True}) for k in KERNELS}
    for optimizer in optimizers.values():
        optimizer.step()
    times = {k: [] for k in KERNELS}
    for r in range(rounds):
        for kernel in KERNELS if r % 2 == 0 else KERNELS[::-1]:
            begin = time.perf_counter()
            optimizers[kernel].step()
            times[kernel].append(time.perf_counter() - begin)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("--model", default="atme", choices=sorted(MODEL_FLAGS))
    p.add_argument("--rounds", type=int, default=7, help="timed steps per kernel")
    p.add_argument("--extra", default="", help="more train.py flags for the model, e.g. '--dim 16'")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    info = start()
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = build_model(args.model, 256, 1, [], tmp, shlex.split(args.extra))
    nets = {name: list(getattr(model, "net" + name).parameters()) for name in model.model_names}
    params = [p for group in nets.values() for p in group]
    medians = time_kernels(params, args.rounds)
    counts = {name: sum(p.numel() for p in group) for name, group in nets.items()}
    result = {"kind": "optimizer", "model": args.model, **info, "parameters": counts, "rounds": args.rounds,
              "s_per_step": medians, "fused_speedup": medians["foreach"] / medians["fused"]}
    table = "\n".join([
        f"{args.model}: {sum(counts.values()) / 1e6:.2f} M parameters "
        f"({', '.join(f'{n} {c / 1e6:.2f} M' for n, c in counts.items())}), median of {args.rounds} interleaved steps",
        "", "| Adam kernel | s per step |", "| --- | ---: |",
        *(f"| {k} | {medians[k]:.4f} |" for k in KERNELS),
        "", f"fused: {result['fused_speedup']:.2f}x the foreach kernel's speed"])
    report(result, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
