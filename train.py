"""Train an image-to-image translation model.

    python train.py --dataroot ./datasets/facades --name facades_pix2pix --model pix2pix --direction BtoA
    python train.py --model atme --dataroot ./datasets/facades --name facades_atme --continue_train

Everything about the run goes to <checkpoints_dir>/<name>/: options, loss_log.csv, convergence.csv,
train.log, web/index.html, checkpoints. Ctrl-C or SIGTERM saves a resumable state and exits;
`--continue_train` resumes it. Several GPUs (`--gpu_ids 0,1`) or `--nproc_per_node N` start one process each
under torchrun (DistributedDataParallel); `torchrun ... train.py ...` works too, and is needed for several nodes.
"""
import logging
import math
import os
import sys
import time

import torch
from tqdm import tqdm

from data import EpochSamples, create_dataloader, create_dataset
from data.base_dataset import SKIP_LIST
from data.precheck import write_skip_list
from data.samplers import EpochSampler
from models import create_model
from models.base_model import TrainingDiverged
from options.resume import shown
from options.train_options import TrainOptions
from util.process import cpu_allocator, distributed
from util.run import convergence
from util.command_line import commands
from util.command_line.cli import run_main
from util.dashboard import Dashboard
from util.process.devices import cpu_has_native_bf16, seed_everything
from util.process.stop_request import StopRequest
from util.process.launch import launch_local_workers, local_processes, stop_with_parent, under_torchrun
from util.run.run_folder import RunFolder, RunFolderError, holds_a_run
from util.run.run_lookup import check_resumable
from util.run.run_logs import CsvLog, attach_log_file, setup_logging
from util.run import run_outcome

log = logging.getLogger("train")


def make_val_loader(opt):
    """The `val` split, in order, with the test-time preprocessing (no random crop or flip)."""
    import copy
    val_opt = copy.copy(opt)
    val_opt.phase, val_opt.isTrain, val_opt.no_flip, val_opt.serial_batches = "val", False, True, True
    val_opt.load_size = opt.crop_size
    val_opt.num_threads = 0
    return create_dataloader(create_dataset(val_opt), val_opt, shuffle=False)


def validate(model, loader, epoch, val_log, dashboard, rank):
    """Mean L1 and PSNR on the val split; keeps a `best` checkpoint by the lowest L1."""
    from util.metrics import evaluate_model
    model.eval()
    scores = evaluate_model(model, loader)
    model.train()
    model.check_finite(weights=True)  # on every rank (it agrees over them), before a `best` save below
    if rank != 0:
        return scores["l1"]
    previous = [float(r["l1"]) for r in val_log.rows()]
    val_log.append(dict(epoch=epoch, **scores))
    dashboard.plot_lines("validation", epoch, {k: v for k, v in scores.items() if k in ("l1", "psnr")})
    log.info("validation after epoch %d: L1 %.4f, PSNR %.2f dB", epoch, scores["l1"], scores["psnr"])
    if not previous or scores["l1"] < min(previous):
        model.save_networks("best")
        log.info("new best L1: saved best_net_*.pth")
    return scores["l1"]


def own_run_folder(run, options, opt, dataset, resumed, rank):
    """Rank 0 takes the run folder (after every check passed, so a refused command wrote nothing): the lock, an
    earlier run moved aside with --start_over, a killed run's half-done save finished and its temporary files
    removed, the logs cut back to the checkpoint a resume starts from, the options and train.log. Every rank
    learns whether it worked, so a refused launch of several processes stops them all."""
    error = None
    if rank == 0:
        try:
            run.lock()
            if opt.start_over and holds_a_run(run.path):
                run.start_over()
            run.check_new_run(opt.continue_train, opt.start_over)  # again, now that no other process can start
            run.tidy()
            if resumed:
                cut_logs_to(opt.run_dir, resumed)
            options.save(opt)
            attach_log_file(os.path.join(opt.run_dir, "train.log"))
            if dataset.skipped_images:
                write_skip_list(os.path.join(opt.run_dir, SKIP_LIST), dataset.skipped_images)
        except (RunFolderError, OSError) as err:
            error = err
    if distributed.max_over_ranks(1 if error else 0):
        if error is not None:
            raise error
        raise RunFolderError(f"rank 0 could not take the run folder {run.path}; see its message")


