"""pix2pix (Isola et al., 2017): a conditional GAN that learns a mapping from input to output images.

Loss: GAN(D(x, G(x))) + lambda_L1 * |G(x) - y|_1, with a PatchGAN D that sees the input and the output.
Paper defaults: U-Net-256 generator, 70x70 PatchGAN (`basic`), vanilla GAN loss, lambda_L1 = 100,
batch norm, aligned data, Adam(2e-4, beta1 0.5), no image pool.
"""
from models.base_model import BaseModel
from models.networks.discriminators import define_D
from models.networks.generators import check_generator_size, define_G
from models.networks.graph import generator_graph_spec, generator_translator
from models.networks.losses import GANLoss, conditional_d_losses, conditional_g_losses
from util.command_line.flags import RUN
from util.process.distributed import unwrap


class Pix2PixModel(BaseModel):
    """pix2pix: U-Net or ResNet generator, PatchGAN discriminator, GAN + L1 loss."""

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(norm="batch", netG="unet_256", dataset_mode="aligned")
        if is_train:
            parser.set_defaults(pool_size=0, gan_mode="vanilla")
            group = parser.add_argument_group("pix2pix")
            group.add_argument("--lambda_L1", lifetime=RUN, type=float, default=100.0, help="weight of the L1 loss")
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ["G_GAN", "G_L1", "D_real", "D_fake"]
        self.visual_names = ["real_A", "fake_B", "real_B"]
        self.model_names = ["G", "D"] if self.isTrain else ["G"]
        self.netG = define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm, not opt.no_dropout,
                             opt.init_type, opt.init_gain, crop_size=opt.crop_size)
        if self.isTrain:
            check_generator_size(opt.netG, opt.crop_size, opt.crop_size)
            self.netD = define_D(opt.input_nc + opt.output_nc, opt.ndf, opt.netD, opt.n_layers_D, opt.norm,
                                 opt.init_type, opt.init_gain)
            self.criterionGAN = GANLoss(opt.gan_mode).to(self.device)
            self.optimizer_G = self.make_adam(self.netG.parameters())
            self.optimizer_D = self.make_adam(self.netD.parameters())
            self.optimizers = [self.optimizer_G, self.optimizer_D]

    def set_input(self, batch):
        self.real_A = self.to_device(batch["A"])
        self.real_B = self.to_device(batch["B"]) if "B" in batch else None
        self.image_paths = batch["A_paths"]

    def forward(self):
        self.fake_B = self.netG(self.real_A)

    def translator(self):
        net = self.netG
        return lambda x: {"fake_B": net(x)}

    def backward_D(self):
        self.loss_D, self.loss_D_real, self.loss_D_fake, self.loss_D_gp = conditional_d_losses(
            self.netD, self.criterionGAN, self.real_A, self.real_B, self.fake_B, **self.d_step_options())
        return self.loss_D

    def backward_G(self):
        self.loss_G, self.loss_G_GAN, self.loss_G_L1, _ = conditional_g_losses(
            self.netD, self.criterionGAN, self.real_A, self.real_B, self.fake_B, self.opt.lambda_L1)
        return self.loss_G

    def optimize_parameters(self):
        with self.autocast():
            self.forward()
        self.update_D()
        # G step, with D frozen
        self.optimizer_step(self.backward_G, self.optimizer_G)

    # ------------------------------------------------------------------ export (models/networks/graph.py)
    def export_graph(self):
        return generator_graph_spec(unwrap(self.netG), self.size_rule(), self.opt.input_nc, self.opt.output_nc)

    def graph_translator(self, run):
        return generator_translator(run)
