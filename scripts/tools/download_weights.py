"""Download released weights into a run folder that test.py reads as it reads a run trained here.

    python -m scripts.tools.download_weights pix2pix facades_label2photo
    python -m scripts.tools.download_weights pix2pix facades_label2photo --url ~/Downloads/facades_label2photo.pth
    python -m scripts.tools.download_weights atme --url ~/Downloads/atme_facades --name facades_atme_release

pix2pix: one of the models the pix2pix authors published for their PyTorch code (PIX2PIX_NAMES), fetched from
`$PIX2PIX_MODELS_URL/<name>.pth` (default: the Berkeley server) into `<checkpoints_dir>/<name>_pretrained/` as
`latest_net_G.pth`, with a `train_opt.json` holding the generator it was trained with (U-Net 256, batch norm,
dropout; the width and channels read from the file) and the direction of its data set, so that
`test.py --name <name>_pretrained --dataroot <data set>` works without further flags.

atme: the authors' released checkpoints (`latest_net_G.pth`, `latest_net_T.pth`, and `latest_net_D.pth` when
it is there). No URL for them is known to this project: pass `--url` (a folder URL or a local folder holding
them) or set ATME_WEIGHTS_URL. They are checked and converted (scripts/tools/convert_atme_checkpoint.py: T
becomes W) into `<checkpoints_dir>/<name>/`.

No SHA-256 sums are published for these files. The script prints the SHA-256 of every file it fetched and
records it in `download.json` beside the weights; `--sha256 HEX` (pix2pix; or WEIGHTS_SHA256) and
`--sha256 FILE=HEX` (any file) check a download against a sum you trust. Every file is read as data
(`weights_only`), checked (a plain state_dict, finite, the layout the model builds) and placed only when all of
them pass: the run folder appears whole, or not at all.
"""
import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

if not __package__:  # run as `python scripts/tools/download_weights.py`: import the project as `python -m` would
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import torch

from models.atme.release import convert_release, load_state_dict_file
from models.networks.generators import define_G
from util.command_line import commands
from util.command_line.cli import UsageError, run_main
from util.run.atomic import write_json
from util.run.checkpoint import atomic_save, check_finite, describe_mismatch, layout_mismatch
from util.run.integrity import sha256_of
from util.run.run_names import run_path

log = logging.getLogger("download_weights")

PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/models-pytorch"
# name -> (the data set it translates, as datasets/download_pix2pix_dataset.sh names it; its --direction)
PIX2PIX_NAMES = {
    "facades_label2photo": ("facades", "BtoA"),  # facades: A is the photo, B the label map
    "sat2map": ("maps", "AtoB"),
    "map2sat": ("maps", "BtoA"),
    "edges2shoes": ("edges2shoes", "AtoB"),
    "edges2handbags": ("edges2handbags", "AtoB"),
    "day2night": ("night2day", "BtoA"),  # night2day: A is the night image, B the day one
}
ATME_FILES = ("latest_net_G.pth", "latest_net_T.pth")
ATME_OPTIONAL = ("latest_net_D.pth",)
MODULE = "scripts.tools.download_weights"
CHUNK = 1 << 20


class Refused(RuntimeError):
    """A download that cannot be placed; the message says why and what to do (no traceback hint)."""
    refusal = True


class Unreachable(Refused):
    """A source that could not be read (offline, refused, timed out, not found)."""


def this_command(args):
    """The command that runs this script with `args`, with the interpreter that is running."""
    return shlex.join([commands.interpreter(), "-m", MODULE, *[str(a) for a in args]])


# ---------------------------------------------------------------------------------------------- fetching
def is_url(source):
    return urllib.parse.urlsplit(str(source)).scheme in ("http", "https", "ftp", "file")


def join_source(base, name):
    """`name` inside the folder `base` (a URL or a local folder)."""
    return base.rstrip("/") + "/" + name if is_url(base) else os.path.join(os.path.expanduser(base), name)


