"""Make the authors' released ATME checkpoints loadable by `--model atme`.

The release names the W network `T`; this checks G and T against the reference layout and writes
`<epoch>_net_W.pth` next to them (or into --out_dir). Existing files are kept unless --force is given.

    python -m scripts.tools.convert_atme_checkpoint --run_dir checkpoints/facades_atme_release [--epoch latest]
"""
import argparse
import logging
import os
import sys

if not __package__:  # run as `python scripts/tools/convert_atme_checkpoint.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from models.atme.release import convert_release


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run_dir", required=True, help="folder holding <epoch>_net_G.pth and <epoch>_net_T.pth")
    parser.add_argument("--epoch", default="latest", help="which checkpoints: latest or an epoch number")
    parser.add_argument("--out_dir", default=None, help="where to write (default: --run_dir)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing <epoch>_net_W.pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    written = convert_release(args.run_dir, args.epoch, out_dir=args.out_dir, force=args.force)
    for name, path in written.items():
        logging.info("%s: %s", name, path)
    logging.info("load with: python test.py --model atme --checkpoints_dir <parent> --name <run> --epoch %s",
                 args.epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
