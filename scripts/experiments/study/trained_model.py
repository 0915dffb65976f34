"""A finished run of the study opened for evaluation: its networks from `latest`, in eval mode, with a loader over
a split. Shared by the test metrics (evaluation) and SEGAN's diversity (diversity)."""
import os

from data import create_dataloader, create_dataset
from models import create_model
from options.test_options import TestOptions
from scripts.experiments.study.plan import gpu_args

EVAL_BATCH = 8  # test batch: instance norm and eval-mode batch norm make outputs independent of it


def open_test_model(run, *, dataroot, phase, gpu_ids, results_dir, extra=()):
    """(model, loader) of a trained run on `phase`, its networks loaded from `latest` and in eval mode."""
    args = ["--dataroot", dataroot, "--checkpoints_dir", os.path.dirname(run.run_dir), "--name", run.name,
            "--phase", phase, *gpu_args(gpu_ids), "--num_threads", "0", "--batch_size", str(EVAL_BATCH),
            "--results_dir", results_dir, "--epoch", "latest", *extra]
    opt = TestOptions().parse(args)
    loader = create_dataloader(create_dataset(opt), opt, shuffle=False)
    model = create_model(opt)
    model.setup(opt)
    model.eval()
    return model, loader