def cut_logs_to(run_dir, resumed):
    """A resume continues from its checkpoint: rows logged after it (by a run that was killed later) go."""
    epoch, images = resumed["epoch"], resumed["total_iters"]
    dropped = CsvLog(os.path.join(run_dir, "loss_log.csv")).keep(lambda r: int(float(r["total_iters"])) <= images)
    for name in ("convergence.csv", "val_log.csv"):
        dropped += CsvLog(os.path.join(run_dir, name)).keep(lambda r: int(float(r["epoch"])) < epoch)
    if dropped:
        log.info("dropped %d log row(s) written after the checkpoint this run resumes from", dropped)


# What the fp32-against-bf16 study measured (docs/speed.md, "fp32 against bf16 as a study": the demo ATME, 3 seeds,
# 20 + 20 epochs): bf16 with channels-last stayed within the seeds' spread on every quality column and trained
# this many times as fast. tests/test_precision_hint.py checks the figure against that table.
BF16_STUDY_SPEEDUP = 1.30
BF16_STUDY_PAGE = "docs/speed.md#fp32-against-bf16-as-a-study"


def precision_hint(amp, device_type):
    """The one line train.py logs at start on a machine that computes bf16 natively while it trains in fp32
    (None elsewhere): what the study measured and where its table is. fp32 stays the default."""
    if amp != "none" or BF16_STUDY_SPEEDUP is None:
        return None
    try:
        native = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_has_native_bf16()
    except (RuntimeError, AssertionError):  # no usable CUDA device after all: no hint, training goes on
        native = False
    if not native:
        return None
    return (f"this machine computes bf16 natively: with --amp bf16 --channels_last the demo ATME trained "
            f"{BF16_STUDY_SPEEDUP:.2f}x as fast as in fp32, its test L1, PSNR and distance to log 4 within the "
            f"seeds' spread ({BF16_STUDY_PAGE}); fp32 stays the default")


def main(args=None):
    options = TrainOptions()
    opt = options.parse(args)
    setup_logging(None, distributed.rank(), opt.verbose)  # train.log once the run owns its folder
    for note in options.notes:
        log.info("%s", note)
    hint = precision_hint(opt.amp, "cuda" if opt.gpu_ids and torch.cuda.is_available() else "cpu")
    if hint and distributed.rank() == 0:
        log.info("%s", hint)
    for key, old, new in options.resume_changes:  # one WARNING per flag a resume changes
        log.warning("--continue_train: --%s %s -> %s (the run's value -> this command's)", key, shown(old), shown(new))
    processes = local_processes(opt.gpu_ids, opt.nproc_per_node)
    if processes > 1:  # this process only starts and waits for the workers, which run this script again
        return launch_local_workers(os.path.abspath(__file__), sys.argv[1:] if args is None else args, processes)
    if under_torchrun():
        stop_with_parent()  # torchrun's agent killed (even by SIGKILL): this worker saves and stops, not trains on
    device_type = "cuda" if opt.gpu_ids and torch.cuda.is_available() else "cpu"  # as resolve_device decides
    with cpu_allocator.applied(opt.cpu_allocator, device_type):  # process-wide: set here, restored on return
        return train_process(options, opt, device_type, sys.argv[1:] if args is None else list(args))


