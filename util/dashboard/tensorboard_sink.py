"""TensorBoard event files in `<run_dir>/tensorboard/` (`tensorboard --logdir checkpoints` shows every run):
one scalar chart per loss (TensorBoard's "step" axis: images seen), the convergence quantity per epoch,
validation scores per epoch, and the snapshots' image grids.

TensorBoard colours lines by run, not by tag, so the equilibrium (log 4 for vanilla) is written as a run of its
own, `<run_dir>/tensorboard/equilibrium_<name>/`, under the quantity's tag: the convergence chart then shows
the run's curve and the equilibrium in two colours, each named in the run list."""
import os

from util.run import convergence
from util.dashboard.appending import AppendingSink

INSTALL_HINT = "pip install tensorboard==2.21.0 (it is in requirements.txt)"


class TensorBoardSink(AppendingSink):
    name = "TensorBoard"

    def __init__(self, run_dir, name, *, gan_mode="vanilla", run_options=None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise RuntimeError(f"--use_tensorboard needs the tensorboard package ({exc}): {INSTALL_HINT}, "
                               "or drop --use_tensorboard") from exc
        self.log_dir = os.path.join(str(run_dir), "tensorboard")
        super().__init__(os.path.join(self.log_dir, "logged.json"), "dashboard-tensorboard")
        self.quantity = convergence.quantity(gan_mode)
        first = not self.logged
        # A new event file per process, beside the older ones; flushed often enough to follow a run live.
        self.writer = SummaryWriter(log_dir=self.log_dir, flush_secs=10)
        self.conv_tag = f"convergence/{self.quantity.column}"
        self.equilibrium_writer = None
        if self.quantity.equilibrium is not None:
            self.equilibrium_writer = SummaryWriter(log_dir=equilibrium_dir(self.log_dir, self.quantity),
                                                    flush_secs=10)
        self.writer.add_custom_scalars({"convergence": {self.quantity.label: ["Multiline", [self.conv_tag]]}})
        if first and run_options:
            rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(run_options.items()))
            self.writer.add_text("options", f"run {name}\n\n| option | value |\n| --- | --- |\n{rows}", 0)

    def _write_losses(self, x, step, values):
        for key, value in values.items():
            self.writer.add_scalar(f"loss/{key}", value, step)
        self.writer.add_scalar("epoch", x, step)

    def _write_convergence(self, epoch, value):
        epoch = int(round(epoch))
        self.writer.add_scalar(self.conv_tag, value, epoch)
        if self.equilibrium_writer is not None:
            self.equilibrium_writer.add_scalar(self.conv_tag, self.quantity.equilibrium, epoch)

    def _write_lines(self, name, x, values):
        for key, value in values.items():
            self.writer.add_scalar(f"{name}/{key}", value, int(round(x)))

    def _write_images(self, grid, epoch, step):
        self.writer.add_image("visuals", grid, step, dataformats="HWC")

    def _finish(self):
        self.writer.close()
        if self.equilibrium_writer is not None:
            self.equilibrium_writer.close()


def equilibrium_dir(log_dir, quantity):
    """The equilibrium's run folder: `equilibrium_log4` for vanilla, `equilibrium_half` for least squares."""
    return os.path.join(log_dir, "equilibrium_" + quantity.distance_column.split("_minus_")[-1])
