"""How this checkout's training step scales with the work: seconds per image from batch to batch, and per pixel
from size to size. A step that does the same work per image should keep both flat; a rise shows a cost that
grows faster than the work (memory traffic, page faults, an op that is quadratic in the pixels).

Used by `scripts.bench.side_by_side` (`--scale_batches`, `--scale_sizes`, `--scale_batch`, `--scale_size`): each
configuration runs in a fresh worker process of this checkout (`--warmup` untimed steps, at least one, then the
timed ones) on the same kind of random aligned images, one after the other, so only one runs at a time.
"""
import os
import shlex
import statistics

from scripts.bench.common import MODE_FLAGS, train_flags

SEED = 0


def configurations(args):
    """[(size, batch)]: the batches at `--scale_size`, then the sizes at `--scale_batch`, without repeats."""
    configs = [(args.scale_size, b) for b in args.scale_batches] + [(s, args.scale_batch) for s in args.scale_sizes]
    return list(dict.fromkeys(configs))


def scaling_warmup(warmup):
    """Untimed steps before a scaling row's timed ones: `--warmup`, at least one (a fresh worker's first step pays
    for building its buffers)."""
    return max(warmup, 1)


def run_scaling(args, tmp, worker_class, write_images, root):
    """Rows {size, batch, s_per_img, us_per_pixel, max_rss_mb}, one per configuration, timed in a fresh worker."""
    rows = []
    for size, batch in configurations(args):
        folder = os.path.join(tmp, f"scale_{size}_{batch}")
        data = write_images(os.path.join(folder, "data"), batch, size)
        worker = worker_class("current", root, os.path.join(folder, "worker.log"))
        try:
            flags = train_flags(args.model, size, batch, os.path.join(folder, "checkpoints"), data,
                                [*MODE_FLAGS[args.mode], "--no_flip"], shlex.split(args.extra))
            worker.ask("init", flags=flags, seed=SEED)
            times = worker.ask("train", steps=args.steps, warmup=scaling_warmup(args.warmup))["times"]
        finally:
            worker.close()
        step = statistics.median(times)
        rows.append({"size": size, "batch": batch, "s_per_img": step / batch,
                     "us_per_pixel": step / (batch * size * size) * 1e6, "max_rss_mb": worker.max_rss_mb})
    return rows


def scaling_table(rows, args):
    """Two tables: seconds per image over the batches (at `--scale_size`), microseconds per pixel over the sizes
    (at `--scale_batch`), each with its ratio to the table's first row (flat scaling: 1.00 all the way)."""
    found = {(r["size"], r["batch"]): r for r in rows}
    lines = []
    for title, key, unit, picked in (
            (f"batch at {args.scale_size}x{args.scale_size}", "s_per_img", "s/img",
             [found[(args.scale_size, b)] for b in args.scale_batches]),
            (f"size at batch {args.scale_batch}", "us_per_pixel", "us/pixel/img",
             [found[(s, args.scale_batch)] for s in args.scale_sizes])):
        if not picked:
            continue
        lines += ["", f"| {title} | {unit} | x first | peak RSS GB |", "| --- | ---: | ---: | ---: |"]
        for r in picked:
            label = f"batch {r['batch']}" if key == "s_per_img" else f"{r['size']}x{r['size']}"
            lines.append(f"| {label} | {r[key]:.4g} | {r[key] / picked[0][key]:.2f} | {r['max_rss_mb'] / 1024:.2f} |")
    return "\n".join(lines)


def int_list(text):
    """'1,2,4' -> [1, 2, 4]; '' -> [] (no rows of that kind)."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if any(v < 1 for v in values):
        raise ValueError(f"every entry must be a positive integer, got {text!r}")
    return values
