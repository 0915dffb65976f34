"""Template: how to add a model. Copy to `models/<name>_model.py`, rename the class to `<Name>Model`,
then train with `--model <name>`.

The contract:
- `modify_commandline_options(parser, is_train)`: add flags in an argument group of the model's own and
  change defaults (`parser.set_defaults(...)`).
- `__init__(opt)`: call `super().__init__(opt)`, then fill
  `loss_names` (the trainer logs `self.loss_<name>`), `visual_names` (tensors shown in the dashboard,
  HTML pages and test results), `model_names` (networks stored as `self.net<NAME>` and saved as
  `<epoch>_net_<NAME>.pth`), and, when training, `optimizers` (build them with `self.make_adam`).
- `set_input(batch)`: move the batch onto the device with `self.to_device`.
- `forward()`: produce the outputs; `test()` calls it under `torch.no_grad()`.
- `optimize_parameters()`: `self.optimizer_step(compute_loss, optimizer)` runs a loss function under
  autocast, then backward and step (mixed precision and zeroing the gradients are handled). A model with
  `netD`, `optimizer_D` and a `backward_D()` that sets `loss_D_real`/`loss_D_fake` calls `self.update_D()`:
  it steps D, freezes it for the generator's step and feeds convergence.csv (-L_GAN per epoch).
- `translator()`: the callable test.py runs, translate(x) -> {visual name: tensor}: x is (B, input_nc, H, W)
  in [-1, 1] with H and W that suit `size_rule()`, and each output keeps H and W. test.py pads every image
  to such a size (`--pad_mode`), or cuts it into tiles (`--tile`), and crops the outputs back, so results
  keep the input's size. `size_rule()` (sides: multiples of what, at least what) defaults to the
  generator's; override it when other networks add limits (ATME's test-time D map). Another runner with
  the same contract (an exported graph) can replace the translator. `test_input_name` names the input.
- Optional hooks: `sample_readers()` (extra per-sample data read in the loader workers),
  `on_epoch_end(epoch)`, `extra_state()` / `load_extra_state(state)` (kept in the training-state file),
  `unused_flags` (common flags the model does not use: refused for it and hidden from its --help),
  `checkpoint_aliases`.
- Flags: each is declared in `modify_commandline_options` with its lifetime (util/command_line/flags.py):
  `lifetime=ARCHITECTURE` for what defines the networks (a resume refuses a change; test.py takes it from the
  run), `LOSS` for what defines the loss, `DATA` for how inputs are read, `RUN` for training settings a
  resume may change, `INVOCATION` for one command's own (never stored). docs/flags.md is made from them.

Below the model, networks take explicit arguments, never `opt`.
"""
import torch

from models.base_model import BaseModel
from models.networks.generators import define_G
from util.command_line.flags import RUN


class TemplateModel(BaseModel):
    """A generator trained with a regression loss only: the smallest working model."""

    test_input_name = "data_A"  # what the translator reads at test time
    # No discriminator here: its flags are refused for this model (extend the tuple as needed).
    unused_flags = ("netD", "ndf", "n_layers_D", "gan_mode", "pool_size", "lambda_gp")

    @staticmethod
    def modify_commandline_options(parser, is_train=True):
        parser.set_defaults(dataset_mode="aligned", netG="unet_256")
        if is_train:
            group = parser.add_argument_group("template")
            group.add_argument("--lambda_regression", lifetime=RUN, type=float, default=1.0, help="weight of the L1 loss")
        return parser

    def __init__(self, opt):
        super().__init__(opt)
        self.loss_names = ["G"]
        self.visual_names = ["data_A", "output", "data_B"]
        self.model_names = ["G"]
        self.netG = define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm, not opt.no_dropout,
                             opt.init_type, opt.init_gain, crop_size=opt.crop_size)
        if self.isTrain:
            self.criterion = torch.nn.L1Loss()
            self.optimizer = self.make_adam(self.netG.parameters())
            self.optimizers = [self.optimizer]

    def set_input(self, batch):
        self.data_A = self.to_device(batch["A"])
        self.data_B = self.to_device(batch["B"]) if "B" in batch else None
        self.image_paths = batch["A_paths"]

    def forward(self):
        self.output = self.netG(self.data_A)

    def translator(self):
        net = self.netG
        return lambda x: {"output": net(x)}

    def optimize_parameters(self):
        def loss():
            self.forward()
            self.loss_G = self.criterion(self.output, self.data_B) * self.opt.lambda_regression
            return self.loss_G
        self.optimizer_step(loss, self.optimizer)