def train_process(options, opt, device_type, given):
    """This process's part of the run: alone, or one rank under torchrun; `given` is the command's arguments."""
    distributed.init_from_environment(device_type)
    rank = distributed.rank()
    seed_everything(opt.seed, rank)

    # Everything that can refuse the command runs before anything is written.
    run = RunFolder(opt.run_dir, locking=opt.lock)
    run.check_new_run(opt.continue_train, opt.start_over, probe_lock=rank == 0,  # rank 0 takes the lock
                      commands=lambda: (options.resume_command(opt),
                                        options.retry_command(options.parser, given, (), ["--start_over"])))
    if opt.continue_train:  # the state to resume, before any data or network is built
        check_resumable(opt.run_dir, f"iter_{opt.load_iter}" if opt.load_iter else opt.epoch,
                        lambda drop, add: options.retry_command(options.parser, given, drop, add),
                        opt.checkpoints_dir, lambda: options.start_over_command(opt),
                        lambda name: commands.resume_command(name, opt.checkpoints_dir),
                        has_data="dataroot" in options.explicit_flags(options.parser, given))
    dataset = create_dataset(opt)
    opt.dataset_size = len(dataset)
    model = create_model(opt)
    model.setup(opt)  # a resume loads and checks its training state here
    last_epoch = opt.n_epochs + opt.n_epochs_decay
    if model.resume_state and model.resume_state["epoch"] > last_epoch:
        done = model.resume_state["epoch"] - 1
        log.warning("nothing left to train: %s has finished epoch %d of --n_epochs %d + --n_epochs_decay %d; the run "
                    "is left as it is.\nTo train on, pass larger totals (the schedule is re-planned for them), "
                    "e.g.:\n  %s",
                    opt.run_dir, done, opt.n_epochs, opt.n_epochs_decay,
                    options.retry_command(options.parser, given,
                                          ("--n_epochs", "--n_epochs_decay"),
                                          ("--n_epochs", done - opt.n_epochs_decay + max(1, done // 2),
                                           "--n_epochs_decay", opt.n_epochs_decay)))
        return 0
    try:
        own_run_folder(run, options, opt, dataset, model.resume_state, rank)
        model.attach_run_state(opt)
        return train(opt, model, dataset)
    finally:
        run.release()
        distributed.cleanup()


def train(opt, model, dataset):
    """The run's epochs: every stop that can be agreed (mid-epoch, after the last step, during validation or a
    save) ends with a resumable `latest`; the outcome goes to the run's page."""
    stop = StopRequest()  # first: a Ctrl-C while the loader starts is answered at the first step, with a save
    trainer, outcome = None, None  # how training ended, for the run's page
    try:
        trainer = Trainer(opt, model, dataset)
        outcome = trainer.run(stop)
    except RuntimeError as err:
        if trainer is None:
            raise
        outcome, error = trainer.failure(err)
        if error is err:
            raise
        raise error from None
    except BaseException as err:
        outcome = run_outcome.failed(err)
        raise
    finally:
        stop.restore()
        if trainer is not None:
            trainer.dashboard.close(outcome=outcome)
    return 0 if trainer.finished else stop.exit_code  # a stop during the last epoch's saves: the run is done


class Trainer:
    """One process's training loop: where the run is (epoch, images into it, images in all), its loader, logs
    and dashboard, and what it does at each step, at the end of each epoch and when asked to stop."""

    def __init__(self, opt, model, dataset):
        self.opt, self.model, self.dataset = opt, model, dataset
        self.rank, self.world = distributed.rank(), distributed.world_size()
        resumed = model.resume_state or {}
        self.start_epoch = resumed.get("epoch", opt.epoch_count)
        self.epoch_iter = resumed.get("epoch_iter", 0)
        self.total_iters = resumed.get("total_iters", 0)
        self.last_epoch = opt.n_epochs + opt.n_epochs_decay
        self.images_per_step = opt.batch_size * self.world
        self.sampler = EpochSampler(len(dataset), shuffle=not opt.serial_batches, seed=opt.seed, rank=self.rank,
                                    world_size=self.world)
        samples = EpochSamples(dataset, extras=model.sample_readers(), seed=opt.seed)
        self.loader = create_dataloader(samples, opt, sampler=self.sampler)
        self.dashboard = make_dashboard(opt, len(dataset), self.world, self.rank)
        self.val_loader = make_val_loader(opt) if opt.val_freq > 0 else None
        logs = ("loss_log", "convergence", "val_log")
        self.logs = {name: CsvLog(os.path.join(opt.run_dir, f"{name}.csv")) if self.rank == 0 else None
                     for name in logs}
        self.saved = None  # the newest `latest` this process saved: (epoch, images)
        self.finished = False
        self.compile_logged = False
        log.info("training %s on %d images for epochs %d..%d (%d process%s)", opt.model, len(dataset),
                 self.start_epoch, self.last_epoch, self.world, "es" if self.world > 1 else "")

    # ------------------------------------------------------------------ the loop
    def run(self, stop):
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, self.last_epoch + 1):
            if self.run_epoch(epoch, stop):
                return self.stopped(stop, epoch, within_epoch=True)
            if self.end_epoch(epoch, stop) and epoch < self.last_epoch:
                return self.stopped(stop, epoch, within_epoch=False)
        self.finished = True
        return run_outcome.finished(epoch, self.last_epoch)

    def run_epoch(self, epoch, stop):
        """The epoch's steps (from where a resume left it); True when a stop was agreed, with `latest` saved."""
        opt, model = self.opt, self.model
        self.sampler.set_epoch(epoch, start=self.epoch_iter)
        model.on_epoch_start(epoch)
        model.train()
        steps = math.ceil(len(self.sampler) / opt.batch_size)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.last_epoch}", unit="batch", disable=self.rank != 0,
                   dynamic_ncols=True, leave=not sys.stderr.isatty())  # in a file: the last state, no blanks
        self.timer = StepTimer(self.total_iters - self.epoch_iter * self.world)  # images seen when it began
        stopped = False
        for batches_done, batch in enumerate(self.loader, 1):
            self.step(epoch, batch)
            bar.update(1)
            self.after_step(epoch, batches_done == steps, bar)
            if stop.agreed():
                stopped = True
                break
            self.timer.data_started()
        bar.close()
        model.compute_visuals()  # every epoch, and a stop, gets a picture whatever --update_html_freq says
        self.dashboard.epoch_snapshot(model.get_current_visuals(), epoch, self.total_iters)
        if stopped:
            self.save("latest", epoch, self.epoch_iter)
            log.info("stopped in epoch %d after %d of its images; the state is in %s/latest_train_state.pth",
                     epoch, self.epoch_iter, opt.run_dir)
        return stopped

    def step(self, epoch, batch):
        model = self.model
        started = self.timer.step_started()
        model.note_position(epoch, self.total_iters)
        model.set_input(batch)
        model.optimize_parameters()
        if self.opt.compile and not self.compile_logged:  # the first step compiles the networks
            self.compile_logged = True
            log.info("first step: %.1f s, most of it torch.compile (later steps reuse the compiled code)",
                     time.perf_counter() - started)
        n = batch["A"].shape[0]
        self.epoch_iter += n
        self.total_iters += n * self.world
        self.timer.images += n * self.world

    def after_step(self, epoch, last_of_epoch, bar):
        """Visuals, loss rows and `latest` saves at their frequencies (all depend on the images seen only, so a
        resumed run does the same at the same images)."""
        opt, model, total = self.opt, self.model, self.total_iters
        if total % opt.display_freq < self.images_per_step:
            model.compute_visuals()
            save_result = total % opt.update_html_freq < self.images_per_step
            self.dashboard.display_current_results(model.get_current_visuals(), epoch, total, save_result)
        # every --print_freq images, and at the end of an epoch that had none (a short run still has its curves)
        epoch_had_no_print = total // opt.print_freq == self.timer.epoch_start_images // opt.print_freq
        if total % opt.print_freq < self.images_per_step or (last_of_epoch and epoch_had_no_print):
            self.log_losses(epoch, bar)
        if total % opt.save_latest_freq < self.images_per_step:
            log.info("saving the latest model (epoch %d, %d images in all)", epoch, total)
            self.save("latest", epoch, self.epoch_iter)
            if opt.save_by_iter:
                self.save(f"iter_{total}", epoch, self.epoch_iter)

    def log_losses(self, epoch, bar):
        losses = self.model.get_current_losses()  # the one host synchronisation, at print time
        self.model.check_finite()
        per_image, data_time = self.timer.lap()
        if self.rank == 0:
            images_per_epoch = max(len(self.dataset) / self.world, 1)
            self.logs["loss_log"].append(dict(epoch=epoch, iters=self.epoch_iter, total_iters=self.total_iters,
                                              **losses, time_per_image=per_image, data_time=data_time))
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in losses.items()}, "img/s": f"{1 / per_image:.2f}"})
            log.debug("epoch %d, %d images: %s", epoch, self.epoch_iter, losses)
            self.dashboard.plot_current_losses(epoch, self.epoch_iter / images_per_epoch, losses, self.total_iters)

    def end_epoch(self, epoch, stop):
        """The epoch's convergence row, validation, learning-rate step and saves; True when a stop was agreed
        (before or during them: `latest` is then saved, so a resume starts the next epoch exactly)."""
        opt, model = self.opt, self.model
        model.on_epoch_end(epoch)
        row = model.pop_convergence()
        if row is not None and self.rank == 0:
            self.log_convergence(epoch, row)
        steps = math.ceil(len(self.sampler) / opt.batch_size)
        self.epoch_iter = 0
        seconds = self.timer.epoch_seconds()
        log.info("end of epoch %d / %d: %.1f s, %.2f images/s", epoch, self.last_epoch, seconds,
                 steps * self.images_per_step / max(seconds, 1e-9))
        val_l1 = None
        if self.val_loader is not None and epoch % opt.val_freq == 0:
            val_l1 = validate(model, self.val_loader, epoch, self.logs["val_log"], self.dashboard, self.rank)
        model.update_learning_rate(val_l1)
        stopping = stop.agreed()
        numbered = epoch % opt.save_epoch_freq == 0 or epoch == self.last_epoch
        save_latest = numbered or model.save_at_epoch_end or stopping
        if save_latest:
            self.save("latest", epoch + 1, 0)
        if numbered:
            self.save(str(epoch), epoch + 1, 0)
        if save_latest and not stopping:  # a stop during the saves: the state just saved is where to resume
            stopping = stop.agreed()
        return stopping

    def log_convergence(self, epoch, row):
        self.logs["convergence"].append(dict(epoch=epoch, **row))
        q = convergence.quantity(self.opt.gan_mode)
        self.dashboard.plot_convergence(epoch, row[q.column])
        log.info("epoch %d: D_real %.4f, D_fake %.4f, %s %.4f%s", epoch, row["D_real"], row["D_fake"], q.label,
                 row[q.column], f" (equilibrium: {q.equilibrium_label})" if q.equilibrium else "")

    # ------------------------------------------------------------------ saving, stopping, failing
    def save(self, tag, epoch, done):
        self.model.check_finite(weights=True)  # nothing non-finite is ever saved
        self.model.save_training_state(tag, epoch, done, self.total_iters)
        distributed.barrier()
        if tag == "latest":
            self.saved = (epoch, self.total_iters)

    def stopped(self, stop, epoch, within_epoch):
        return run_outcome.stopped(stop.signum, epoch, self.last_epoch, TrainOptions.resume_command(self.opt),
                                   within_epoch=within_epoch)

    def failure(self, err):
        """(the outcome for the page, the error to raise) for a RuntimeError out of the loop."""
        where = (f"The newest checkpoint, 'latest' (epoch {self.saved[0]}, {self.saved[1]} images), is intact: "
                 f"resume from it with:\n  {TrainOptions.resume_command(self.opt)}" if self.saved else
                 "This process saved no checkpoint; an earlier one, if any, is intact.")
        if isinstance(err, TrainingDiverged):
            return run_outcome.failed(f"{err} {where}"), TrainingDiverged(f"{err} {where}")
        lost = distributed.lost_peer(err)
        if lost is None:
            return run_outcome.failed(err), err
        message = (f"another process of this run stopped ({lost}), so this one (rank {self.rank} of {self.world}) "
                   f"stops too; its own report, if it could give one, is above. {where}")
        return run_outcome.failed(message), distributed.PeerLost(message)


