"""TensorBoard event files in `<run_dir>/tensorboard/` (`tensorboard --logdir checkpoints` shows every run):
one scalar chart per loss (step: images seen), the convergence quantity per epoch with its equilibrium (one
chart in the Custom Scalars tab), validation scores per epoch, and the snapshots' image grids."""
import os

from util import convergence
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
        conv_tag = f"convergence/{self.quantity.column}"
        charts = [conv_tag] + (["convergence/equilibrium"] if self.quantity.equilibrium is not None else [])
        self.writer.add_custom_scalars({"convergence": {self.quantity.label: ["Multiline", charts]}})
        if first and run_options:
            rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(run_options.items()))
            self.writer.add_text("options", f"run {name}\n\n| option | value |\n| --- | --- |\n{rows}", 0)

    def _write_losses(self, x, step, values):
        for key, value in values.items():
            self.writer.add_scalar(f"loss/{key}", value, step)
        self.writer.add_scalar("epoch", x, step)

    def _write_convergence(self, epoch, value):
        epoch = int(round(epoch))
        self.writer.add_scalar(f"convergence/{self.quantity.column}", value, epoch)
        if self.quantity.equilibrium is not None:
            self.writer.add_scalar("convergence/equilibrium", self.quantity.equilibrium, epoch)

    def _write_lines(self, name, x, values):
        for key, value in values.items():
            self.writer.add_scalar(f"{name}/{key}", value, int(round(x)))

    def _write_images(self, grid, epoch, step):
        self.writer.add_image("visuals", grid, step, dataformats="HWC")

    def _finish(self):
        self.writer.close()
