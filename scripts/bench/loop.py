"""Each speed mode trains with train.py itself (a subprocess, same seed, real data and loader workers) for
`--epochs` epochs; its loss_log.csv gives the loop's images/s, the share of the step spent waiting for data,
and the final L1 loss (and val L1, when the data has a val split) against fp32's.

    python -m scripts.bench.loop --model atme --dataroot datasets/demo --size 64 --epochs 2 --modes fp32,cl
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

if not __package__:  # run as `python scripts/bench/loop.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from scripts.bench.common import (MODE_FLAGS, MODEL_FLAGS, ROOT, add_mode_args, log, reference_row, report,
                                  resolve_modes, selected_modes, start)
from util.run.run_logs import CsvLog


def training_command(args, mode, run_root):
    """The train.py command of one mode. Without --gpu_ids, train.py picks the device (a GPU when there is one)."""
    val = os.path.isdir(os.path.join(args.dataroot, "val"))
    return [sys.executable, os.path.join(ROOT, "train.py"), "--model", args.model, "--dataroot", args.dataroot,
           "--name", mode, "--checkpoints_dir", run_root, "--seed", "0",
           *([] if args.gpu_ids is None else ["--gpu_ids", args.gpu_ids]),
           "--load_size", str(args.size), "--crop_size", str(args.size), "--batch_size", str(args.batch_size),
           "--n_epochs", str(args.epochs), "--n_epochs_decay", "0", "--num_threads", str(args.num_threads),
           "--display_id", "0", "--no_html", "--print_freq", str(args.batch_size * args.print_steps),
           "--save_latest_freq", str(10 ** 9), "--save_epoch_freq", str(10 ** 6),
           *(["--val_freq", str(args.epochs)] if val else []),
           *MODEL_FLAGS[args.model](args.size), *MODE_FLAGS[mode], *shlex.split(args.extra)]


def run_training(args, mode, run_root):
    """train.py on `args.dataroot` in `mode`, as a subprocess; returns its run directory."""
    cmd = training_command(args, mode, run_root)
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
    base = reference_row(rows)
    for r in rows:
        r["reference_mode"] = base["mode"]
        r["loop_speedup"] = r["loop_img_s"] / base["loop_img_s"]
        for key in ("final_train_L1", "val_L1"):
            ok = r[key] is not None and base[key]
            r[key + "_vs_reference"] = r[key] / base[key] - 1 if ok else None
    return rows


def loop_table(rows):
    def pct(value):
        return "" if value is None else f"{100 * value:+.1f}%"

    def num(value):
        return "" if value is None else f"{value:.4f}"

    ref = rows[0]["reference_mode"]
    lines = [f"| mode | loop img/s | x {ref} | data wait | final G_L1 loss | vs {ref} | val L1 | vs {ref} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['mode']} | {r['loop_img_s']:.2f} | {r['loop_speedup']:.2f} | "
                     f"{100 * r['data_wait_share']:.1f}% | {num(r['final_train_L1'])} | "
                     f"{pct(r['final_train_L1_vs_reference'])} | {num(r['val_L1'])} | "
                     f"{pct(r['val_L1_vs_reference'])} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    add_mode_args(p)
    p.add_argument("--dataroot", required=True, help="the data to train on (e.g. the demo set)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per mode")
    p.add_argument("--num_threads", type=int, default=2, help="data-loading workers")
    p.add_argument("--print_steps", type=int, default=5, help="steps per loss_log.csv row")
    p.add_argument("--gpu_ids", default=None,
                   help="train.py's --gpu_ids (-1 forces the CPU; default: train.py's, a GPU when there is one)")
    args = p.parse_args(argv)
    resolve_modes(p, args)
    if not os.path.isdir(args.dataroot):
        p.error(f"--dataroot {args.dataroot} is not a directory (make the demo set with "
                f"`python -m datasets.make_demo_dataset --out datasets/demo`)")
    args.dataroot = os.path.abspath(args.dataroot)  # train.py runs from the repository root
    if args.epochs < 1 or args.print_steps < 1:
        p.error("--epochs and --print_steps must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    info = start()
    rows = bench_loop(args)
    result = {"kind": "loop", "model": args.model, "dataroot": args.dataroot, "size": args.size,
              "batch_size": args.batch_size, "epochs": args.epochs, **info, "rows": rows}
    return report(result, loop_table(rows), args.out)


if __name__ == "__main__":
    main()
