"""Learning-rate policies of the pix2pix code base, as a closed form of the epoch number.

`linear` keeps --lr for epochs up to --n_epochs, then decays it linearly to zero over --n_epochs_decay (the
rate of epoch e is lr * (1 - max(0, e - n_epochs) / (n_epochs_decay + 1))); `step` multiplies by 0.1 every
--lr_decay_iters epochs; `cosine` follows half a cosine over all epochs; `plateau` multiplies by 0.2 when the
validation L1 has not improved for 5 validations. Because the epoch-based policies are closed forms, a resumed
run with other totals (a finished run extended with a larger --n_epochs) continues the schedule the new totals
define, never an epoch at the old schedule's final rate of zero.
"""
import logging
import math

from torch.optim import lr_scheduler

log = logging.getLogger(__name__)

LR_POLICIES = ("linear", "step", "plateau", "cosine")
# Options that define the schedule: a resume that changes one re-plans it.
PLAN_FLAGS = ("lr", "lr_policy", "n_epochs", "n_epochs_decay", "lr_decay_iters")


def lr_factor(opt, epoch, first_epoch):
    """The multiplier of --lr during epoch `epoch` of a run whose first epoch was `first_epoch`."""
    if opt.lr_policy == "linear":
        return 1.0 - max(0, epoch - opt.n_epochs) / float(opt.n_epochs_decay + 1)
    if opt.lr_policy == "step":
        return 0.1 ** ((epoch - first_epoch) // max(1, opt.lr_decay_iters))
    if opt.lr_policy == "cosine":
        total = max(1, opt.n_epochs + opt.n_epochs_decay)
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch - first_epoch, total) / total))
    raise ValueError(f"--lr_policy {opt.lr_policy!r} has no closed form")


def get_scheduler(optimizer, opt, first_epoch=None):
    """The scheduler of `optimizer` for --lr_policy; its step i sets the rate of epoch first_epoch + i."""
    if opt.lr_policy not in LR_POLICIES:
        raise ValueError(f"--lr_policy {opt.lr_policy!r} is not one of {', '.join(LR_POLICIES)}")
    if opt.lr_policy == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01, patience=5)
    first = opt.epoch_count if first_epoch is None else first_epoch
    return lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(opt, first + i, first))


def replan(schedulers, optimizers, opt, stored, resume_epoch):
    """After a resume loaded the schedulers' states: apply this run's schedule options at `resume_epoch`.

    `stored` are the options the checkpoint was saved with. Returns a line for the log when the plan changed.
    """
    first = int(stored.get("epoch_count", 1))
    changed = [f"--{k} {stored[k]} -> {getattr(opt, k)}" for k in PLAN_FLAGS
               if k in stored and stored[k] != getattr(opt, k)]
    if opt.lr_policy == "plateau":
        return "; ".join(changed) or None
    for index, (scheduler, optimizer) in enumerate(zip(schedulers, optimizers)):
        if not isinstance(scheduler, lr_scheduler.LambdaLR) or stored.get("lr_policy") != opt.lr_policy:
            scheduler = schedulers[index] = get_scheduler(optimizer, opt, first)
        scheduler.base_lrs = [opt.lr] * len(optimizer.param_groups)
        scheduler.last_epoch = resume_epoch - first
        rate = opt.lr * lr_factor(opt, resume_epoch, first)
        for group in optimizer.param_groups:
            group["initial_lr"], group["lr"] = opt.lr, rate
        scheduler._last_lr = [rate] * len(optimizer.param_groups)
    if not changed:
        return None
    last = opt.n_epochs + opt.n_epochs_decay
    return (f"the learning-rate schedule was re-planned for the new options ({'; '.join(changed)}): epoch "
            f"{resume_epoch} of {first}..{last} runs at {opt.lr * lr_factor(opt, resume_epoch, first):.3g}")
