"""BaseModel: the small pix2pix contract, plus everything models should not have to think about.

A model lists its networks in `model_names` (attributes `net<NAME>`), its losses in `loss_names`
(attributes `loss_<name>`) and its images in `visual_names`, and implements `set_input`, `forward` and
`optimize_parameters`. BaseModel owns devices, mixed precision, channels-last, torch.compile, DDP,
learning-rate schedules, checkpoints (one `<epoch>_net_<NAME>.pth` state_dict per network plus one
`<epoch>_train_state.pth` with everything a resume needs) and the per-epoch convergence statistics.
"""
import logging
import os
from abc import ABC, abstractmethod
from collections import OrderedDict

import torch

from models import schedulers
from models.networks.layers import unwrap
from util import convergence, distributed
from util.checkpoint import atomic_save, describe_mismatch, layout_mismatch, load_file
from util.devices import amp_dtype, autocast, resolve_device, rng_state, set_rng_state

log = logging.getLogger(__name__)


class BaseModel(ABC):
    """Base class of every model family."""

    # Older checkpoint names a network may be stored under, e.g. {'W': ['T']} for released ATME weights.
    checkpoint_aliases = {}
    # Flags that define the networks: a resume must not change them, and test.py takes them from the run's
    # stored options (given again with another value they are an error). Subclasses extend the tuple.
    architecture_flags = ("model", "input_nc", "output_nc", "ngf", "ndf", "netG", "netD", "n_layers_D", "norm",
                          "no_dropout", "direction")

    def __init__(self, opt):
        self.opt = opt
        self.isTrain = opt.isTrain
        self.device = resolve_device(opt.gpu_ids, distributed.local_rank())
        self.save_dir = os.path.join(opt.checkpoints_dir, opt.name)
        self.amp_dtype = amp_dtype(getattr(opt, "amp", "none"), self.device)
        self.memory_format = torch.channels_last if getattr(opt, "channels_last", False) else torch.contiguous_format
        self.loss_names, self.model_names, self.visual_names = [], [], []
        self.optimizers, self.schedulers = [], []
        self.image_paths = []
        self.metric = 0.0  # for the 'plateau' learning-rate policy
        self.resume_state = None  # filled by setup() on --continue_train
        self._scalers = {}
        self._conv_sum = None  # on-device [sum D_real, sum D_fake, count]
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = True

    @staticmethod
    def modify_commandline_options(parser, is_train):
        """Add model-specific flags (in an argument group of the model's own) and change defaults."""
        return parser

    @abstractmethod
    def set_input(self, batch):
        """Unpack a batch from the data loader onto the device."""

    @abstractmethod
    def forward(self):
        """Run the generator(s); used by optimize_parameters() and test()."""

    @abstractmethod
    def optimize_parameters(self):
        """One training step: losses, gradients, optimiser steps."""

    # ------------------------------------------------------------------ setup
    def networks(self):
        return [(name, getattr(self, "net" + name)) for name in self.model_names]

    def setup(self, opt):
        """Place networks, create schedulers, load weights (test) or the training state (resume)."""
        for name, net in self.networks():
            net.to(self.device, memory_format=self.memory_format)
        if self.isTrain:
            self.schedulers = [schedulers.get_scheduler(o, opt) for o in self.optimizers]
            if opt.continue_train:
                self.resume_state = self.load_training_state(opt.epoch if not opt.load_iter else f"iter_{opt.load_iter}")
        else:
            self.load_networks(opt.epoch if not opt.load_iter else f"iter_{opt.load_iter}")
        if distributed.is_distributed() and self.isTrain:
            self.wrap_distributed()
        if getattr(opt, "compile", False):
            for name, net in self.networks():
                setattr(self, "net" + name, torch.compile(net))
        self.print_networks(opt.verbose)

    def wrap_distributed(self):
        """DistributedDataParallel around every trainable network (SyncBatchNorm with batch norm on CUDA)."""
        from torch.nn.parallel import DistributedDataParallel as DDP
        batch_norm = getattr(self.opt, "norm", None) == "batch"
        if batch_norm and self.device.type != "cuda" and distributed.is_main_process():
            # DDP refuses SyncBatchNorm on the CPU; each process then normalises with its own batch's statistics.
            log.warning("--norm batch on CPU processes: batch statistics are per process (--batch_size images), "
                        "not synchronised; SyncBatchNorm needs CUDA")
        for name, net in self.networks():
            if not any(p.requires_grad for p in net.parameters()):
                continue
            if batch_norm and self.device.type == "cuda":
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            ids = [self.device.index] if self.device.type == "cuda" else None
            setattr(self, "net" + name, DDP(net, device_ids=ids, broadcast_buffers=False))

    def to_device(self, tensor):
        """Move an input batch to the device in the configured memory format, without blocking."""
        tensor = tensor.to(self.device, non_blocking=True)
        if tensor.dim() == 4 and self.memory_format is torch.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def eval(self):
        for _, net in self.networks():
            net.eval()

    def train(self):
        for _, net in self.networks():
            net.train()

    def test(self):
        """Forward pass without gradients, then compute_visuals()."""
        with torch.no_grad(), self.autocast():
            self.forward()
            self.compute_visuals()

    def compute_visuals(self):
        """Extra visuals for the dashboard and HTML pages (optional)."""

    def get_image_paths(self):
        return self.image_paths

    # ------------------------------------------------------------------ optimisation helpers
    def make_adam(self, params, lr=None, betas=None):
        """Adam with the fused kernel on CUDA and the foreach one elsewhere."""
        lr = self.opt.lr if lr is None else lr
        betas = (self.opt.beta1, 0.999) if betas is None else betas
        fast = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        return torch.optim.Adam(params, lr=lr, betas=betas, **fast)

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def backward(self, loss, optimizer):
        """loss.backward(), scaled when training in fp16."""
        if self.amp_dtype is torch.float16:
            scaler = self._scalers.setdefault(id(optimizer), torch.amp.GradScaler(self.device.type))
            scaler.scale(loss).backward()
        else:
            loss.backward()

    def step(self, optimizer):
        """optimizer.step() (through the gradient scaler in fp16) and zero the gradients."""
        scaler = self._scalers.get(id(optimizer))
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self, compute_loss, optimizer):
        """`compute_loss()` under autocast, then backward and step; returns the loss."""
        with self.autocast():
            loss = compute_loss()
        self.backward(loss, optimizer)
        self.step(optimizer)
        return loss

    def update_D(self):
        """One step of `netD` on `backward_D()` with `optimizer_D`, then D frozen for the generator's step.

        `backward_D` sets `loss_D_real` and `loss_D_fake`; their epoch means feed convergence.csv.
        """
        self.set_requires_grad(self.netD, True)
        self.optimizer_step(self.backward_D, self.optimizer_D)
        self.accumulate_convergence(self.loss_D_real, self.loss_D_fake)
        self.set_requires_grad(self.netD, False)

    @staticmethod
    def set_requires_grad(nets, requires_grad=False):
        """Freeze or unfreeze networks. A frozen DDP network also stops preparing a gradient reduction in its
        forward: the generator step runs D without producing D gradients, and DDP would otherwise wait for
        them and fail at D's next forward."""
        for net in nets if isinstance(nets, (list, tuple)) else [nets]:
            if net is None:
                continue
            for p in net.parameters():
                p.requires_grad_(requires_grad)
            inner = getattr(net, "_orig_mod", net)  # torch.compile around DDP
            if hasattr(inner, "require_backward_grad_sync"):
                inner.require_backward_grad_sync = requires_grad

    def update_learning_rate(self):
        old = self.optimizers[0].param_groups[0]["lr"]
        for scheduler in self.schedulers:
            if self.opt.lr_policy == "plateau":
                scheduler.step(self.metric)
            else:
                scheduler.step()
        new = self.optimizers[0].param_groups[0]["lr"]
        log.info("learning rate %.7f -> %.7f", old, new)

    # ------------------------------------------------------------------ convergence statistics
    def accumulate_convergence(self, loss_D_real, loss_D_fake):
        """Add one step's D_real/D_fake losses to the epoch sums, on the device (no host sync)."""
        step = torch.stack([loss_D_real.detach().float(), loss_D_fake.detach().float(),
                            torch.ones((), device=loss_D_real.device)])
        self._conv_sum = step if self._conv_sum is None else self._conv_sum + step

    def pop_convergence(self):
        """The epoch's convergence.csv row: the means of D_real and D_fake and what they measure for this run's
        --gan_mode (util.convergence); None when no D step ran."""
        if self._conv_sum is None:
            return None
        totals = distributed.all_reduce_sum(self._conv_sum)
        self._conv_sum = None
        d_real, d_fake, count = (float(v) for v in totals.cpu())
        return convergence.record(self.opt.gan_mode, d_real / count, d_fake / count)

    # ------------------------------------------------------------------ hooks for the trainer
    def sample_readers(self):
        """name -> picklable callable(index) whose result the data loader adds to each sample."""
        return {}

    def on_epoch_end(self, epoch):
        """Called once per epoch after its last step (e.g. to flush on-disk state)."""

    def extra_state(self):
        """Model-specific state for the training-state file."""
        return {}

    def load_extra_state(self, state):
        pass

    # ------------------------------------------------------------------ reporting
    def get_current_visuals(self):
        return OrderedDict((name, getattr(self, name)) for name in self.visual_names
                           if isinstance(getattr(self, name, None), torch.Tensor))

    def get_current_losses(self):
        """Losses as floats (averaged over ranks). This synchronises: call it at print time only."""
        names = [n for n in self.loss_names if isinstance(getattr(self, "loss_" + n, None), torch.Tensor)]
        if not names:
            return OrderedDict()
        values = torch.stack([getattr(self, "loss_" + n).detach().float() for n in names])
        values = distributed.all_reduce_mean(values)
        return OrderedDict(zip(names, values.tolist()))

    def print_networks(self, verbose=False):
        for name, net in self.networks():
            count = sum(p.numel() for p in unwrap(net).parameters())
            if verbose:
                log.info("%s", unwrap(net))
            log.info("network %s: %.3f M parameters", name, count / 1e6)

    # ------------------------------------------------------------------ checkpoints
    def _path(self, tag, name):
        return os.path.join(self.save_dir, f"{tag}_net_{name}.pth")

    def save_networks(self, tag):
        """`<tag>_net_<NAME>.pth` per network: plain CPU state_dicts, written atomically (rank 0 only)."""
        if not distributed.is_main_process():
            return
        for name, net in self.networks():
            state = {k: v.detach().cpu().contiguous() for k, v in unwrap(net).state_dict().items()}
            atomic_save(state, self._path(tag, name))

    def _find_network_file(self, tag, name):
        for candidate in [name] + list(self.checkpoint_aliases.get(name, [])):
            path = self._path(tag, candidate)
            if os.path.isfile(path):
                return path
        return None

    def load_networks(self, tag):
        for name, net in self.networks():
            path = self._find_network_file(tag, name)
            if path is None:
                raise FileNotFoundError(
                    f"no checkpoint {self._path(tag, name)} for network {name}; the run directory holds: "
                    f"{', '.join(sorted(f for f in os.listdir(self.save_dir) if f.endswith('.pth'))) or 'nothing'}"
                    if os.path.isdir(self.save_dir) else
                    f"run directory {self.save_dir} does not exist: check --name and --checkpoints_dir")
            self.load_network_state(name, net, load_file(path, f"network {name} checkpoint"), path)
            log.info("loaded %s", path)

    def load_network_state(self, name, net, state, path):
        """Load `state` into `net`, explaining any key or shape mismatch."""
        state = self.convert_checkpoint(name, state)
        target = unwrap(net)
        mismatch = layout_mismatch(target, state)
        if mismatch:
            stored = os.path.join(self.save_dir, "train_opt.txt")
            raise RuntimeError(
                f"{path} does not fit network {name} as built from the current options: "
                f"{describe_mismatch(mismatch)}. The options the run was trained with "
                f"are in {stored}{'' if os.path.isfile(stored) else ' (missing)'}; pass the same architecture "
                f"flags (--netG, --netD, --ngf, --ndf, --norm, --input_nc, --output_nc, model flags).")
        target.load_state_dict(state)

    def convert_checkpoint(self, name, state):
        """Hook: rename keys of older checkpoint layouts."""
        return state

    def save_training_state(self, tag, epoch, epoch_iter, total_iters):
        """Everything a resume needs, in one file: networks, optimisers, schedulers, scalers, counters, RNG."""
        if not distributed.is_main_process():
            return
        self.save_networks(tag)
        state = {
            "epoch": epoch, "epoch_iter": epoch_iter, "total_iters": total_iters,
            "networks": {n: unwrap(net).state_dict() for n, net in self.networks()},
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "scalers": [s.state_dict() for s in self._scalers.values()],
            "rng": rng_state(), "model": self.extra_state(),
            "convergence": None if self._conv_sum is None else self._conv_sum.detach().cpu(),
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.opt).items()},
        }
        atomic_save(state, os.path.join(self.save_dir, f"{tag}_train_state.pth"))

    def load_training_state(self, tag):
        path = os.path.join(self.save_dir, f"{tag}_train_state.pth")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--continue_train: no training state {path}. Start without "
                                    f"--continue_train, or choose --epoch from the *_train_state.pth files in "
                                    f"{self.save_dir}.")
        state = load_file(path, "training state")
        self._check_architecture(state.get("options", {}), path)
        for name, net in self.networks():
            self.load_network_state(name, net, state["networks"][name], path)
        if len(state["optimizers"]) != len(self.optimizers):
            raise RuntimeError(f"{path} holds {len(state['optimizers'])} optimisers, the model has "
                               f"{len(self.optimizers)}: the model's options changed since the checkpoint")
        for opt_obj, saved in zip(self.optimizers, state["optimizers"]):
            opt_obj.load_state_dict(saved)
        for sched, saved in zip(self.schedulers, state["schedulers"]):
            sched.load_state_dict(saved)
        if self.amp_dtype is torch.float16:
            for opt_obj, saved in zip(self.optimizers, state.get("scalers", [])):
                scaler = self._scalers.setdefault(id(opt_obj), torch.amp.GradScaler(self.device.type))
                scaler.load_state_dict(saved)
        set_rng_state(state["rng"])
        self.load_extra_state(state.get("model", {}))
        if state.get("convergence") is not None:  # a mid-epoch resume keeps the epoch's sums
            self._conv_sum = state["convergence"].to(self.device)
        log.info("resuming from %s: epoch %d, %d images into it, %d images in all",
                 path, state["epoch"], state["epoch_iter"], state["total_iters"])
        return {k: state[k] for k in ("epoch", "epoch_iter", "total_iters")}

    def _check_architecture(self, stored, path):
        changed = []
        for key in self.architecture_flags:
            if key in stored and hasattr(self.opt, key):
                now = getattr(self.opt, key)
                was = tuple(stored[key]) if isinstance(stored[key], list) else stored[key]
                if now != was:
                    changed.append(f"--{key} is {now}, the checkpoint has {was}")
        if changed:
            raise ValueError(f"--continue_train would change the architecture of {path}: {'; '.join(changed)}. "
                             f"Use the stored values or start a new --name.")
