"""A finished run of a convergence study, evaluated into CSV files under `<study_dir>/eval/<run name>/`:

- `params.csv`: parameters per network, counted on the networks built from the run's stored options;
- `test_metrics.csv`: L1 (mean |fake - real| on the [-1, 1] scale, as val_log.csv) and PSNR on the test split,
  networks in eval mode (as train.py's validation);
- `kid.csv` (when the Inception weights are present): KID x100 of the test outputs, written by test.py --eval
  under `<study_dir>/results/`;
- `diversity.csv` (SEGAN runs): see diversity.

Every row carries the epoch it evaluates, so a finished run is evaluated once; the table is computed from these
files and the run folders' logs only.
"""
import argparse
import logging
import os

from models import create_model
from options.base_options import load_stored_options
from scripts.experiments.study.diversity import evaluate_diversity
from scripts.experiments.study.plan import gpu_args
from scripts.experiments.study.records import is_current, write_rows
from scripts.experiments.study.trained_model import open_test_model
from util.command_line.arg_types import gpu_ids
from util.metrics import evaluate_model
from util.process.devices import resolve_device
from util.run.checkpoint import stored_value
from util.run.result_files import result_image_sets

log = logging.getLogger("convergence_study")

def eval_dir(study_dir, name):
    return os.path.join(study_dir, "eval", name)


def options_of(run_dir):
    """The run's stored training options as a namespace (tuples where the JSON has lists), networks on the CPU."""
    stored = load_stored_options(run_dir)
    if stored is None:
        raise FileNotFoundError(f"{run_dir}/train_opt.json is missing: is {run_dir} a finished run folder?")
    opt = argparse.Namespace(**{k: stored_value(v) for k, v in stored.items()})
    opt.isTrain, opt.gpu_ids = True, []
    opt.checkpoints_dir, opt.name = os.path.split(os.path.abspath(run_dir))
    return opt


def parameter_counts(run_dir):
    """{network name: parameters} of the model as trained (e.g. G, W, D for ATME; G, D, T for SEGAN)."""
    model = create_model(options_of(run_dir))
    return {name: sum(p.numel() for p in net.parameters()) for name, net in model.networks()}


def kid_fake_label(model):
    """The visual test.py saves the (first) output under: `fake_B`, or `fake_B_0` for SEGAN's numbered samples."""
    return "fake_B_0" if model == "segan" else "fake_B"


def evaluate_run(run, epoch, config, keep_logging):
    """Write the run's evaluation files that are missing or stale; `config` is the study's namespace."""
    out = eval_dir(config.study_dir, run.name)
    path = os.path.join(out, "params.csv")
    if not is_current(path, epoch):
        counts = parameter_counts(run.run_dir)
        write_rows(path, [dict(epoch=epoch, network=k, parameters=v) for k, v in counts.items()])
    path = os.path.join(out, "test_metrics.csv")
    if not is_current(path, epoch, phase=config.test_phase):
        model, loader = open_test_model(run, dataroot=config.test_dataroot, phase=config.test_phase,
                                        gpu_ids=config.gpu_ids, results_dir=config.results_dir)
        scores = evaluate_model(model, loader)
        write_rows(path, [dict(epoch=epoch, phase=config.test_phase, l1=scores["l1"], psnr=scores["psnr"],
                               n_images=scores["n_images"])])
        log.info("%s: %s L1 %.4f, PSNR %.2f dB (%d images)", run.name, config.test_phase, scores["l1"],
                 scores["psnr"], scores["n_images"])
        del model
    if config.inception_weights:
        evaluate_kid(run, epoch, config, os.path.join(out, "kid.csv"), keep_logging)
    if run.model == "segan":
        evaluate_diversity(run, epoch, config, os.path.join(out, "diversity.csv"))


def evaluate_kid(run, epoch, config, path, keep_logging):
    """KID x100 between the test split's targets and the run's outputs (test.py --eval writes them first)."""
    if is_current(path, epoch, phase=config.test_phase):
        return
    import test as test_cli
    from scripts.eval.kid import DEFAULT_SUBSET_SIZE, compute_kid
    with keep_logging():
        code = test_cli.main(["--dataroot", config.test_dataroot, "--checkpoints_dir", os.path.dirname(run.run_dir),
                              "--name", run.name, "--phase", config.test_phase, *gpu_args(config.gpu_ids),
                              "--num_threads", "0", "--results_dir", config.results_dir, "--eval"])
    if code:
        raise RuntimeError(f"test.py stopped with exit code {code} on {run.run_dir}")
    results = os.path.join(config.results_dir, run.name, f"{config.test_phase}_latest")
    real, fake = result_image_sets(results, "real_B", kid_fake_label(run.model))
    subset = min(DEFAULT_SUBSET_SIZE, len(real), len(fake))
    device = resolve_device(gpu_ids(config.gpu_ids) if config.gpu_ids is not None else None)
    kid = compute_kid(real, fake, subset_size=subset, weights_path=config.inception_weights, device=device,
                      num_workers=0, download=False)
    write_rows(path, [dict(epoch=epoch, phase=config.test_phase, kid_x100_mean=kid["kid_x100_mean"],
                           kid_x100_std=kid["kid_x100_std"], subset_size=subset, n_real=kid["n_real"],
                           n_fake=kid["n_fake"])])
    log.info("%s: KID x100 %.2f ± %.2f (subsets of %d)", run.name, kid["kid_x100_mean"], kid["kid_x100_std"], subset)
