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
import signal
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
from util.command_line.cli import run_main
from util.dashboard import Dashboard
from util.process.devices import seed_everything
from util.process.launch import launch_local_workers, local_processes, stop_with_parent, under_torchrun
from util.run.run_folder import RunFolder, RunFolderError, holds_a_run
from util.run.run_lookup import check_resumable
from util.run.run_logs import CsvLog, attach_log_file, setup_logging
from util.run import run_outcome

log = logging.getLogger("train")


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a save is never cut short. `restore()`
    puts back the handlers it found (a caller that trains in-process keeps its Ctrl-C)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self.previous = {}
        for sig in self.SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self.previous = {}

    def _handle(self, signum, frame):
        if self.signum is None:
            log.warning("%s received: finishing this step, saving a resumable checkpoint, then stopping "
                        "(resume with --continue_train)", signal.Signals(signum).name)
        self.signum = signum

    def __bool__(self):
        return self.signum is not None

    def agreed(self):
        """Whether any process was asked to stop. Every rank calls this at the same point of the loop and gets
        the same answer, so all of them stop after the same step (the signal reaches them at slightly
        different moments, and a rank that went on alone would wait forever for the others)."""
        signum = distributed.max_over_ranks(self.signum or 0)
        if signum:
            self.signum = self.signum or signum
        return bool(signum)

    @property
    def exit_code(self):
        return 128 + self.signum


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


