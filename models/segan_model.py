"""SEGAN (Statistics Enhanced GAN): pix2pix + noise, plus a statistics network T that estimates the mutual
information between the latent code and the output, I(Z; G(A, Z)), which G and T both maximise.

Paper: "Multimodal Image-to-Image Translation via Mutual Information Estimation and Maximization".
Three variants under `--model segan`:
- supervised (`--dataset_mode aligned`, the default): L = L_GAN + lambda_MI * (-MI) + lambda_L1 * L_L1 (Eq. 8);
- unsupervised (`--dataset_mode unaligned`): no L1 term; the U-Net's skips keep the input's content;
- pix2pix+noise (`--lambda_MI 0`): no statistics network at all (the paper's baseline).
Paper settings: nz 8, lambda_MI 1, lambda_L1 3, 4 inputs x 8 codes per step, U-Net with the code injected
into every encoder layer, 2-scale PatchGAN D on the output alone (Eq. 2), JSD estimator (Eq. 7).
"""
import logging

import numpy as np
import torch
from einops import rearrange, repeat

from models.base_model import BaseModel
from models.inference import SizeRule
from models.networks.layers import get_norm_layer, init_weights
from models.networks.losses import GANLoss, discriminator_losses
from models.segan import graph as segan_graph
from models.segan.mi_estimators import ESTIMATORS, mi_estimate
from models.segan.networks import MultiscaleDiscriminator, NoiseUnetGenerator, StatisticsNetwork, unet_depth
from util.command_line.arg_types import add_bool_flag
from util.process.distributed import unwrap
from util.command_line.flags import ARCHITECTURE, INVOCATION, LOSS, RUN

log = logging.getLogger(__name__)

# --netG choices: the noise U-Net at a depth set by --crop_size or fixed as in pix2pix's names.
GENERATOR_DEPTHS = {"unet": None, "unet_128": 7, "unet_256": 8}
TRAIN_VISUAL_SAMPLES = 3  # outputs per input shown on the dashboard


