"""BaseModel: the small pix2pix contract, plus everything models should not have to think about.

A model lists its networks in `model_names` (attributes `net<NAME>`), its losses in `loss_names`
(attributes `loss_<name>`) and its images in `visual_names`, and implements `set_input`, `forward` and
`optimize_parameters`. BaseModel owns devices, mixed precision, channels-last, torch.compile, DDP,
learning-rate schedules, checkpoints (one `<epoch>_net_<NAME>.pth` state_dict per network plus one
`<epoch>_train_state.pth` with everything a resume needs) and the per-epoch convergence statistics.
"""
import logging
import os
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict

import torch

from models import inference, memory, schedulers
from models.exportable import ExportableModel
from models.image_pool import ImagePool
from models.networks.generators import generator_size_rule
from util.command_line.flags import architecture_flags
from util.process import distributed
from util.process.devices import amp_dtype, autocast, fused_adam_devices, resolve_device
from util.process.distributed import unwrap
from util.run import convergence
from util.run.checkpoint import ModelCheckpoints

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss or weight became NaN or infinite; the message says where and what to try."""

    @classmethod
    def at(cls, what, opt):
        amp = getattr(opt, "amp", "none")
        tries = [f"a lower --lr (this run: {getattr(opt, 'lr', '?')})"]
        if amp != "none":
            tries.append(f"--amp none (this run: --amp {amp})")
        tries.append("another --gan_mode" if getattr(opt, "gan_mode", "vanilla") != "vanilla" else
                     "a smaller --lambda_L1 or --gan_mode lsgan")
        return cls(f"training diverged: {what}. Nothing non-finite was saved. Try {', '.join(tries)}.")


class BaseModel(ModelCheckpoints, ExportableModel, ABC):
    """Base class of every model family."""

    # Older checkpoint names a network may be stored under, e.g. {'W': ['T']} for released ATME weights.
    checkpoint_aliases = {}

    @property
    def architecture_flags(self):
        """The flags that define this model's networks (declared with lifetime=ARCHITECTURE where each flag is
        declared; read from the options' flag table)."""
        return architecture_flags(self.opt)

    # Flags of the common groups (options/) that this model does not use: they are refused for it and hidden
    # from its --help, never accepted and ignored.
    unused_flags = ()
    # The attribute set_input() fills with the input the translator reads at test time.
    test_input_name = "real_A"

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
        self.resume_state = None  # filled by setup() on --continue_train
        self._scalers = {}
        self._conv_sum = None  # on-device [sum D_real, sum D_fake, count]
        self._first_nonfinite = None  # on-device [epoch, images, optimiser index, loss] of the first bad step
        pool_size = getattr(opt, "pool_size", 0) if self.isTrain else 0
        self.fake_pool = ImagePool(pool_size) if pool_size > 0 else None
        self._position = (0, 0)
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
            if getattr(opt, "gan_mode", None) == "wgangp" and "D_real" in self.loss_names:
                self.loss_names.append("D_gp")  # the gradient penalty, logged with D's losses
            self.schedulers = [schedulers.get_scheduler(o, opt) for o in self.optimizers]
            if opt.continue_train:
                self.resume_state = self.load_training_state(opt.epoch if not opt.load_iter else f"iter_{opt.load_iter}")
        else:
            self.load_networks(opt.epoch if not opt.load_iter else f"iter_{opt.load_iter}")
            if getattr(opt, "tile", 0):  # refused before any result is written
                inference.check_tiles(self.size_rule(), opt.tile, self.tile_overlap())
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
        """Without gradients: the translator over the input at any size (test.py; see `run_translator`), or
        forward() while training (validation); then compute_visuals()."""
        with torch.no_grad(), self.autocast():
            if self.isTrain:
                self.forward()
            else:
                self.run_translator()
            self.compute_visuals()

    # ------------------------------------------------------------------ the test-time path
    def translator(self):
        """The callable that test.py runs: translate(x) -> {visual name: tensor}.

        x is a batch (B, input_nc, H, W) in [-1, 1] whose H and W suit `size_rule()` (test.py pads the image
        to such a size); every output is (B, C, H, W) with the same H and W, in [-1, 1], named after a visual
        (at least `fake_B`, or what the model shows instead). It runs under no_grad and autocast, is called once
        per batch or tile, and may draw test-time randomness (ATME's D map, made for this size; SEGAN's codes
        are fixed when the model is built). A runner with the same contract (e.g. an exported graph) can stand
        in for it: return it from an override of this method.
        """
        raise NotImplementedError(f"{type(self).__name__} has no translator(); see models/template_model.py")

    def size_rule(self):
        """The `inference.SizeRule` of image sides the translator takes (default: the generator's)."""
        rule = generator_size_rule(self.netG)
        return inference.SizeRule(*rule) if rule else inference.SizeRule(1, 1, "the generator")

    def tile_overlap(self):
        """--tile_overlap, by default a quarter of --tile."""
        overlap = getattr(self.opt, "tile_overlap", None)
        return self.opt.tile // 4 if overlap is None else overlap

    # A runner with the translator's contract that stands in for it (test.py --backend: the exported graph).
    runtime_translator = None

    def memory_rates(self):
        """(peak bytes per padded input pixel, output bytes per pixel) of the translator, measured once on a small
        input (models.memory.probe), with the random state the translation draws from put back afterwards."""
        if getattr(self, "_memory_rates", None) is None:
            side = inference.padded_side(memory.PROBE_SIDE, self.size_rule())
            x = torch.zeros(1, getattr(self.opt, "input_nc", 3), side, side, device=self.device)
            generators = [g for g in vars(self).values() if isinstance(g, torch.Generator)]
            states = [g.get_state() for g in generators]
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), self.autocast():
                peak, outputs = memory.probe(self.translator(), self.to_device(x))
            for generator, state in zip(generators, states):
                generator.set_state(state)
            self._memory_rates = (peak / side ** 2, outputs / side ** 2)
        return self._memory_rates

    def inference_memory(self, height, width, batch=1):
        """Estimated peak bytes of the translator on a batch of inputs padded to (height, width): the measured
        peak per pixel (convolution activations grow with the area) times the area and the batch. A model whose
        networks hold more (ATME's attention) adds its term."""
        return int(self.memory_rates()[0] * height * width * batch)

    def run_translator(self):
        """Run the translator (or `runtime_translator`, when set) over the input: padded to the size rule and
        cropped back (or tiled with --tile), so each output has the input's height and width; the outputs become
        attributes. An input whose estimated memory exceeds what the device has is refused first
        (models.memory.MemoryRefusal, naming the --tile that fits)."""
        opt = self.opt
        tile = getattr(opt, "tile", 0)
        x = getattr(self, self.test_input_name)
        memory.check_memory(self, *x.shape[-2:], x.shape[0], tile, self.tile_overlap() if tile else 0)
        outputs = inference.run(self.runtime_translator or self.translator(), getattr(self, self.test_input_name), self.size_rule(),
                                pad_mode=getattr(opt, "pad_mode", "reflect"), tile=tile,
                                overlap=self.tile_overlap() if tile else None)
        for name, tensor in outputs.items():
            setattr(self, name, tensor)

    def compute_visuals(self):
        """Extra visuals for the dashboard and HTML pages (optional)."""

    def get_image_paths(self):
        return self.image_paths

    # ------------------------------------------------------------------ optimisation helpers
    def make_adam(self, params, lr=None, betas=None):
        """Adam with the fused kernel where torch has one for the device (CUDA and the CPU among them), else the
        foreach one. On the CPU the foreach kernel loops over the tensors op by op (five passes over every
        parameter); the fused one makes one."""
        lr = self.opt.lr if lr is None else lr
        betas = (self.opt.beta1, 0.999) if betas is None else betas
        fast = {"fused": True} if self.device.type in fused_adam_devices() else {"foreach": True}
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
        self._watch_finite(loss, optimizer)
        self.backward(loss, optimizer)
        self.step(optimizer)
        return loss

    def d_step_options(self):
        """What every D step takes from the options: the history of generated samples (--pool_size) and the
        gradient penalty's weight (--lambda_gp, used with --gan_mode wgangp)."""
        return {"fake_pool": self.fake_pool, "lambda_gp": getattr(self.opt, "lambda_gp", 10.0)}

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

    def update_learning_rate(self, val_l1=None):
        """Step the schedules at the end of an epoch. `plateau` steps on the validation L1 of the epochs that ran
        a validation (`val_l1`) and keeps the rate on the others."""
        old = self.optimizers[0].param_groups[0]["lr"]
        with warnings.catch_warnings():
            # A resume that lands at the end of an epoch (stopped between its last step and its save) steps the
            # schedule before this process's first optimizer step; torch then warns that the schedule's first value
            # is skipped, which is not so here: the schedule is counted in epochs and restored from the run.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before",
                                    category=UserWarning)
            for scheduler in self.schedulers:
                if self.opt.lr_policy != "plateau":
                    scheduler.step()
                elif val_l1 is not None:
                    scheduler.step(val_l1)
        new = self.optimizers[0].param_groups[0]["lr"]
        (log.info if new != old else log.debug)("learning rate %.7f -> %.7f%s", old, new,
                 f" (validation L1 {val_l1:.4f})" if val_l1 is not None and self.opt.lr_policy == "plateau" else "")

    def replan_schedulers(self, stored, epoch):
        """After a resume loaded the schedulers' states (util.run.checkpoint): this run's schedule options from
        `epoch` on; `stored` are the options the checkpoint was trained with. Returns what changed, or None."""
        return schedulers.replan(self.schedulers, self.optimizers, self.opt, stored, epoch)

    # ------------------------------------------------------------------ divergence
    def note_position(self, epoch, images):
        """Where training is (epoch, images in all), recorded with the first non-finite loss."""
        self._position = (int(epoch), int(images))

    def _watch_finite(self, loss, optimizer):
        """Remember, on the device (no host sync), the first step whose loss was not finite. With fp16 the
        gradient scaler skips steps whose scaled gradients overflow; those are not divergence and are left to it,
        and only the weights are checked (`check_finite(weights=True)`)."""
        if self.amp_dtype is torch.float16:
            return
        bad = ~torch.isfinite(loss.detach()).all()
        if self._first_nonfinite is None:
            self._first_nonfinite = torch.full((4,), -1.0, dtype=torch.float64, device=bad.device)
        first = self._first_nonfinite
        new = bad & (first[0] < 0)
        epoch, images = self._position
        index = next(i for i, o in enumerate(self.optimizers) if o is optimizer)
        self._first_nonfinite = torch.stack([torch.where(new, float(epoch), first[0]),
                                             torch.where(new, float(images), first[1]),
                                             torch.where(new, float(index), first[2]),
                                             torch.where(new, loss.detach().float().reshape(-1)[0].double(), first[3])])

    def check_finite(self, weights=False):
        """Raise `TrainingDiverged` when a loss has been non-finite since training started here or, with `weights`,
        when a network's weights are (call it before every save: nothing non-finite is ever saved). Syncs.

        Under DDP every rank calls it at the same point, and a divergence on any rank raises on all of them with
        the same message (a rank that went on alone would wait in the next collective until the timeout)."""
        what = distributed.first_report(self._divergence(weights))
        if what:
            raise TrainingDiverged.at(what, self.opt)

    def _divergence(self, weights):
        """What is non-finite in this process (see `check_finite`), or None."""
        if self._first_nonfinite is not None:
            epoch, images, index, value = self._first_nonfinite.tolist()
            if epoch >= 0:
                return (f"the loss of the {self._optimizer_name(int(index))} step was {value} at epoch {int(epoch)}, "
                        f"{int(images)} images into training")
        if weights:
            for name, net in self.networks():
                for key, param in unwrap(net).state_dict().items():
                    if param.is_floating_point() and not bool(torch.isfinite(param).all()):
                        return f"network {name}'s weight {key} holds non-finite values"
        return None

    def _optimizer_name(self, index):
        for attr, value in vars(self).items():
            if attr.startswith("optimizer_") and value is self.optimizers[index]:
                return attr[len("optimizer_"):]
        return f"optimiser {index}"

    # ------------------------------------------------------------------ convergence statistics
    def accumulate_convergence(self, loss_D_real, loss_D_fake):
        """Add one step's D_real/D_fake losses to the epoch sums, on the device (no host sync)."""
        step = torch.stack([loss_D_real.detach().float(), loss_D_fake.detach().float(),
                            torch.ones((), device=loss_D_real.device)])
        self._conv_sum = step if self._conv_sum is None else self._conv_sum + step

    def pop_convergence(self):
        """The epoch's convergence.csv row: the means of D_real and D_fake and what they measure for this run's
        --gan_mode (util.run.convergence); None when no D step ran."""
        if self._conv_sum is None:
            return None
        totals = distributed.all_reduce_sum(self._conv_sum)
        self._conv_sum = None
        d_real, d_fake, count = (float(v) for v in totals.cpu())
        return convergence.record(self.opt.gan_mode, d_real / count, d_fake / count)

    # ------------------------------------------------------------------ hooks for the trainer
    # A model whose on-disk state changes meaning at the epoch boundary (ATME's pool) needs a checkpoint at
    # every epoch end, so that a resume never pairs one epoch's weights with another epoch's state.
    save_at_epoch_end = False

    def attach_run_state(self, opt):
        """Open or create the model's state in the run folder (called once the run owns its folder, after any
        resume state was loaded)."""

    def sample_readers(self):
        """name -> picklable callable(index, epoch) whose result the data loader adds to each sample."""
        return {}

    def on_epoch_start(self, epoch):
        """Called before an epoch's first step (also when a resume starts mid-epoch)."""

    def on_epoch_end(self, epoch):
        """Called once per epoch after its last step (e.g. to flush on-disk state)."""

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
