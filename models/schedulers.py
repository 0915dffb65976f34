"""Learning-rate policies of the pix2pix code base; `linear` keeps the rate for --n_epochs, then decays
it linearly to zero over --n_epochs_decay."""
from torch.optim import lr_scheduler


def linear_factor(epoch_index, epoch_count, n_epochs, n_epochs_decay):
    """Multiplier for the epoch that follows `epoch_index` scheduler steps (epochs start at epoch_count)."""
    return 1.0 - max(0, epoch_index + epoch_count - n_epochs) / float(n_epochs_decay + 1)


def get_scheduler(optimizer, opt):
    if opt.lr_policy == "linear":
        return lr_scheduler.LambdaLR(
            optimizer, lambda e: linear_factor(e, opt.epoch_count, opt.n_epochs, opt.n_epochs_decay))
    if opt.lr_policy == "step":
        return lr_scheduler.StepLR(optimizer, step_size=opt.lr_decay_iters, gamma=0.1)
    if opt.lr_policy == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, threshold=0.01, patience=5)
    if opt.lr_policy == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, opt.n_epochs + opt.n_epochs_decay), eta_min=0)
    raise ValueError(f"--lr_policy {opt.lr_policy!r} is not one of linear, step, plateau, cosine")
