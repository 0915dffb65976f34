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

from data import create_dataloader, create_dataset
from data.samplers import EpochSampler
from models import create_model
from options.train_options import TrainOptions
from util import convergence, distributed
from util.dashboard import Dashboard
from util.devices import seed_everything
from util.launch import launch_local_workers, local_processes
from util.cli import run_main
from util.run_logs import CsvLog, setup_logging

log = logging.getLogger("train")


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so a save is never cut short."""

    def __init__(self):
        self.signum = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

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
    if rank != 0:
        return
    previous = [float(r["l1"]) for r in val_log.rows()]
    val_log.append(dict(epoch=epoch, **scores))
    dashboard.plot_lines("validation", epoch, {k: v for k, v in scores.items() if k in ("l1", "psnr")})
    log.info("validation after epoch %d: L1 %.4f, PSNR %.2f dB", epoch, scores["l1"], scores["psnr"])
    if not previous or scores["l1"] < min(previous):
        model.save_networks("best")
        log.info("new best L1: saved best_net_*.pth")


def main(args=None):
    opt = TrainOptions().parse(args)
    setup_logging(os.path.join(opt.run_dir, "train.log"), distributed.rank(), opt.verbose)
    processes = local_processes(opt.gpu_ids, opt.nproc_per_node)
    if processes > 1:  # this process only starts and waits for the workers, which run this script again
        return launch_local_workers(os.path.abspath(__file__), sys.argv[1:] if args is None else args, processes)
    distributed.init_from_environment("cuda" if opt.gpu_ids and torch.cuda.is_available() else "cpu")
    rank, world = distributed.rank(), distributed.world_size()
    seed_everything(opt.seed, rank)
    stop = StopRequest()

    dataset = create_dataset(opt)
    opt.dataset_size = len(dataset)
    model = create_model(opt)
    model.setup(opt)
    resumed = model.resume_state or {}
    start_epoch = resumed.get("epoch", opt.epoch_count)
    epoch_iter = resumed.get("epoch_iter", 0)
    total_iters = resumed.get("total_iters", 0)

    sampler = EpochSampler(len(dataset), shuffle=not opt.serial_batches, seed=opt.seed, rank=rank,
                           world_size=world)
    loader = create_dataloader(dataset, opt, sampler=sampler, extras=model.sample_readers())
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

    def save(tag, epoch, done):
        model.save_training_state(tag, epoch, done, total_iters)
        distributed.barrier()

    epoch, compile_logged = start_epoch, False
    for epoch in range(start_epoch, last_epoch + 1):
        sampler.set_epoch(epoch, start=epoch_iter)
        model.train()
        steps = math.ceil(len(sampler) / opt.batch_size)
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{last_epoch}", unit="step", disable=rank != 0,
                   dynamic_ncols=True, leave=False)
        t_data = t_epoch = t_print = time.perf_counter()
        data_time, images_since_print = 0.0, 0
        for batch in loader:
            now = time.perf_counter()
            data_time += now - t_data
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
            if total_iters % opt.print_freq < images_per_step:
                losses = model.get_current_losses()  # the one host synchronisation, at print time
                elapsed = time.perf_counter() - t_print
                per_image = elapsed / max(images_since_print, 1)
                if rank == 0:
                    loss_log.append(dict(epoch=epoch, iters=epoch_iter, total_iters=total_iters, **losses,
                                         time_per_image=per_image, data_time=data_time / max(images_since_print, 1)))
                    bar.set_postfix({**{k: f"{v:.3f}" for k, v in losses.items()}, "img/s": f"{1 / per_image:.2f}"})
                    log.debug("epoch %d, %d images: %s", epoch, epoch_iter, losses)
                    dashboard.plot_current_losses(epoch, epoch_iter / max(len(dataset) / world, 1), losses, total_iters)
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
        model.compute_visuals()  # every epoch, and a stop, get a picture on the page whatever --update_html_freq says
        dashboard.epoch_snapshot(model.get_current_visuals(), epoch, total_iters)
        if stop.agreed():
            save("latest", epoch, epoch_iter)
            log.info("stopped in epoch %d after %d of its images; the state is in %s/latest_train_state.pth",
                     epoch, epoch_iter, opt.run_dir)
            dashboard.close()
            distributed.cleanup()
            return stop.exit_code

        model.on_epoch_end(epoch)
        row = model.pop_convergence()
        if row is not None and rank == 0:
            conv_log.append(dict(epoch=epoch, **row))
            q = convergence.quantity(opt.gan_mode)
            dashboard.plot_convergence(epoch, row[q.column])
            log.info("epoch %d: D_real %.4f, D_fake %.4f, %s %.4f%s", epoch, row["D_real"], row["D_fake"],
                     q.label, row[q.column], f" (equilibrium: {q.equilibrium_label})" if q.equilibrium else "")
        model.update_learning_rate()
        epoch_iter = 0
        epoch_seconds = time.perf_counter() - t_epoch
        log.info("end of epoch %d / %d: %.1f s, %.2f images/s", epoch, last_epoch, epoch_seconds,
                 steps * images_per_step / max(epoch_seconds, 1e-9))
        if val_loader is not None and epoch % opt.val_freq == 0:
            validate(model, val_loader, epoch, val_log, dashboard, rank)
        if epoch % opt.save_epoch_freq == 0 or epoch == last_epoch:
            save("latest", epoch + 1, 0)
            save(str(epoch), epoch + 1, 0)
        if stop.agreed():
            break
    dashboard.close()
    distributed.cleanup()
    return stop.exit_code if stop else 0


if __name__ == "__main__":
    run_main(main)
