"""KID (x100, mean +- std over subsets) between real and generated images, as in the ATME paper's Table 2.

    python -m scripts.eval.compute_kid --results_dir results/facades_atme_BtoA/test_latest
    python -m scripts.eval.compute_kid --dir1 path/to/real --dir2 path/to/fake --out kid.json

With --results_dir the real and fake images are told apart by their suffix (`<stem>_real_B.png`,
`<stem>_fake_B.png`, as test.py writes them); no file is moved. The result goes to `kid.json` beside the images.
"""
import argparse
import json
import logging
import os
import sys

if not __package__:  # run as `python scripts/eval/compute_kid.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from util.run.atomic import write_json
from scripts.eval.kid import DEFAULT_SEED, DEFAULT_SUBSET_SIZE, DEFAULT_SUBSETS, INCEPTION_EXTRACTOR, compute_kid
from util.run.result_files import result_image_sets

log = logging.getLogger("compute_kid")


def build_parser():
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("inputs (either --results_dir or --dir1 and --dir2)")
    src.add_argument("--results_dir", help="a test.py result folder, e.g. results/<name>/test_latest")
    src.add_argument("--real_label", default="real_B", help="suffix of the real images in --results_dir")
    src.add_argument("--fake_label", default="fake_B", help="suffix of the generated images in --results_dir")
    src.add_argument("--dir1", help="folder of real images")
    src.add_argument("--dir2", help="folder of generated images")
    kid = p.add_argument_group("metric")
    kid.add_argument("--kid_subset_size", type=int, default=DEFAULT_SUBSET_SIZE,
                     help="images per KID subset (the paper's setting is 50)")
    kid.add_argument("--kid_subsets", type=int, default=DEFAULT_SUBSETS, help="number of KID subsets")
    kid.add_argument("--fid", action="store_true", help="also compute FID")
    kid.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the subset sampling")
    kid.add_argument("--feature_extractor", default=INCEPTION_EXTRACTOR,
                     help="a torch-fidelity feature extractor name")
    kid.add_argument("--inception_weights", default=None,
                     help="local copy of the feature extractor's weights (torch-fidelity's Inception-v3 by default; "
                          "for machines without internet)")
    kid.add_argument("--feature_extractor_torchscript", action="store_true",
                     help="allow a CLIP --inception_weights file that is not the published one: CLIP's weights are "
                          "TorchScript, and loading one RUNS THE FILE'S CODE, so pass it only for a file whose "
                          "author you trust")
    run = p.add_argument_group("run")
    run.add_argument("--batch_size", type=int, default=64, help="images per feature-extraction batch")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument("--num_workers", type=int, default=None,
                     help="0 reads images in the main process (default: torch-fidelity's choice)")
    run.add_argument("--out", default=None,
                     help="JSON output (default: kid.json in --results_dir, or in --dir2)")
    run.add_argument("--checkpoints_dir", default="./checkpoints",
                     help="where to look for the run's stored options (model, direction, dataset) to record")
    run.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                     help="extra fields for the JSON (e.g. --tag dataset=facades); repeatable")
    run.add_argument("--quiet", action="store_true", help="no torch-fidelity progress output")
    run.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    return p


def parse_tags(tags):
    fields = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag {tag!r} must look like KEY=VALUE, e.g. --tag dataset=facades")
        fields[key] = value
    return fields


def run_metadata(results_dir, checkpoints_dir):
    """Name, phase/epoch and (when the run's stored options are found) model, direction and dataset."""
    results_dir = os.path.abspath(results_dir)
    name = os.path.basename(os.path.dirname(results_dir))
    meta = dict(name=name, split=os.path.basename(results_dir))
    for fname in ("test_opt.json", "train_opt.json"):
        path = os.path.join(checkpoints_dir, name, fname)
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            log.warning("ignoring unreadable %s (%s)", path, err)
            continue
        for key in ("model", "direction"):
            if stored.get(key):
                meta[key] = stored[key]
        if stored.get("dataroot"):
            meta["dataset"] = os.path.basename(os.path.normpath(stored["dataroot"]))
        break
    return meta


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tags = parse_tags(args.tag)
    if args.results_dir:
        if args.dir1 or args.dir2:
            raise ValueError("give either --results_dir or --dir1/--dir2, not both")
        if not os.path.isdir(args.results_dir):
            raise FileNotFoundError(f"--results_dir {args.results_dir} does not exist: run test.py first "
                                    "(results go to <results_dir>/<name>/<phase>_<epoch>/)")
        real, fake = result_image_sets(args.results_dir, args.real_label, args.fake_label)
        out = args.out or os.path.join(args.results_dir, "kid.json")
        meta = run_metadata(args.results_dir, args.checkpoints_dir)
        meta.update(results_dir=args.results_dir, real_label=args.real_label, fake_label=args.fake_label)
    elif args.dir1 and args.dir2:
        real, fake = args.dir1, args.dir2
        out = args.out or os.path.join(args.dir2, "kid.json")
        meta = dict(dir1=args.dir1, dir2=args.dir2)
    else:
        raise ValueError("give --results_dir (a test.py result folder) or both --dir1 (real) and --dir2 (fake)")

    result = compute_kid(real, fake, subset_size=args.kid_subset_size, subsets=args.kid_subsets, fid=args.fid,
                         feature_extractor=args.feature_extractor, weights_path=args.inception_weights,
                         allow_torchscript=args.feature_extractor_torchscript,
                         batch_size=args.batch_size, device=args.device, seed=args.seed,
                         num_workers=args.num_workers, verbose=not args.quiet)
    payload = {**meta, **tags, **result}
    write_json(out, payload)
    line = f"KID x100: {result['kid_x100']}  ({result['n_real']} real, {result['n_fake']} fake images)"
    if args.fid:
        line += f"  FID: {result['fid']:.2f}"
    log.info("%s -> %s", line, out)
    return payload


if __name__ == "__main__":
    from util.command_line.cli import run_main
    run_main(lambda: main() and 0)  # one-line errors for users; main() returns its results for tests
