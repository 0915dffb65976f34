"""ATME (Solano-Carrillo et al., 2023): the generator hears the discriminator's decision of the previous epoch.

Per image: W = W(D_{t-1}) (Fig. 2 g), x_t = x * (1 + W) (Eq. 6), t = mean(W) (Eq. 7), fake = G(x_t, t) with
the diffusion U-Net of Fig. 2 b. D is the pix2pix PatchGAN, conditioned on the clean input. After each
generator step the map D(x, fake) used for its loss is stored for those images in the on-disk pool
(`<run_dir>/disc_pool.npy`), to be read one epoch later. At test time D_{t-1} = 0.5 + std * N(0, 1).
Loss: GAN + lambda_L1 * L1, as in pix2pix. Paper defaults: d = 64, R = (1, 2, 4, 8), instance norm,
basic PatchGAN, vanilla GAN loss, Adam(2e-4, beta1 0.5).

`--no_feedback` is the ablation that isolates the feedback: the same generator and training, but G never hears
D: no pool, no W, x_t = x and a constant time t = 0 (what W = 0 would give), in training and at test time.
"""
import itertools
import logging
import os

import numpy as np
import torch
from einops import reduce

from models.atme import graph as atme_graph
from models.atme import node_pool
from models.atme.blocks import WBlock
from models.atme.diffusion_unet import DiffusionUNet
from models.atme.pool import EpochPool, test_time_maps
from models.atme.pool_check import RECOVER as POOL_RECOVER, PoolError, check_run_pool
from models.base_model import BaseModel
from models.inference import SizeRule
from models.networks.discriminators import define_D, patch_output_size
from models.networks.layers import init_weights
from models.networks.losses import GANLoss, conditional_d_losses, conditional_g_losses
from util.arithmetic import round_up
from util.command_line.arg_types import add_bool_flag, int_tuple
from util.process import distributed
from util.process.distributed import unwrap
from util.run.checkpoint import strip_module_prefix
from util.views.image_utils import save_image, tensor2im
from util.command_line.flags import ARCHITECTURE, DATA, INVOCATION, LOSS, RUN

log = logging.getLogger(__name__)


