"""Training flags: dashboard, saving, schedule, optimiser and speed. With --continue_train, every flag not typed
comes from the run's train_opt.json (options/resume.py)."""
import logging
import sys

from models.networks.losses import GAN_MODES
from models.schedulers import LR_POLICIES
from options.base_options import BaseOptions, load_stored_options, run_dir, save_options, stored_values
from options.resume import continue_run, same, shown
from util.command_line import commands
from util.command_line.arg_types import add_bool_flag
from util.run.run_folder import LOCK_MODES
from util.run.run_lookup import training_state_tags
from util.command_line.flags import INVOCATION, LOSS, RUN

log = logging.getLogger("train")


class TrainOptions(BaseOptions):
    """Train an image-to-image translation model."""

    isTrain = True
    prog = "train.py"
    entry = "train"

    def initialize(self, parser):
        parser = super().initialize(parser)
        g = parser.add_argument_group("dashboard and logs")
        g.add_argument("--display_freq", lifetime=RUN, type=int, default=400, help="show visuals every N images")
        g.add_argument("--display_ncols", lifetime=RUN, type=int, default=0,
                       help="images per row in the visdom grid (0: one row, a column per visual)")
        g.add_argument("--display_id", lifetime=RUN, type=int, default=1, help="visdom window id; 0 turns the live dashboard off")
        g.add_argument("--display_server", lifetime=RUN, type=str, default="http://localhost", help="visdom server")
        g.add_argument("--display_env", lifetime=RUN, type=str, default=None, help="visdom environment (default: the run name)")
        g.add_argument("--display_port", lifetime=RUN, type=int, default=8097, help="visdom port")
        g.add_argument("--update_html_freq", lifetime=RUN, type=int, default=1000,
                       help="snapshot the visuals to the HTML page (and TensorBoard, W&B) every N images; the end of "
                            "every epoch is snapshotted anyway")
        g.add_argument("--print_freq", lifetime=RUN, type=int, default=100, help="log losses every N images")
        add_bool_flag(g, "--no_html", lifetime=RUN, help="do not write checkpoints/<name>/web/")
        add_bool_flag(g, "--use_tensorboard", lifetime=RUN,
                      help="also write TensorBoard event files to checkpoints/<name>/tensorboard/")
        add_bool_flag(g, "--use_wandb", lifetime=RUN, help="also log to Weights & Biases (offline with WANDB_MODE=offline)")
        g.add_argument("--wandb_project_name", lifetime=RUN, type=str, default="atme-segan-pix2pix",
                       help="W&B project of the run (with --use_wandb)")

        g = parser.add_argument_group("saving and resuming")
        g.add_argument("--save_latest_freq", lifetime=RUN, type=int, default=5000, help="save 'latest' every N images")
        g.add_argument("--save_epoch_freq", lifetime=RUN, type=int, default=5, help="save '<epoch>' checkpoints every N epochs")
        add_bool_flag(g, "--save_by_iter", lifetime=RUN, help="also keep 'iter_<N>' checkpoints at each latest save")
        add_bool_flag(g, "--continue_train", lifetime=INVOCATION,
                      help="resume the run from its latest training state (or --epoch N): every flag not typed is "
                           "the run's own (train_opt.json); a typed one is logged as a change, and one that defines "
                           "the networks or the loss is refused")
        add_bool_flag(g, "--no_verify", lifetime=INVOCATION, help="resume without checking the checkpoint's files against the SHA-256 "
                                             "sums saved with them (<tag>_checksums.json); for huge files")
        add_bool_flag(g, "--start_over", lifetime=INVOCATION, help="the run folder holds an earlier run: move it aside to "
                                              "<name>.old-<time> and start a new run (without this flag, a new run "
                                              "there is refused)")
        g.add_argument("--lock", lifetime=INVOCATION, choices=LOCK_MODES, default="file",
                       help="file: lock <run folder>/running.lock while training, so a second run on the same "
                            "--name is refused; none: no lock, for file systems without locks (unsafe: nothing "
                            "then stops two runs from overwriting each other's checkpoints)")
        g.add_argument("--epoch_count", lifetime=RUN, type=int, default=1,
                       help="the first epoch's number in a fresh run: epochs epoch_count..n_epochs+n_epochs_decay are "
                            "trained (a resume takes its epoch from the checkpoint; with --continue_train this is an "
                            "error)")
        g.add_argument("--phase", lifetime=RUN, type=str, default="train", help="train, val, test, ...")
        g.add_argument("--epoch", lifetime=INVOCATION, type=str, default="latest", help="which stored training state to resume from")
        g.add_argument("--load_iter", lifetime=INVOCATION, type=int, default=0, help="resume from 'iter_<N>' when > 0")

        g = parser.add_argument_group("optimisation")
        g.add_argument("--n_epochs", lifetime=RUN, type=int, default=100, help="epochs at the initial learning rate")
        g.add_argument("--n_epochs_decay", lifetime=RUN, type=int, default=100, help="epochs of linear decay to zero")
        g.add_argument("--beta1", lifetime=RUN, type=float, default=0.5, help="Adam beta1")
        g.add_argument("--lr", lifetime=RUN, type=float, default=0.0002, help="initial learning rate for Adam")
        g.add_argument("--gan_mode", lifetime=LOSS, type=str, default="lsgan", choices=GAN_MODES,
                       help="vanilla (binary cross-entropy) | lsgan (least squares) | wgangp (Wasserstein critic with "
                            "a gradient penalty); convergence.csv records what fits the mode")
        g.add_argument("--lambda_gp", lifetime=RUN, type=float, default=10.0,
                       help="wgangp: weight of the gradient penalty on interpolates of real and generated samples as "
                            "D sees them (pairs with the input for a conditional D)")
        g.add_argument("--pool_size", lifetime=RUN, type=int, default=50,
                       help="history of generated samples D trains on (Shrivastava et al. 2017; each fake is swapped "
                            "for a stored one with probability 1/2); 0 turns it off. The models set their papers' "
                            "default (0 for pix2pix, ATME and SEGAN)")
        g.add_argument("--lr_policy", lifetime=RUN, type=str, default="linear", choices=LR_POLICIES,
                       help="linear: --lr for n_epochs, then linear decay to 0 over n_epochs_decay | step: x0.1 every "
                            "--lr_decay_iters epochs | plateau: x0.2 when the validation L1 stops improving (needs "
                            "--val_freq) | cosine: cosine decay over all epochs")
        g.add_argument("--lr_decay_iters", lifetime=RUN, type=int, default=50, help="step policy: multiply by 0.1 every N epochs")
        g.add_argument("--val_freq", lifetime=RUN, type=int, default=0, help="evaluate on the val split every N epochs (0: never)")

        g = parser.add_argument_group("processes")
        g.add_argument("--nproc_per_node", lifetime=RUN, type=int, default=0,
                       help="processes to start on this machine (DistributedDataParallel, --batch_size each): "
                            "0 = one per --gpu_ids entry when CUDA is available, else 1; N > 1 with --gpu_ids -1 "
                            "starts N CPU processes. Ignored under torchrun")

        g = parser.add_argument_group("speed")
        g.add_argument("--amp", lifetime=RUN, type=str, default="none", choices=["none", "bf16", "fp16"],
                       help="mixed precision (bf16 also on the CPU; fp16 uses a gradient scaler)")
        add_bool_flag(g, "--channels_last", lifetime=RUN, help="channels-last memory format for networks and inputs")
        add_bool_flag(g, "--compile", lifetime=RUN,
                      help="torch.compile the networks (the first step, which compiles, is timed in the log)")
        return parser

    def parse(self, args=None):
        """Parse `args`; with --continue_train, fill every flag not typed from the run's train_opt.json."""
        args = sys.argv[1:] if args is None else list(args)
        self.resume_changes, self.notes = [], []
        parser = self.build_parser(args)
        if "-h" in args or "--help" in args:
            return super().parse(args)
        first, _ = parser.parse_known_args(args)
        if not first.continue_train:
            return super().parse(args)
        explicit = self.explicit_flags(parser, args)
        self.check_resume_flags(parser, explicit)
        directory = run_dir(self.named(first))
        stored = load_stored_options(directory)
        if stored is None:  # train.py refuses a run without a training state; an older run resumes as typed
            if training_state_tags(directory):
                log.warning("no train_opt.json in %s: resuming with the flags as given", directory)
            return super().parse(args)
        prefix = []  # the run's model and data layout, which bring their own flags
        for key in ("model", "dataset_mode"):
            if key not in explicit and stored.get(key) and stored[key] != getattr(first, key):
                prefix += [f"--{key}", stored[key]]
        if prefix:
            parser = self.build_parser(prefix + args)
        opt = parser.parse_args(prefix + args)
        explicit = self.explicit_flags(parser, args)
        self.resume_changes = continue_run(opt, parser, stored_values(stored, parser.flag_table, directory, self.notes),
                                           explicit, directory,
                                           lambda drop, add: self.retry_command(parser, args, drop, add))
        opt.isTrain = True
        self.parser = parser
        return self.resolve(opt, parser, args)

    @staticmethod
    def resume_command(opt):
        """The shortest command that resumes the run `opt` names: every other option comes from the run's
        train_opt.json (the one command a refusal, the log and the run's page all give)."""
        return commands.resume_command(opt.name, opt.checkpoints_dir)

    def start_over_command(self, opt):
        """The command that trains the run `opt` names afresh with the options it has (every stored flag whose
        value is not the default, typed out), moving the earlier files aside: for a run that saved nothing to
        resume."""
        args = []
        for flag in self.parser.flag_table:
            if flag.lifetime == INVOCATION or flag.dest in ("gpu_ids",):
                continue
            value = getattr(opt, flag.dest, None)
            if value is None or same(value, self.parser.get_default(flag.dest)):
                continue
            args += [flag.option, shown(value)]
        return commands.command(self.entry, commands.run_flags(opt.name, opt.checkpoints_dir) + args +
                                ["--start_over"])

    @staticmethod
    def check_resume_flags(parser, explicit):
        if "continue_train" in explicit and "epoch_count" in explicit:
            parser.error("--epoch_count sets the first epoch of a fresh run; --continue_train takes the epoch from "
                         "the checkpoint it resumes (latest, or --epoch N) by itself: drop --epoch_count")

    def resolve(self, opt, parser, args):
        opt = super().resolve(opt, parser, args)
        explicit = self.explicit_flags(parser, args)
        if opt.n_epochs < 0 or opt.n_epochs_decay < 0:
            parser.error("--n_epochs and --n_epochs_decay must be >= 0")
        if opt.continue_train:
            self.check_resume_flags(parser, explicit)
        if opt.epoch_count < 1:
            parser.error(f"--epoch_count must be at least 1, got {opt.epoch_count}")
        if opt.lr_policy == "plateau" and opt.val_freq <= 0:
            parser.error("--lr_policy plateau lowers the learning rate when the validation L1 stops improving: "
                         "pass --val_freq N to validate every N epochs (the data needs a val split)")
        opt.run_dir = run_dir(opt)
        return opt

    def save(self, opt):
        """Write train_opt.txt / train_opt.json into the run folder (once the run owns it)."""
        save_options(opt, self.parser, "train", opt.run_dir)
