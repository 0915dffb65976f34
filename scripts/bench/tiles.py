"""Peak resident memory of test-time inference, whole image against tiles (test.py --tile).

    python -m scripts.bench.tiles --sizes 256x256,2048x1536 --tile 256 --tile_overlap 64
    python -m scripts.bench.tiles --sizes 4096x3072 --tiled_only

Each measurement runs in a child process of its own (its peak RSS from getrusage is then that run's alone): a
pix2pix ResNet generator (--ngf 32, 2 blocks, random weights) over a random image of WIDTHxHEIGHT, once whole
(--tile 0) and once in tiles. Prints one line per run: size, tile, peak MiB, seconds.
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(height, width, tile, overlap, ngf, n_blocks):
    import resource
    import time

    import torch

    from models import inference
    from models.networks.generators import ResnetGenerator, generator_size_rule
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = ResnetGenerator(3, 3, ngf=ngf, n_blocks=n_blocks).eval()
    rule = inference.SizeRule(*generator_size_rule(net))
    x = torch.rand(1, 3, height, width) * 2 - 1
    start = time.perf_counter()
    with torch.no_grad():
        y = inference.run(lambda batch: {"fake_B": net(batch)}, x, rule, tile=tile, overlap=overlap)["fake_B"]
    seconds = time.perf_counter() - start
    if y.shape != (1, 3, height, width) or not bool(torch.isfinite(y).all()):
        raise RuntimeError(f"the output has shape {tuple(y.shape)} or non-finite values")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, f"{seconds:.1f}")


def measure(height, width, tile, overlap=64, ngf=32, n_blocks=2):
    """(peak resident bytes, seconds) of one run in a fresh child process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-m", "scripts.bench.tiles", "--child", f"{width}x{height}",
                           "--tile", str(tile), "--tile_overlap", str(overlap), "--ngf", str(ngf),
                           "--n_blocks", str(n_blocks)], capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{proc.stderr[-3000:]}")
    peak, seconds = proc.stdout.split()[-2:]
    return int(peak), float(seconds)


def parse_size(text):
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT, e.g. 2048x1536; got {text!r}")
    return int(width), int(height)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256x256,2048x1536", help="comma-separated WIDTHxHEIGHT")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--tile_overlap", type=int, default=64)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--n_blocks", type=int, default=2)
    parser.add_argument("--tiled_only", action="store_true", help="skip the whole-image runs (they need the most memory)")
    parser.add_argument("--child", type=parse_size, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        width, height = args.child
        child(height, width, args.tile, args.tile_overlap, args.ngf, args.n_blocks)
        return 0
    for text in args.sizes.split(","):
        width, height = parse_size(text)
        tiles = (0, args.tile) if max(width, height) > args.tile else (0,)
        for tile in tiles[1:] if args.tiled_only and len(tiles) > 1 else tiles:
            peak, seconds = measure(height, width, tile, args.tile_overlap, args.ngf, args.n_blocks)
            print(f"{width}x{height} tile {tile or 'none':>4}: peak {peak / 2 ** 20:.0f} MiB, {seconds:.1f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