class StepTimer:
    """Seconds per image and data-loading time between loss rows, and the epoch's wall time."""

    def __init__(self, epoch_start_images):
        self.epoch_start_images = epoch_start_images
        self.started = self.last_print = self.data_since = time.perf_counter()
        self.data_time, self.images = 0.0, 0

    def data_started(self):
        self.data_since = time.perf_counter()

    def step_started(self):
        now = time.perf_counter()
        self.data_time += now - self.data_since
        return now

    def lap(self):
        """(seconds per image, data seconds per image) since the last lap."""
        images = max(self.images, 1)
        result = ((time.perf_counter() - self.last_print) / images, self.data_time / images)
        self.last_print, self.data_time, self.images = time.perf_counter(), 0.0, 0
        return result

    def epoch_seconds(self):
        return time.perf_counter() - self.started


def make_dashboard(opt, images, world, rank):
    return Dashboard(opt.run_dir, opt.name, gan_mode=opt.gan_mode, images_per_epoch=max(images / world, 1),
                     display_id=opt.display_id, server=opt.display_server, port=opt.display_port,
                     env=opt.display_env, ncols=opt.display_ncols, winsize=opt.display_winsize,
                     use_html=not opt.no_html, use_tensorboard=opt.use_tensorboard, use_wandb=opt.use_wandb,
                     wandb_project=opt.wandb_project_name, run_options=vars(opt), enabled=rank == 0)


if __name__ == "__main__":
    run_main(main)