def fetch(source, dest, timeout):
    """Copy `source` (a URL or a local file) to `dest`; raise Unreachable with the reason when it cannot be read."""
    if not is_url(source):
        path = os.path.expanduser(source)
        if not os.path.isfile(path):
            raise Unreachable(f"{path} is not a file")
        shutil.copyfile(path, dest)
        return
    log.info("downloading %s", source)
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response, open(dest, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm
            with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(dest), leave=False) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    bar.update(len(block))
    except urllib.error.HTTPError as err:
        raise Unreachable(f"the server answered {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise Unreachable(str(err.reason)) from None
    except (TimeoutError, ConnectionError, OSError) as err:  # a read that stalls or breaks off
        raise Unreachable(f"{type(err).__name__}: {err}") from None


def offline_advice(source, reason, env, what, local_form):
    """The message for a source that could not be read: why, and what to do."""
    return (f"could not download {source} ({reason}).\n"
            f"Check the internet connection (and http_proxy/https_proxy behind a proxy); the server may be down "
            f"for a while: try again later, or set {env} to a mirror. Or fetch {what} on a machine that is "
            f"online, copy it here and pass it:\n"
            f"  {local_form}")


def parse_sums(values):
    """--sha256 values: {file name or '': lower-case hex}."""
    sums = {}
    for value in values:
        name, _, digest = value.rpartition("=")
        digest = digest.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise UsageError(f"--sha256 {value}: expected 64 hexadecimal digits (HEX or FILE=HEX), as sha256sum "
                             f"prints them")
        sums[name] = digest
    return sums


def check_sum(path, name, digest, expected):
    """Raise when the file's SHA-256 `digest` differs from the one given for it."""
    if expected is not None and digest != expected:
        raise Refused(f"{name}: SHA-256 {digest} differs from the --sha256 given ({expected}); the file is "
                           f"not the one you expected (an incomplete download, another release or a changed "
                           f"file). Nothing was placed.")
    if expected is not None:
        log.info("%s: SHA-256 matches the one given", name)


# ---------------------------------------------------------------------------------------------- pix2pix
def pix2pix_state(path):
    """The generator's state_dict from a downloaded file, in the form test.py loads, and the changes made to it:
    a leading `module.` dropped (the loader strips it too) and BatchNorm's `num_batches_tracked` counters added
    where a file saved by an older PyTorch has none (they are not used at test time)."""
    state = load_state_dict_file(path)
    check_finite(state, path, "downloaded generator")
    changes = []
    counters = [k[:-len("running_mean")] + "num_batches_tracked" for k in state if k.endswith(".running_mean")]
    missing = [k for k in counters if k not in state]
    for key in missing:
        state[key] = torch.tensor(0, dtype=torch.long)
    if missing:
        changes.append(f"added {len(missing)} BatchNorm num_batches_tracked counter(s) (saved by an older PyTorch)")
    return state, changes


def unet_shape(state, path):
    """(input_nc, output_nc, ngf) of a pix2pix U-Net generator's state_dict (its outermost convolutions)."""
    first, last = state.get("model.model.0.weight"), state.get("model.model.3.weight")
    if first is None or last is None or first.dim() != 4 or last.dim() != 4:
        raise Refused(f"{path} is not a pix2pix U-Net generator (no model.model.0.weight / model.model.3.weight "
                           f"convolutions); pass a pix2pix model file ({', '.join(PIX2PIX_NAMES)})")
    return int(first.shape[1]), int(last.shape[1]), int(first.shape[0])


def pix2pix_options(state, path, direction):
    """The stored options test.py takes for the published generator (U-Net 256, batch norm, dropout), with the
    channels and width of `state`; refused when `state` does not fit the network they build."""
    input_nc, output_nc, ngf = unet_shape(state, path)
    net = define_G(input_nc, output_nc, ngf, "unet_256", norm="batch", use_dropout=True)
    mismatch = layout_mismatch(net, state)
    if mismatch:
        raise Refused(f"{path} does not fit the pix2pix generator (--netG unet_256 --norm batch, --ngf {ngf}): "
                           f"{describe_mismatch(mismatch)}. Pass a pix2pix model file ({', '.join(PIX2PIX_NAMES)}).")
    return {"model": "pix2pix", "netG": "unet_256", "norm": "batch", "no_dropout": False, "ngf": ngf,
            "input_nc": input_nc, "output_nc": output_nc, "direction": direction, "dataset_mode": "aligned",
            "netD": "basic", "ndf": 64, "n_layers_D": 3, "gan_mode": "vanilla", "load_size": 286, "crop_size": 256,
            "preprocess": "resize_and_crop"}


def stage_pix2pix(args, staging, sums):
    dataset, direction = PIX2PIX_NAMES[args.model_name]
    env = "PIX2PIX_MODELS_URL"
    source = args.url or join_source(os.environ.get(env, PIX2PIX_URL), f"{args.model_name}.pth")
    downloaded = os.path.join(staging, f".{args.model_name}.pth.download")
    try:
        fetch(source, downloaded, args.timeout)
    except Unreachable as err:
        local = this_command(["pix2pix", args.model_name, "--url", f"path/to/{args.model_name}.pth"])
        raise Unreachable(offline_advice(source, err, env, f"{args.model_name}.pth", local)) from None
    digest = sha256_of(downloaded)
    print(f"SHA-256 of {source}: {digest}")
    check_sum(downloaded, f"{args.model_name}.pth", digest, sums.get("", sums.get(f"{args.model_name}.pth")))
    state, changes = pix2pix_state(downloaded)
    options = pix2pix_options(state, source, direction)
    placed = os.path.join(staging, "latest_net_G.pth")
    if changes:
        atomic_save(state, placed)
        os.remove(downloaded)
    else:
        os.replace(downloaded, placed)
    write_json(os.path.join(staging, "train_opt.json"), options)
    files = [{"file": "latest_net_G.pth", "source": source, "sha256": digest,
              "placed_sha256": sha256_of(placed), "changes": changes}]
    test = commands.test_command(run_name(args), args.checkpoints_dir, "latest",
                                 ["--dataroot", f"./datasets/{dataset}"])
    return files, [f"bash datasets/download_pix2pix_dataset.sh {dataset}", test]


# ---------------------------------------------------------------------------------------------- ATME
def stage_atme(args, staging, sums):
    env = "ATME_WEIGHTS_URL"
    base = args.url or os.environ.get(env)
    if not base:
        raise UsageError(
            "no source for the ATME checkpoints: no URL for the authors' release is known to this project.\n"
            f"Download {', '.join(ATME_FILES)} (and {ATME_OPTIONAL[0]}) from the link the authors give, into a "
            f"folder, and pass it (or its URL; or set {env}):\n"
            f"  {this_command(['atme', '--url', 'path/to/folder', '--name', args.name])}")
    files = []
    for name in ATME_FILES + ATME_OPTIONAL:
        source = join_source(base, name)
        target = os.path.join(staging, name)
        try:
            fetch(source, target, args.timeout)
        except Unreachable as err:
            if name in ATME_OPTIONAL:
                log.info("no %s at %s (%s): D is not needed by test.py; placed without it", name, base, err)
                continue
            local = this_command(["atme", "--url", "path/to/folder", "--name", args.name])
            raise Unreachable(offline_advice(source, err, env, f"{', '.join(ATME_FILES)} (into one folder)",
                                             local)) from None
        digest = sha256_of(target)
        print(f"SHA-256 of {source}: {digest}")
        check_sum(target, name, digest, sums.get(name))
        check_finite(load_state_dict_file(target), target, "downloaded checkpoint")
        files.append({"file": name, "source": source, "sha256": digest, "placed_sha256": digest, "changes": []})
    written = convert_release(staging, "latest")  # checks G and T against the release's layout; T -> W
    for name, path in written.items():
        if os.path.basename(path) not in [f["file"] for f in files]:
            files.append({"file": os.path.basename(path), "source": "converted by scripts/tools/convert_atme_checkpoint",
                          "placed_sha256": sha256_of(path), "changes": [f"{name} from the release's file"]})
    write_json(os.path.join(staging, "train_opt.json"),
               {"model": "atme", "direction": args.direction, "dataset_mode": "aligned", "load_size": 256,
                "crop_size": 256})
    test = commands.test_command(run_name(args), args.checkpoints_dir, "latest",
                                 ["--dataroot", "path/to/data"])
    return files, [test]


# ---------------------------------------------------------------------------------------------- the run folder
def run_name(args):
    return f"{args.model_name}_pretrained" if args.family == "pix2pix" else args.name


def download(args):
    sums = parse_sums(args.sha256 or ([os.environ["WEIGHTS_SHA256"]] if os.environ.get("WEIGHTS_SHA256") else []))
    name = run_name(args)
    target = run_path(args.checkpoints_dir, name, "--checkpoints_dir")
    if os.path.isfile(os.path.join(target, "latest_net_G.pth")) and not args.force:
        print(f"{target} already holds latest_net_G.pth; nothing to do (--force downloads it again).")
        return 0
    parent = os.path.dirname(os.path.abspath(target))
    made = _missing_parents(parent)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".download_{os.path.basename(target)}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # a run folder like any other (mkdtemp makes it private)
    try:
        stage = stage_pix2pix if args.family == "pix2pix" else stage_atme
        files, next_steps = stage(args, staging, sums)
        write_json(os.path.join(staging, "download.json"),
                   {"files": files, "downloaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "note": "no SHA-256 sums are published for these files: sha256 is the sum of what was fetched "
                            "here; pass it to --sha256 to check a later download"})
        place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(made):  # a refused download leaves no folder it created behind
            if os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)
        raise
    print(f"Done: {target}")
    print("Next:")
    for line in next_steps:
        print(f"  {line}")
    return 0