class SeganModel(BaseModel):
    """Noise U-Net G(a, z), multi-scale PatchGAN D(b), statistics network T(z, b)."""


    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        # Instance norm, as in BicycleGAN whose noise injection SEGAN follows: a training batch holds several
        # outputs of the same input, and batch statistics would couple them. No dropout: the code z should be
        # the only source of variation, so one code gives one output.
        parser.set_defaults(norm="instance", netG="unet", netD="basic", dataset_mode="aligned", no_dropout=True)
        group = parser.add_argument_group("SEGAN")
        group.add_argument("--nz", lifetime=ARCHITECTURE, type=int, default=8, help="dimension of the latent code z ~ N(0, I)")
        group.add_argument("--upsample", lifetime=ARCHITECTURE, type=str, default="deconv", choices=["deconv", "resize_conv"],
                           help="generator upsampling: transposed conv (paper at 256) or resize + conv (paper at 128)")
        if is_train:
            parser.set_defaults(gan_mode="vanilla", pool_size=0)
            group.add_argument("--lambda_MI", lifetime=RUN, type=float, default=1.0,
                               help="weight of the MI term (Eq. 8); 0 gives pix2pix+noise without a statistics network")
            group.add_argument("--lambda_L1", lifetime=RUN, type=float, default=3.0, help="weight of the L1 loss (aligned data only)")
            group.add_argument("--mi_estimator", lifetime=LOSS, type=str, default="jsd", choices=sorted(ESTIMATORS),
                               help="jsd (Eq. 7, the paper's) or dv (Donsker-Varadhan, Eq. 5)")
            group.add_argument("--n_neg", lifetime=RUN, type=int, default=1, help="negative (independent) pairs per positive pair")
            group.add_argument("--mi_negatives", lifetime=RUN, type=str, default="fresh", choices=["fresh", "shuffle"],
                               help="codes of the negative pairs: fresh N(0, I) draws (Eq. 7) or the batch's "
                                    "codes shuffled")
            group.add_argument("--samples_per_input", lifetime=RUN, type=int, default=8,
                               help="codes drawn per input image in a step (paper: batch 4 x 8 = 32 pairs for T)")
            group.add_argument("--num_D", lifetime=ARCHITECTURE, type=int, default=2, help="scales of the multi-scale PatchGAN")
            add_bool_flag(group, "--conditional_D", lifetime=ARCHITECTURE,
                          help="D sees (input, output) pairs instead of the output alone (aligned data only)")
        else:
            group.add_argument("--n_samples", lifetime=INVOCATION, type=int, default=1,
                               help="outputs per input; the codes are drawn once and shared by all inputs")
            group.add_argument("--interp", lifetime=INVOCATION, type=int, default=0,
                               help="if > 0: this many outputs along the line between two fixed codes")
            group.add_argument("--sample_seed", lifetime=INVOCATION, type=int, default=0, help="seed of the test-time codes")
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.nz = opt.nz
        self.supervised = opt.dataset_mode != "unaligned"
        if opt.netG not in GENERATOR_DEPTHS:
            raise ValueError(f"SEGAN uses the noise U-Net: --netG must be one of {', '.join(GENERATOR_DEPTHS)}, "
                             f"got {opt.netG!r}")
        num_downs = GENERATOR_DEPTHS[opt.netG] or unet_depth(opt.crop_size)
        self.netG = init_weights(
            NoiseUnetGenerator(opt.input_nc, opt.output_nc, nz=opt.nz, num_downs=num_downs, ngf=opt.ngf,
                               norm_layer=get_norm_layer(opt.norm), use_dropout=not opt.no_dropout,
                               upsample=opt.upsample),
            init_type=opt.init_type, init_gain=opt.init_gain)
        self.model_names = ["G"]
        self.visual_names = ["real_A", "real_B"]
        if self.isTrain:
            self._build_training(opt)
        else:
            self._build_sampling(opt)

    # ------------------------------------------------------------------ construction
    def _build_training(self, opt):
        if opt.samples_per_input < 1 or opt.n_neg < 1 or opt.lambda_MI < 0:
            raise ValueError(f"--samples_per_input and --n_neg must be >= 1 and --lambda_MI >= 0, got "
                             f"{opt.samples_per_input}, {opt.n_neg}, {opt.lambda_MI}")
        if opt.conditional_D and not self.supervised:
            raise ValueError("--conditional_D needs paired data (--dataset_mode aligned): with unaligned data the "
                             "real (A, B) pairs are unrelated. Drop --conditional_D.")
        if opt.netD not in ("basic", "n_layers"):
            raise ValueError(f"SEGAN's multi-scale D is built of PatchGANs: --netD basic or n_layers, got {opt.netD!r}")
        self.use_mi = opt.lambda_MI > 0
        self.samples_per_input = opt.samples_per_input
        # Codes are drawn per image (see _draw_codes): from (--seed, epoch, dataset index), so they do not depend
        # on the batch size, the data order or how a batch is split over processes. Without --seed, a random base.
        self.code_seed = opt.seed if opt.seed is not None else int(torch.randint(2 ** 62, ()))
        self.code_epoch = opt.epoch_count
        self.sample_index = None
        self.loss_names = ["G_GAN"] + (["G_L1"] if self.supervised else []) + (["MI"] if self.use_mi else [])
        self.loss_names += ["D_real", "D_fake"] + (["T"] if self.use_mi else [])
        self.visual_names += [f"fake_B_{k}" for k in range(min(opt.samples_per_input, TRAIN_VISUAL_SAMPLES))]

        d_input_nc = opt.input_nc + opt.output_nc if opt.conditional_D else opt.output_nc
        n_layers = 3 if opt.netD == "basic" else opt.n_layers_D
        self.netD = init_weights(
            MultiscaleDiscriminator(d_input_nc, ndf=opt.ndf, n_layers=n_layers, norm_layer=get_norm_layer(opt.norm),
                                    num_D=opt.num_D),
            init_type=opt.init_type, init_gain=opt.init_gain)
        if opt.crop_size < self.netD.min_input_size():
            raise ValueError(f"--crop_size {opt.crop_size} is too small for {opt.num_D} scales of a {n_layers}-layer "
                             f"PatchGAN (needs {self.netD.min_input_size()}): lower --num_D, use --netD n_layers "
                             f"with a smaller --n_layers_D, or raise --crop_size")
        self.model_names = ["G", "D"]
        self.criterionGAN = GANLoss(opt.gan_mode).to(self.device)
        self.criterionL1 = torch.nn.L1Loss()
        self.optimizer_G = self.make_adam(self.netG.parameters())
        self.optimizer_D = self.make_adam(self.netD.parameters())
        self.optimizers = [self.optimizer_G, self.optimizer_D]
        if self.use_mi:
            # T keeps PyTorch's default initialisation: with pix2pix's N(0, 0.02) its ELU stack starts with
            # vanishing activations and the estimate stays near its floor for many more steps.
            self.netT = StatisticsNetwork(opt.output_nc, opt.nz, opt.crop_size)
            self.model_names.append("T")
            self.optimizer_T = self.make_adam(self.netT.parameters())
            self.optimizers.append(self.optimizer_T)

    def _build_sampling(self, opt):
        if opt.n_samples < 1 or opt.interp < 0 or opt.interp == 1:
            raise ValueError(f"--n_samples must be >= 1 and --interp 0 (off) or >= 2, got {opt.n_samples} and "
                             f"{opt.interp}")
        # Drawn once, on the CPU so the codes do not depend on the device, and shared by every input:
        # output k of all inputs uses the same code ("synchronised latent codes": a column is one style).
        generator = torch.Generator().manual_seed(opt.sample_seed)
        if opt.interp:
            ends = torch.randn(2, opt.nz, generator=generator)
            weights = rearrange(torch.linspace(0.0, 1.0, opt.interp), "k -> k 1")
            codes, self.sample_prefix = torch.lerp(ends[0], ends[1], weights), "interp"
        else:
            codes, self.sample_prefix = torch.randn(opt.n_samples, opt.nz, generator=generator), "fake_B"
        self.sample_codes = codes.to(self.device)
        self.visual_names += [f"{self.sample_prefix}_{k}" for k in range(len(codes))]

    def setup(self, opt):
        super().setup(opt)
        if self.resume_state:
            self.code_epoch = self.resume_state["epoch"]

    def on_epoch_end(self, epoch):
        super().on_epoch_end(epoch)
        self.code_epoch = epoch + 1

    def extra_state(self):
        return {**super().extra_state(), "code_seed": self.code_seed}

    def load_extra_state(self, state):
        super().load_extra_state(state)
        self.code_seed = state.get("code_seed", self.code_seed)

    # ------------------------------------------------------------------ data and forward
    def set_input(self, batch):
        self.real_A = self.to_device(batch["A"])
        self.real_B = self.to_device(batch["B"]) if "B" in batch else None
        self.image_paths = batch["A_paths"]
        self.sample_index = batch.get("index")
        if self.isTrain and self.real_B is None:
            raise ValueError(f"SEGAN training needs target images B; --dataset_mode {self.opt.dataset_mode} gives "
                             f"none. Use --dataset_mode aligned (paired) or unaligned (unpaired).")

    def forward(self):
        if not self.isTrain:
            self._forward_samples()
            return
        # Every input is translated with `samples_per_input` codes; T sees all these pairs (Monte Carlo, Eq. 7).
        self.repeated_A = repeat(self.real_A, "b c h w -> (b k) c h w", k=self.samples_per_input)
        self.z, self.fresh_codes = self._draw_codes()
        self.fake_B_all = self.netG(self.repeated_A, self.z)
        per_code = rearrange(self.fake_B_all, "(b k) c h w -> k b c h w", k=self.samples_per_input)
        for k in range(min(self.samples_per_input, TRAIN_VISUAL_SAMPLES)):
            setattr(self, f"fake_B_{k}", per_code[k])
        self.fake_B = per_code[0]  # one translation per input: what --val_freq scores (L1, PSNR)

    def _draw_codes(self):
        """The codes z (b * k, nz) of this batch and the fresh negatives of T's and G's MI terms (or None).

        Image i of epoch e takes its codes from a generator seeded by (--seed, e, i): first its k codes, then
        n_neg * k negatives for T's step and as many for G's. A 2-process run (each with half of the batch) thus
        draws exactly the codes of a 1-process run, and a resume the codes of an uninterrupted run. A batch
        without dataset indices falls back to the global random stream.
        """
        k, n_neg = self.samples_per_input, self.opt.n_neg
        fresh = self.use_mi and self.opt.mi_negatives == "fresh"
        if self.sample_index is None:
            return torch.randn(self.repeated_A.shape[0], self.nz, device=self.device), None
        per_image = k * (1 + 2 * n_neg) if fresh else k
        codes = []
        for index in torch.as_tensor(self.sample_index).reshape(-1).tolist():
            key = [v % 2 ** 64 for v in (self.code_seed, self.code_epoch, int(index))]
            seed = int(np.random.SeedSequence(key).generate_state(1, np.uint64)[0])  # nearby keys, unrelated seeds
            generator = torch.Generator().manual_seed(seed)
            codes.append(torch.randn(per_image, self.nz, generator=generator))
        codes = torch.stack(codes).to(self.device, non_blocking=True)  # drawn on the CPU: the same on any device
        z = rearrange(codes[:, :k], "b k nz -> (b k) nz")
        if not fresh:
            return z, None
        # Row n * (b k) + (i k + j) of the negatives is paired with output (i, j), as make_pairs lays them out.
        negatives = rearrange(codes[:, k:], "b (step n k) nz -> step (n b k) nz", step=2, n=n_neg)
        return z, {"T": negatives[0], "G": negatives[1]}

    def _forward_samples(self):
        self.run_translator()  # test time: the path of test(), at any input size
        self.compute_visuals()

    # ------------------------------------------------------------------ the test-time path
    def translator(self):
        """One output per test-time code, `<prefix>_<k>`; the codes are shared by every input and tile."""
        return self.graph_translator(lambda feeds: {"output": self.netG(feeds["image"], feeds["code"])})

    def size_rule(self):
        levels = unwrap(self.netG).num_downs
        return SizeRule(2 ** levels, 2 ** levels, f"the SEGAN noise U-Net with {levels} levels (--netG, --crop_size)")

    def compute_visuals(self):
        if not self.isTrain:
            self.fake_B = getattr(self, f"{self.sample_prefix}_0")  # the first code's output, for metrics

    # ------------------------------------------------------------------ losses
    def _d_input(self, outputs, inputs):
        """D(b) of Eq. 2, or D(a, b) with --conditional_D."""
        return torch.cat([inputs, outputs], dim=1) if self.opt.conditional_D else outputs

    def _mi(self, images, step):
        # Under DDP each process estimates MI on its own share of the batch: the negatives pair its outputs with
        # fresh codes (or, with --mi_negatives shuffle, with its own batch's codes), which are independent of
        # those outputs whatever the split. With the JSD estimator (a mean over pairs) the averaged gradients are
        # those of the whole batch; the DV estimator's log-mean-exp is taken per process, over fewer negatives.
        fresh = None if self.fresh_codes is None else self.fresh_codes[step]
        return mi_estimate(self.netT, self.z, images, estimator=self.opt.mi_estimator, n_neg=self.opt.n_neg,
                           negatives=self.opt.mi_negatives, fresh_codes=fresh)

    def backward_D(self):
        # GANLoss averages over the D's scales. The penalty interpolates each output with its own input's target.
        penalty_real = None
        if self.opt.gan_mode == "wgangp":
            targets = repeat(self.real_B, "b c h w -> (b k) c h w", k=self.samples_per_input)
            penalty_real = self._d_input(targets, self.repeated_A)
        self.loss_D, self.loss_D_real, self.loss_D_fake, self.loss_D_gp = discriminator_losses(
            self.netD, self.criterionGAN, self._d_input(self.real_B, self.real_A),
            self._d_input(self.fake_B_all, self.repeated_A), penalty_real=penalty_real, **self.d_step_options())
        return self.loss_D

    def backward_T(self):
        """T ascends the MI estimate on detached outputs (the inner max over omega in Eq. 6)."""
        self.loss_T = -self._mi(self.fake_B_all.detach(), "T")
        return self.loss_T

    def backward_G(self):
        """Eq. 8 for G: adversarial + lambda_L1 * L1 (aligned only) - lambda_MI * MI (G ascends the estimate)."""
        fake = self._d_input(self.fake_B_all, self.repeated_A)
        self.loss_G_GAN = self.criterionGAN(self.netD(fake), True)
        self.loss_G = self.loss_G_GAN
        if self.supervised:
            # Eq. 3: every sample of an input is compared with that input's target.
            target = repeat(self.real_B, "b c h w -> (b k) c h w", k=self.samples_per_input)
            self.loss_G_L1 = self.criterionL1(self.fake_B_all, target) * self.opt.lambda_L1
            self.loss_G = self.loss_G + self.loss_G_L1
        if self.use_mi:
            self.loss_MI = self._mi(self.fake_B_all, "G")  # logged as the estimate itself (higher: more dependence)
            self.loss_G = self.loss_G - self.opt.lambda_MI * self.loss_MI
        return self.loss_G

    def optimize_parameters(self):
        with self.autocast():
            self.forward()
        self.update_D()
        # T step: T and D alternate with G alike (Eq. 6)
        if self.use_mi:
            self.set_requires_grad(self.netT, True)
            self.optimizer_step(self.backward_T, self.optimizer_T)
            self.set_requires_grad(self.netT, False)
        # G step, with D and T frozen
        self.optimizer_step(self.backward_G, self.optimizer_G)

    # ------------------------------------------------------------------ export (models/segan/graph.py)
    def export_graph(self):
        return segan_graph.segan_graph_spec(unwrap(self.netG), self.size_rule(), input_nc=self.opt.input_nc,
                                            output_nc=self.opt.output_nc)

    def graph_translator(self, run):
        """The translator with the network call `run` ({"image", "code"} -> {"output"}): the torch path's too."""
        return segan_graph.translator(run, self.sample_codes, self.sample_prefix)
