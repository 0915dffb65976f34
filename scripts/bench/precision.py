"""How far a speed mode's generator output is from fp32's on one fixed batch (same seed, same weights).

    python -m scripts.bench.precision --model atme --size 256 --batch_size 2 --mode bf16

Reports the relative L2 error and the largest absolute difference of `fake_B` (one forward pass in training mode,
as the training step computes it) against fp32.
"""
import argparse
import os
import sys
import tempfile

import torch

if not __package__:  # run as `python scripts/bench/precision.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scripts.bench.common import MODE_FLAGS, MODEL_FLAGS, report, start
from scripts.bench.models import build_model, synthetic_batch


def generator_output(model_name, size, batch_size, mode):
    with tempfile.TemporaryDirectory() as tmp:
        model, opt = build_model(model_name, size, batch_size, MODE_FLAGS[mode], tmp)
        model.train()
        model.set_input(synthetic_batch(model, opt, batch_size, size))
        with torch.no_grad(), model.autocast():
            model.forward()
        return model.fake_B.float().cpu()


def main(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="atme", choices=sorted(MODEL_FLAGS))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--mode", default="bf16", choices=sorted(MODE_FLAGS))
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    info = start()
    ref = generator_output(args.model, args.size, args.batch_size, "fp32")
    out = generator_output(args.model, args.size, args.batch_size, args.mode)
    rel = ((out - ref).norm() / ref.norm()).item()
    max_abs = (out - ref).abs().max().item()
    result = {"kind": "precision", "model": args.model, "size": args.size, "batch_size": args.batch_size,
              "mode": args.mode, **info, "relative_l2_error": rel, "max_abs_error": max_abs}
    table = (f"{args.model} {args.size}x{args.size}, batch {args.batch_size}, seed 0: fake_B in {args.mode} against "
             f"fp32: relative L2 error {rel:.3g}, largest absolute difference {max_abs:.3g} (outputs in [-1, 1])")
    return report(result, table, args.out)


if __name__ == "__main__":
    main()