def validation_seed(seed, epoch):
    """The seed of the test-time maps that validation after `epoch` uses."""
    entropy = [0 if seed is None else int(seed), int(epoch)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


class AtmeModel(BaseModel):
    """ATME: diffusion U-Net generator with the W block, PatchGAN discriminator, per-image D pool."""

    # The generator is the diffusion U-Net (--dim, --dim_mults, ...), not one of pix2pix's.
    unused_flags = ("netG", "ngf", "no_dropout")
    # The checkpoints published with the paper call W "T".
    checkpoint_aliases = {"W": ["T"]}

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(norm="instance", netD="basic", dataset_mode="aligned")
        group = parser.add_argument_group("ATME")
        group.add_argument("--dim", lifetime=ARCHITECTURE, type=int, default=64, help="embedding dimension d of the generator U-Net")
        group.add_argument("--dim_mults", lifetime=ARCHITECTURE, type=int_tuple, default=(1, 2, 4, 8),
                           help="channel multipliers R per level, e.g. 1,2,4,8 (image sides must be multiples "
                                "of 2 ** (levels - 1))")
        group.add_argument("--init_dim", lifetime=ARCHITECTURE, type=int, default=64, help="channels after the generator's first conv")
        group.add_argument("--groups", lifetime=ARCHITECTURE, type=int, default=8,
                           help="GroupNorm groups in the generator's blocks (W keeps 8, as released)")
        group.add_argument("--time_dim_mult", lifetime=ARCHITECTURE, type=int, default=4, help="time-MLP width = dim x this")
        add_bool_flag(group, "--learned_sinusoidal_cond", lifetime=ARCHITECTURE, help="learned Fourier features for the time t")
        add_bool_flag(group, "--random_fourier_features", lifetime=ARCHITECTURE, help="fixed random Fourier features for the time t")
        group.add_argument("--learned_sinusoidal_dim", lifetime=ARCHITECTURE, type=int, default=16,
                           help="twice the number of learned/random Fourier frequencies")
        group.add_argument("--pool_test_std", lifetime=DATA, type=float, default=0.001,
                           help="test time: D_{t-1} = 0.5 + this * N(0, 1)")
        add_bool_flag(group, "--no_feedback", lifetime=ARCHITECTURE,
                      help="ablation: the generator never hears the discriminator (no pool, no W, x_t = x, "
                           "constant time t = 0)")
        if is_train:
            parser.set_defaults(pool_size=0, gan_mode="vanilla", lr=0.0002, beta1=0.5)
            group.add_argument("--lambda_L1", lifetime=RUN, type=float, default=100.0, help="weight of the L1 loss")
            group.add_argument("--pool_stores", lifetime=LOSS, choices=("prob", "logits"), default="prob",
                               help="what the discriminator pool keeps: sigmoid(D) (the paper's reading) or raw "
                                    "logits (the reference code)")
            add_bool_flag(group, "--reset_pool", lifetime=INVOCATION,
                          help="with --continue_train: start the discriminator pool afresh (uniform noise) instead "
                               "of reading the run's pool, e.g. when its files are damaged; the run then departs "
                               "from an uninterrupted one")
            add_bool_flag(group, "--keep_epoch_pools", lifetime=RUN, default=True,
                          help="keep a copy of the discriminator pool with every <epoch> checkpoint, so that "
                               "--continue_train --epoch N resumes exactly (one map per image each: 3.4 GB at a "
                               "million 30x30 maps)")
            group.add_argument("--n_save_noisy", lifetime=RUN, type=int, default=0,
                               help="every epoch, save D_t and W_t of this many fixed training images under "
                                    "<run_dir>/noisy_history/")
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.feedback = not opt.no_feedback  # False: the ablation, no W and no pool
        self.loss_names = ["G_GAN", "G_L1", "D_real", "D_fake"]
        if self.feedback:
            self.visual_names = ["real_A", "W", "noisy_A", "fake_B", "real_B"]
            self.model_names = ["G", "W", "D"] if self.isTrain else ["G", "W"]
        else:
            self.visual_names = ["real_A", "fake_B", "real_B"]
            self.model_names = ["G", "D"] if self.isTrain else ["G"]
        self.netG = init_weights(
            DiffusionUNet(dim=opt.dim, init_dim=opt.init_dim, out_dim=opt.output_nc, dim_mults=opt.dim_mults,
                          channels=opt.input_nc, resnet_block_groups=opt.groups,
                          learned_sinusoidal_cond=opt.learned_sinusoidal_cond,
                          random_fourier_features=opt.random_fourier_features,
                          learned_sinusoidal_dim=opt.learned_sinusoidal_dim, time_dim_mult=opt.time_dim_mult),
            opt.init_type, opt.init_gain)
        self.netW = init_weights(WBlock(), opt.init_type, opt.init_gain) if self.feedback else None
        self.disc_pool = None
        self.writes_pool = distributed.is_main_process()  # rank 0, and one process per other node (node_pool)
        self.sample_index = None
        # Test-time maps repeat from run to run (and from the same --seed).
        self.test_generator = torch.Generator().manual_seed(0 if opt.seed is None else int(opt.seed))
        if self.isTrain:
            factor = 2 ** (len(opt.dim_mults) - 1)
            if opt.crop_size % factor:
                raise ValueError(f"--crop_size {opt.crop_size} is not a multiple of {factor}, which the generator "
                                 f"with --dim_mults {','.join(map(str, opt.dim_mults))} needs; use e.g. 256")
            self.map_size = patch_output_size(opt.netD, opt.n_layers_D, opt.crop_size, opt.crop_size)
            self.netD = define_D(opt.input_nc + opt.output_nc, opt.ndf, opt.netD, opt.n_layers_D, opt.norm,
                                 opt.init_type, opt.init_gain)
            self.criterionGAN = GANLoss(opt.gan_mode).to(self.device)
            if getattr(opt, "reset_pool", False) and not opt.continue_train:
                raise ValueError("--reset_pool starts the pool of a resumed run afresh; a new run starts with a "
                                 "fresh pool anyway: add --continue_train, or drop --reset_pool")
            if not self.feedback and getattr(opt, "n_save_noisy", 0) > 0:
                raise ValueError("--n_save_noisy saves D_t and W_t, which a --no_feedback run does not have; drop "
                                 "one of the two flags")
            # W learns with G: it is the generator's ear for the discriminator.
            w_params = self.netW.parameters() if self.feedback else []
            self.optimizer_G = self.make_adam(itertools.chain(w_params, self.netG.parameters()))
            self.optimizer_D = self.make_adam(self.netD.parameters())
            self.optimizers = [self.optimizer_G, self.optimizer_D]

    # ------------------------------------------------------------------ the pool and the trainer's hooks
    # The pool's buffers swap roles at every epoch boundary, which only a checkpoint records.
    save_at_epoch_end = True

    def attach_run_state(self, opt):
        """Open (resume) or create the run's discriminator pool; rank 0 writes it, the other ranks read it."""
        if not self.feedback:  # the ablation has no pool at all
            return
        num_images = getattr(opt, "dataset_size", None)
        if num_images is None:
            raise ValueError("ATME training needs opt.dataset_size, the number of training images (one pool map "
                             "each); train.py sets it from the dataset before it builds the model")
        epoch = (self.resume_state or {}).get("epoch", opt.epoch_count)
        if distributed.is_main_process():
            if opt.continue_train and not getattr(opt, "reset_pool", False):
                self.disc_pool = EpochPool.open(self.save_dir, num_images, self.map_size, epoch)
                self._restore_kept_pool(opt, epoch)
            else:
                if opt.continue_train:
                    log.warning("--reset_pool: the discriminator pool starts afresh from uniform noise at epoch %d",
                                epoch)
                seed = 0 if opt.seed is None else int(opt.seed)
                self.disc_pool = EpochPool.create(self.save_dir, num_images, self.map_size, first_epoch=epoch,
                                                  seed=seed)
        distributed.barrier()
        if distributed.is_distributed() and node_pool.node_count() > 1:
            # Other nodes must not trust the shared file system: they get copies through the process group.
            self.disc_pool = node_pool.share_pool(self.disc_pool, self.save_dir, num_images, self.map_size, epoch)
            self.writes_pool = distributed.is_main_process() or node_pool.keeps_node_copy()
        elif not distributed.is_main_process():
            self.disc_pool = EpochPool.open(self.save_dir, num_images, self.map_size, epoch)
        self.disc_pool.set_epoch(epoch)

    def _kept_pool(self, opt):
        """The pool kept with the checkpoint a resume starts from (`--epoch N`), None for 'latest'."""
        tag = opt.epoch if not opt.load_iter else f"iter_{opt.load_iter}"
        return None if tag == "latest" else (tag, os.path.join(self.save_dir, f"{tag}_disc_pool.npy"))

    def load_extra_state(self, state):
        # A resume reads the pool only once the run folder is taken; its files are checked now, before anything
        # is written, so a damaged pool refuses the command with the file named.
        if not self.feedback or getattr(self.opt, "reset_pool", False) or \
                getattr(self.opt, "dataset_size", None) is None:
            return
        kept = self._kept_pool(self.opt)
        # Rank 0 reads the files through (the other ranks read the same files, or copies rank 0 sends them), not
        # every rank; what it finds stops every rank, with its message.
        fault = None
        if distributed.is_main_process():
            try:
                if kept is not None:
                    self.verify_file(*kept, advice=POOL_RECOVER)
                check_run_pool(self.save_dir, self.opt.dataset_size, self.map_size,
                               value_range=(0.0, 1.0) if self.opt.pool_stores == "prob" else None,
                               kept=kept[1] if kept is not None and os.path.isfile(kept[1]) else None)
            except Exception as err:  # noqa: BLE001 -- raised below, once every rank knows
                fault = err
        report = distributed.first_report(str(fault) if fault is not None else None)
        if fault is not None:
            raise fault
        if report:
            raise PoolError(report)

    def _restore_kept_pool(self, opt, epoch):
        if self._kept_pool(opt) is None:
            return
        tag, kept = self._kept_pool(opt)
        if os.path.isfile(kept):
            self.disc_pool.restore(kept, epoch)
            log.info("restored the discriminator pool kept with checkpoint %s as D_{t-1} of epoch %d", tag, epoch)
        else:
            log.warning("no discriminator pool was kept with checkpoint %s (--keep_epoch_pools was off, or it is "
                        "a mid-epoch checkpoint): epoch %d reads the maps now in %s, which a later epoch of this "
                        "run may have written", tag, epoch, self.disc_pool.buffers[0].path
                        if (epoch - self.disc_pool.first_epoch) % 2 == 0 else self.disc_pool.buffers[1].path)

    def sample_readers(self):
        # Each sample's D_{t-1} is read from disk in the loader workers, overlapping the training step.
        return {"disc_prev": self.disc_pool.reader()} if self.disc_pool is not None else {}

    def on_epoch_start(self, epoch):
        if self.disc_pool is not None:
            self.disc_pool.set_epoch(epoch)

    def on_epoch_end(self, epoch):
        # Validation after this epoch draws its test-time maps from a generator derived from --seed and the
        # epoch, not from one that ran on since the start: a resumed run validates with the same noise as an
        # uninterrupted one (val_log.csv, best_net_*).
        self.test_generator.manual_seed(validation_seed(self.opt.seed, epoch))
        if self.disc_pool is not None:
            self.disc_pool.flush()
            if getattr(self.opt, "n_save_noisy", 0) > 0 and distributed.is_main_process():
                self.save_noisy_history(epoch)

    def extra_state(self):
        if self.disc_pool is None:
            return {}
        self.disc_pool.flush()  # the maps written so far are on disk before the checkpoint commits
        return {"disc_pool": {"first_epoch": self.disc_pool.first_epoch, "epoch": self.disc_pool.epoch,
                              "num_images": len(self.disc_pool), "map_size": list(self.disc_pool.map_size)}}

    def stage_extra_files(self, transaction, tag):
        # An `<epoch>` checkpoint keeps the pool its next epoch reads, so `--epoch N` resumes exactly.
        if self.disc_pool is not None and str(tag).isdigit() and getattr(self.opt, "keep_epoch_pools", False):
            self.disc_pool.stage_copy(transaction, os.path.join(self.save_dir, f"{tag}_disc_pool.npy"))

    def convert_checkpoint(self, name, state):
        return strip_module_prefix(state)

    # ------------------------------------------------------------------ the step
    def set_input(self, batch):
        self.real_A = self.to_device(batch["A"])
        self.real_B = self.to_device(batch["B"]) if "B" in batch else None
        self.image_paths = batch["A_paths"]
        self.sample_index = batch["index"]
        if not self.feedback:
            self.disc_prev = None
            return
        if not self.isTrain:  # test.py: the translator makes the map for the padded size
            self.disc_prev = None
            return
        height, width = self.real_A.shape[-2:]
        # Validation during training runs with the networks in eval mode: it sees test-time maps, not the pool.
        if self.netW.training:
            if (height, width) != (self.opt.crop_size, self.opt.crop_size):
                raise ValueError(f"training images are {height}x{width}, but the discriminator pool holds maps for "
                                 f"--crop_size {self.opt.crop_size} squares; use --preprocess resize_and_crop, "
                                 f"crop or scale_width_and_crop, or set --crop_size to the image size")
            disc_prev = batch["disc_prev"] if "disc_prev" in batch else self.disc_pool.read(self.sample_index)
        else:
            size = patch_output_size(self.opt.netD, self.opt.n_layers_D, height, width)
            disc_prev = test_time_maps(self.real_A.shape[0], size, std=self.opt.pool_test_std,
                                       generator=self.test_generator)
        self.disc_prev = self.to_device(disc_prev)

    def forward(self):
        if not self.isTrain:  # test time: the translator makes D_{t-1} for the input's size
            self.run_translator()
            return
        if not self.feedback:
            self.fake_B = self.generate(self.real_A, None)["fake_B"]
            return
        outputs = self.generate(self.real_A, self.disc_prev)
        self.W, self.noisy_A, self.fake_B = outputs["W"], outputs["noisy_A"], outputs["fake_B"]

    def generate(self, real_A, disc_prev):
        """W = W(D_{t-1}) at the input's size, x_t = x * (1 + W), fake = G(x_t, mean(W)) (Eq. 6 and 7)."""
        if not self.feedback:
            # The ablation: G sees the clean input at a constant time (W = 0 gives x_t = x and t = mean(W) = 0).
            return {"fake_B": self.netG(real_A, real_A.new_zeros(real_A.shape[0], dtype=torch.float32))}
        W = self.netW(disc_prev, real_A.shape[-2:])
        noisy_A = real_A * (1 + W)
        # Eq. 7: the generator's time is the mean of W per image.
        t = reduce(W.float(), "b c h w -> b", "mean")
        return {"W": W, "noisy_A": noisy_A, "fake_B": self.netG(noisy_A, t)}

    # ------------------------------------------------------------------ the test-time path
    def translator(self):
        def translate(x):
            # D_{t-1} at test time, made for this (padded or tile) size; W follows the same size.
            self.disc_prev = self.draw_test_map(x) if self.feedback else None
            return self.generate(x, self.disc_prev)
        return translate

    def inference_memory(self, height, width, batch=1):
        """The convolutions' estimate (BaseModel) plus the U-Net's full attention at its lowest level, which grows
        with the square of the padded area: B x heads x N x N for N = (height / f) x (width / f), f = 2 ** (levels
        - 1), its similarity matrix and its softmax at once (models.memory.attention_bytes)."""
        from models.memory import attention_bytes
        net = unwrap(self.netG)
        positions = (height // net.downsample_factor) * (width // net.downsample_factor)
        itemsize = 2 if self.amp_dtype in (torch.float16, torch.bfloat16) else 4
        return super().inference_memory(height, width, batch) + attention_bytes(batch, net.mid_attn.fn.fn.heads,
                                                                                 positions, itemsize)

    def size_rule(self):
        """Multiples of 2 ** (levels - 1) for the U-Net; with feedback, large enough for a test-time D map
        (at least one PatchGAN output) and for W (4 pixels)."""
        multiple = 2 ** (len(self.opt.dim_mults) - 1)
        description = f"the ATME generator with --dim_mults {','.join(map(str, self.opt.dim_mults))}"
        side = multiple
        while self.feedback:
            try:
                patch_output_size(self.opt.netD, self.opt.n_layers_D, side, side)
            except ValueError:
                side += multiple
                continue
            side = max(side, round_up(4, multiple))
            description += f" and the test-time map of --netD {self.opt.netD}"
            break
        return SizeRule(multiple, side, description)

    def backward_D(self):
        self.loss_D, self.loss_D_real, self.loss_D_fake, self.loss_D_gp = conditional_d_losses(
            self.netD, self.criterionGAN, self.real_A, self.real_B, self.fake_B, **self.d_step_options())
        return self.loss_D

    def backward_G(self):
        # D's map of (x, G(x_t)) goes to the pool: next epoch's D_{t-1} for these images.
        self.loss_G, self.loss_G_GAN, self.loss_G_L1, self.disc_fake = conditional_g_losses(
            self.netD, self.criterionGAN, self.real_A, self.real_B, self.fake_B, self.opt.lambda_L1)
        return self.loss_G

    def optimize_parameters(self):
        with self.autocast():
            self.forward()
        self.update_D()
        self.optimizer_step(self.backward_G, self.optimizer_G)
        if self.feedback:
            self.store_disc_maps()

    def store_disc_maps(self):
        """Write D(x, fake) of this step into the pool for the batch's images: their D_{t-1} next epoch."""
        maps = self.disc_fake.detach().float()
        if self.opt.pool_stores == "prob":
            maps = torch.sigmoid(maps)
        indices = torch.as_tensor(self.sample_index, dtype=torch.long, device=maps.device).reshape(-1)
        if distributed.is_distributed():
            # The pool gets every rank's maps; rank 0 writes them (the run folder is shared by all processes), and
            # on several nodes one process per other node writes them to its node's copy (models/atme/node_pool.py).
            indices, maps = distributed.gather_from_ranks(indices), distributed.gather_from_ranks(maps)
            if not self.writes_pool:
                return
        self.disc_pool.write_deferred(indices, maps)

    # ------------------------------------------------------------------ noisy history
    def noisy_history_indices(self):
        count = min(int(self.opt.n_save_noisy), len(self.disc_pool))
        return np.unique(np.linspace(0, len(self.disc_pool) - 1, count).round().astype(np.int64)).tolist()

    @torch.no_grad()
    def save_noisy_history(self, epoch):
        """D_t and W_t of fixed training images as PNG and .npy under `<run_dir>/noisy_history/`."""
        directory = os.path.join(self.save_dir, "noisy_history")
        os.makedirs(directory, exist_ok=True)
        indices = self.noisy_history_indices()
        disc = self.disc_pool.read_written(indices)  # D_t, which this epoch wrote
        net_w = unwrap(self.netW)
        was_training = net_w.training
        net_w.eval()
        w_maps = net_w(disc.to(self.device), (self.opt.crop_size, self.opt.crop_size)).float().cpu()
        net_w.train(was_training)
        probs = torch.sigmoid(disc) if self.opt.pool_stores == "logits" else disc
        for i, index in enumerate(indices):
            stem = os.path.join(directory, f"epoch_{epoch:03d}_img_{index}")
            np.save(stem + "_D.npy", disc[i, 0].numpy())
            np.save(stem + "_W.npy", w_maps[i, 0].numpy())
            # PNGs map probabilities [0, 1] and W's [-1, 1] to grey levels.
            save_image(tensor2im(probs[i] * 2 - 1), stem + "_D.png")
            save_image(tensor2im(w_maps[i]), stem + "_W.png")
        log.info("saved D_t and W_t of %d images to %s", len(indices), directory)

    # ------------------------------------------------------------------ export (models/atme/graph.py)
    def draw_test_map(self, x):
        """D_{t-1} at test time for x's (padded or tile) size, from the test generator: 0.5 + std * N(0, 1)."""
        size = patch_output_size(self.opt.netD, self.opt.n_layers_D, *x.shape[-2:])
        return self.to_device(test_time_maps(x.shape[0], size, std=self.opt.pool_test_std,
                                             generator=self.test_generator))

    def export_graph(self):
        opt = self.opt
        return atme_graph.atme_graph_spec(unwrap(self.netW) if self.feedback else None, unwrap(self.netG),
                                          self.size_rule(), input_nc=opt.input_nc, output_nc=opt.output_nc,
                                          netD=opt.netD, n_layers_D=opt.n_layers_D, pool_test_std=opt.pool_test_std,
                                          crop_size=opt.crop_size)

    def graph_translator(self, run):
        def draw_map(x):
            self.disc_prev = self.draw_test_map(x)
            return self.disc_prev
        return atme_graph.translator(run, draw_map if self.feedback else None)