def main(args=None):
    options = TrainOptions()
    opt = options.parse(args)
    setup_logging(None, distributed.rank(), opt.verbose)  # train.log once the run owns its folder
    for note in options.notes:
        log.info("%s", note)
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
                        lambda drop, add: options.retry_command(options.parser, given, drop, add))
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
    rank, world = distributed.rank(), distributed.world_size()
    resumed = model.resume_state or {}
    start_epoch = resumed.get("epoch", opt.epoch_count)
    epoch_iter = resumed.get("epoch_iter", 0)
    total_iters = resumed.get("total_iters", 0)

    sampler = EpochSampler(len(dataset), shuffle=not opt.serial_batches, seed=opt.seed, rank=rank,
                           world_size=world)
    samples = EpochSamples(dataset, extras=model.sample_readers(), seed=opt.seed)
    loader = create_dataloader(samples, opt, sampler=sampler)
    dashboard = Dashboard(opt.run_dir, opt.name, gan_mode=opt.gan_mode, images_per_epoch=max(len(dataset) / world, 1),
                          display_id=opt.display_id, server=opt.display_server, port=opt.display_port,
                          env=opt.display_env, ncols=opt.display_ncols, winsize=opt.display_winsize,
                          use_html=not opt.no_html, use_tensorboard=opt.use_tensorboard, use_wandb=opt.use_wandb,
                          wandb_project=opt.wandb_project_name, run_options=vars(opt), enabled=rank == 0)
    val_loader = None
    if opt.val_freq > 0:
        val_loader = make_val_loader(opt)
    val_log = CsvLog(os.path.join(opt.run_dir, "val_log.csv")) if rank == 0 else None
    loss_log = CsvLog(os.path.join(opt.run_dir, "loss_log.csv")) if rank == 0 else None
    conv_log = CsvLog(os.path.join(opt.run_dir, "convergence.csv")) if rank == 0 else None
    images_per_step = opt.batch_size * world
    last_epoch = opt.n_epochs + opt.n_epochs_decay
    log.info("training %s on %d images for epochs %d..%d (%d process%s)", opt.model, len(dataset),
             start_epoch, last_epoch, world, "es" if world > 1 else "")
    saved = {"tag": None}
    outcome = None  # how training ended, for the run's page

    def save(tag, epoch, done):
        model.check_finite(weights=True)  # nothing non-finite is ever saved
        model.save_training_state(tag, epoch, done, total_iters)
        distributed.barrier()
        if tag == "latest":
            saved.update(tag=tag, epoch=epoch, images=total_iters)

    stop = StopRequest()
    try:
        epoch, compile_logged = start_epoch, False
        for epoch in range(start_epoch, last_epoch + 1):
            sampler.set_epoch(epoch, start=epoch_iter)
            model.on_epoch_start(epoch)
            model.train()
            steps = math.ceil(len(sampler) / opt.batch_size)
            bar = tqdm(total=steps, desc=f"epoch {epoch}/{last_epoch}", unit="batch", disable=rank != 0,
                       dynamic_ncols=True, leave=not sys.stderr.isatty())  # in a file: the last state, no blanks
            t_data = t_epoch = t_print = time.perf_counter()
            data_time, images_since_print = 0.0, 0
            epoch_start_images = total_iters - epoch_iter * world  # images seen when this epoch began
            for batches_done, batch in enumerate(loader, 1):
                now = time.perf_counter()
                data_time += now - t_data
                model.note_position(epoch, total_iters)
                model.set_input(batch)
                model.optimize_parameters()
                if opt.compile and not compile_logged:  # the first step compiles the networks
                    compile_logged = True
                    log.info("first step: %.1f s, most of it torch.compile (later steps reuse the compiled code)",
                             time.perf_counter() - now)
                n = batch["A"].shape[0]
                epoch_iter += n
                total_iters += n * world
                images_since_print += n * world
                bar.update(1)

                if total_iters % opt.display_freq < images_per_step:
                    model.compute_visuals()
                    save_result = total_iters % opt.update_html_freq < images_per_step
                    dashboard.display_current_results(model.get_current_visuals(), epoch, total_iters, save_result)
                # every --print_freq images, and at the end of an epoch that had none (a short run still has its
                # loss curves); both depend on the images seen only, so a resumed run logs the same rows
                epoch_had_no_print = total_iters // opt.print_freq == epoch_start_images // opt.print_freq
                if total_iters % opt.print_freq < images_per_step or (batches_done == steps and epoch_had_no_print):
                    losses = model.get_current_losses()  # the one host synchronisation, at print time
                    model.check_finite()
                    elapsed = time.perf_counter() - t_print
                    per_image = elapsed / max(images_since_print, 1)
                    if rank == 0:
                        loss_log.append(dict(epoch=epoch, iters=epoch_iter, total_iters=total_iters, **losses,
                                             time_per_image=per_image,
                                             data_time=data_time / max(images_since_print, 1)))
                        bar.set_postfix({**{k: f"{v:.3f}" for k, v in losses.items()}, "img/s": f"{1 / per_image:.2f}"})
                        log.debug("epoch %d, %d images: %s", epoch, epoch_iter, losses)
                        dashboard.plot_current_losses(epoch, epoch_iter / max(len(dataset) / world, 1), losses,
                                                      total_iters)
                    t_print, data_time, images_since_print = time.perf_counter(), 0.0, 0
                if total_iters % opt.save_latest_freq < images_per_step:
                    log.info("saving the latest model (epoch %d, %d images in all)", epoch, total_iters)
                    save("latest", epoch, epoch_iter)
                    if opt.save_by_iter:
                        save(f"iter_{total_iters}", epoch, epoch_iter)
                if stop.agreed():
                    break
                t_data = time.perf_counter()
            bar.close()
            model.compute_visuals()  # every epoch, and a stop, gets a picture whatever --update_html_freq says
            dashboard.epoch_snapshot(model.get_current_visuals(), epoch, total_iters)
            if stop.agreed():
                save("latest", epoch, epoch_iter)
                log.info("stopped in epoch %d after %d of its images; the state is in %s/latest_train_state.pth",
                         epoch, epoch_iter, opt.run_dir)
                outcome = run_outcome.stopped(stop.signum, epoch, last_epoch,
                                              TrainOptions.resume_command(opt))
                return stop.exit_code

            model.on_epoch_end(epoch)
            row = model.pop_convergence()
            if row is not None and rank == 0:
                conv_log.append(dict(epoch=epoch, **row))
                q = convergence.quantity(opt.gan_mode)
                dashboard.plot_convergence(epoch, row[q.column])
                log.info("epoch %d: D_real %.4f, D_fake %.4f, %s %.4f%s", epoch, row["D_real"], row["D_fake"],
                         q.label, row[q.column], f" (equilibrium: {q.equilibrium_label})" if q.equilibrium else "")
            epoch_iter = 0
            epoch_seconds = time.perf_counter() - t_epoch
            log.info("end of epoch %d / %d: %.1f s, %.2f images/s", epoch, last_epoch, epoch_seconds,
                     steps * images_per_step / max(epoch_seconds, 1e-9))
            val_l1 = None
            if val_loader is not None and epoch % opt.val_freq == 0:
                val_l1 = validate(model, val_loader, epoch, val_log, dashboard, rank)
            model.update_learning_rate(val_l1)
            numbered = epoch % opt.save_epoch_freq == 0 or epoch == last_epoch
            if numbered or model.save_at_epoch_end:
                save("latest", epoch + 1, 0)
            if numbered:
                save(str(epoch), epoch + 1, 0)
            if stop.agreed():
                outcome = run_outcome.stopped(stop.signum, epoch, last_epoch,
                                              TrainOptions.resume_command(opt), within_epoch=False)
                break
        outcome = outcome or run_outcome.finished(epoch, last_epoch)
    except RuntimeError as err:
        where = (f"The newest checkpoint, '{saved['tag']}' (epoch {saved['epoch']}, {saved['images']} images), is "
                 f"intact: resume from it with --continue_train." if saved["tag"] else
                 "This process saved no checkpoint; an earlier one, if any, is intact.")
        if isinstance(err, TrainingDiverged):
            outcome = run_outcome.failed(f"{err} {where}")
            raise TrainingDiverged(f"{err} {where}") from None
        lost = distributed.lost_peer(err)
        if lost is None:
            outcome = run_outcome.failed(err)
            raise
        message = (f"another process of this run stopped ({lost}), so this one (rank {rank} of {world}) stops too; "
                   f"its own report, if it could give one, is above. {where}")
        outcome = run_outcome.failed(message)
        raise distributed.PeerLost(message) from None
    except BaseException as err:
        outcome = run_outcome.failed(err)
        raise
    finally:
        stop.restore()
        dashboard.close(outcome=outcome)
    return stop.exit_code if stop else 0


if __name__ == "__main__":
    run_main(main)