def _missing_parents(folder):
    missing = []
    while folder and not os.path.exists(folder):
        missing.insert(0, folder)
        folder = os.path.dirname(folder)
    return missing


def place(staging, target):
    """Rename the complete staging folder to `target`; an earlier folder there (--force) goes once it is in."""
    old = None
    if os.path.lexists(target):
        old = tempfile.mkdtemp(prefix=f".replaced_{os.path.basename(target)}.", dir=os.path.dirname(target))
        os.rename(target, os.path.join(old, "run"))
    os.rename(staging, target)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def parser():
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    families = p.add_subparsers(dest="family", required=True, metavar="{pix2pix,atme}")
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--url", default=None,
                        help="where to fetch from instead of the default: a URL (http, https, file) or a local path "
                             "(pix2pix: the .pth file; atme: the folder holding the files)")
    common.add_argument("--sha256", action="append", metavar="HEX|FILE=HEX",
                        help="the SHA-256 the file must have (pix2pix: HEX; atme: latest_net_G.pth=HEX, ...); "
                             "repeatable; default: $WEIGHTS_SHA256")
    common.add_argument("--checkpoints_dir", default="./checkpoints", help="where run folders live")
    common.add_argument("--timeout", type=float, default=float(os.environ.get("WEIGHTS_DOWNLOAD_TIMEOUT", 30)),
                        help="seconds to wait for the server to answer or send more (default 30, or "
                             "$WEIGHTS_DOWNLOAD_TIMEOUT)")
    common.add_argument("--force", action="store_true", help="download again over an existing run folder")
    pix = families.add_parser("pix2pix", parents=[common], allow_abbrev=False,
                              help="a published pix2pix model, into <checkpoints_dir>/<name>_pretrained/")
    pix.add_argument("model_name", choices=list(PIX2PIX_NAMES), metavar="name",
                     help=f"one of: {', '.join(PIX2PIX_NAMES)}")
    atme = families.add_parser("atme", parents=[common], allow_abbrev=False,
                               help="the ATME authors' checkpoints (--url or $ATME_WEIGHTS_URL), converted")
    atme.add_argument("--name", default="atme_release", help="the run folder to create (default: atme_release)")
    atme.add_argument("--direction", default="AtoB", choices=["AtoB", "BtoA"],
                      help="the direction the checkpoints were trained in (stored for test.py)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return download(args)


if __name__ == "__main__":
    run_main(main)
