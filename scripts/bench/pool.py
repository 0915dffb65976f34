"""The ATME discriminator pool at scale: creation time, read+write time per batch and the process's resident
memory (anonymous and file-backed), for pools of several sizes.

    python -m scripts.bench.pool --pool_sizes 1000,1000000 --out bench_pool.json
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

if not __package__:  # run as `python scripts/bench/pool.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models.atme.pool import DiscPool
from scripts.bench.common import report, rss_bytes, rss_parts_mb, start


def bench_pool(args):
    """DiscPool read+write time per batch and the process RSS, for pools of each size in `--pool_sizes`."""
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
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--batch_size", type=int, default=4, help="maps read and written per batch")
    p.add_argument("--pool_sizes", default="1000,1000000", help="pool sizes (images), comma-separated")
    p.add_argument("--pool_map", type=int, default=30, help="side of a pool map (30 for 256x256 basic PatchGAN)")
    p.add_argument("--pool_batches", type=int, default=200, help="timed read+write batches per pool size")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    info = start()
    rows = bench_pool(args)
    return report({"kind": "pool", "batch_size": args.batch_size, **info, "rows": rows}, pool_table(rows), args.out)


if __name__ == "__main__":
    main()
