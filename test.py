"""Run a trained model over a data split; write images and an HTML page.

    python test.py --dataroot ./datasets/facades --name facades_pix2pix --model pix2pix --direction BtoA

Architecture options come from checkpoints/<name>/train_opt.json; the run folder is only read. Output:
<results_dir>/<name>/<phase>_<epoch>/ (for a folder of images without a <phase> subfolder: <its name>_<epoch>/)
with index.html, images/, inputs.json and test_opt.txt / test_opt.json; a rerun on the same inputs replaces
images/ as a whole, so the folder holds the images of the latest test only, and one test.py at a time writes
it (util/run/results_folder.py). With --preprocess none each result
has its input's size (models/inference.py pads and crops back; --tile N runs large images in tiles).
"""
import logging
import os
import sys

import torch
from tqdm import tqdm

from data import create_dataloader, create_dataset
from data.transforms import test_size_note
from models import create_model
from models.memory import MemoryRefusal
from options.test_options import TestOptions
from util.process import cpu_allocator
from util.process.devices import seed_everything
from util.export.backends import BACKENDS
from util.run.results_folder import ResultsFolder, check_same_inputs, inputs_of, record_inputs, results_folder
from util.views.html import HTML, replacing_images, save_images
from util.run.result_files import ResultNames
from util.command_line.cli import run_main
from util.run.run_logs import setup_logging
from util.run.run_lookup import check_trained

log = logging.getLogger("test")


def main(args=None):
    setup_logging()
    options = TestOptions()
    opt = options.parse(args)
    # The run to test, checked before any data set or network is built.
    given = sys.argv[1:] if args is None else list(args)
    check_trained(opt.run_dir, f"iter_{opt.load_iter}" if opt.load_iter else opt.epoch,
                  lambda drop, add: options.retry_command(options.parser, given, drop, add), opt.checkpoints_dir)
    if opt.num_threads > 2 and "num_threads" in options.explicit_flags(options.parser, given):
        log.info("--num_threads %d -> 2: test.py loads data with at most 2 worker processes (one batch at a time, in "
                 "order: the generator, not the loading, sets the pace)", opt.num_threads)
    opt.num_threads = min(opt.num_threads, 2)
    device_type = "cuda" if opt.gpu_ids and torch.cuda.is_available() else "cpu"  # as resolve_device decides
    with cpu_allocator.applied(opt.cpu_allocator, device_type):  # process-wide: set here, restored on return
        try:
            return test_process(options, opt)
        except MemoryRefusal as err:  # an input too large for memory: the command that runs it in tiles
            if err.tile is None:
                raise
            raise err.with_command(options.retry_command(options.parser, given, ("--tile", "--tile_overlap"),
                                                         ("--tile", err.tile))) from None


def test_process(options, opt):
    """Load the run's networks and write the split's results."""
    seed_everything(0 if opt.seed is None else opt.seed)
    size_note = test_size_note(opt)
    if size_note:
        log.warning("%s", size_note)
    dataset = create_dataset(opt)
    loader = create_dataloader(dataset, opt, shuffle=False)
    model = create_model(opt)
    model.setup(opt)
    if opt.eval:
        model.eval()
    tag = f"iter_{opt.load_iter}" if opt.load_iter else opt.epoch
    # --backend onnxruntime/openvino: the run's exported graph replaces the torch generator in the test step.
    # Padding, tiling and visuals stay the torch path's.
    opt.backend = model.open_backend(tag, opt.backend, opt.precision, opt.crop_size)
    backend = BACKENDS[opt.backend].description
    log.info("the generator runs on %s (--backend %s)", backend, opt.backend)
    # The result's folder is named after its inputs (a data set's split: <phase>_<tag>; a folder of images:
    # <its name>_<tag>) and written by this process alone (a second test.py on it is refused).
    web_dir = results_folder(opt.results_dir, opt.name, opt.phase, tag, opt.dataroot)
    inputs = inputs_of(opt.dataroot, opt.dataset_mode, opt.phase)
    check_same_inputs(web_dir, inputs)
    results = ResultsFolder(web_dir)
    results.lock()
    try:
        done, webpage = write_results(opt, model, dataset, loader, tag, backend, web_dir, results)
    except BaseException:
        results.release(failed=True)
        raise
    record_inputs(web_dir, inputs)
    options.save(opt, web_dir)  # the run folder is only read: it may be a read-only model store
    results.release()
    log.info("%d inputs, %d image files (input, output(s), target) in %s; open %s", done, len(webpage.written),
             os.path.join(web_dir, "images"), os.path.join(web_dir, "index.html"))
    return 0


def write_results(opt, model, dataset, loader, tag, backend, web_dir, results):
    """Translate the split's inputs and write images/ and index.html into `web_dir` (held: `results`)."""
    limit = len(dataset) if opt.num_test is None else min(opt.num_test, len(dataset))
    done = 0
    names = ResultNames.of_dataset(dataset)  # one result name per input: subfolders kept, no collisions
    # The images go to a staging folder that replaces images/ when all are written: the folder holds this
    # test's images only (a metric script never scores an earlier run's leftovers), and a test that fails
    # leaves the earlier result as it was.
    with replacing_images(web_dir, owner=results) as staging:
        webpage = HTML(web_dir, f"run {opt.name} · model {opt.model} · data {opt.dataroot} ({opt.phase} split, "
                       f"--dataset_mode {opt.dataset_mode}) · checkpoint {tag} · {backend}", image_dir=staging)
        with tqdm(total=limit, desc="test", unit="img") as bar:
            for batch in loader:
                if done >= limit:
                    break
                model.set_input(batch)
                model.test()
                visuals = model.get_current_visuals()
                paths = model.get_image_paths()
                take = min(len(paths), limit - done)
                for i in range(take):
                    one = {name: image[i:i + 1] for name, image in visuals.items()}
                    save_images(webpage, one, paths[i], aspect_ratio=opt.aspect_ratio, width=opt.display_winsize,
                                names=names)
                done += take
                bar.update(take)
    webpage.save()
    return done, webpage


if __name__ == "__main__":
    run_main(main)
