"""Weights & Biases: the same curves and image grids as the other views, in one W&B run per training run (its
id is kept in `<run_dir>/wandb/run.json`, so every resume continues it). Charts use `epoch` as their x axis.
Works offline with WANDB_MODE=offline: the run is written under `<run_dir>/wandb/offline-run-*` and
`wandb sync <that folder>` uploads it later."""
import math
import os
import secrets

from util.run import convergence
from util.dashboard.appending import AppendingSink
from util.dashboard.history import images_seen

INSTALL_HINT = "pip install wandb==0.31.0 (it is in requirements.txt)"


class WandbSink(AppendingSink):
    name = "W&B"

    def __init__(self, run_dir, name, *, project, gan_mode="vanilla", run_options=None):
        try:
            import wandb
        except ImportError as exc:
            raise RuntimeError(f"--use_wandb needs the wandb package ({exc}): {INSTALL_HINT}, or drop --use_wandb") \
                from exc
        self._wandb = wandb
        run_dir = str(run_dir)
        super().__init__(os.path.join(run_dir, "wandb", "run.json"), "dashboard-wandb")
        self.quantity = convergence.quantity(gan_mode)
        if self.state.get("project") not in (None, project):
            self.logged.clear()  # another project holds none of the earlier points
            self.state.pop("id", None)
        run_id = self.state.get("id") or secrets.token_hex(4)  # 8 characters of [0-9a-f], a valid W&B run id
        try:
            self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=run_dir,
                                  config=_plain(run_options or {}), settings=wandb.Settings(console="off"))
        except Exception as exc:
            raise RuntimeError(
                f"--use_wandb: Weights & Biases could not start a run ({type(exc).__name__}: {exc}). Log in with "
                "`wandb login`, or log offline with WANDB_MODE=offline (upload later with `wandb sync "
                f"{os.path.join(run_dir, 'wandb')}/offline-run-*`), or drop --use_wandb") from exc
        self.state.update(id=run_id, project=project)
        self._mark(force=True)
        self.run.define_metric("epoch")
        for prefix in ("loss", "convergence", "validation", "visuals"):
            self.run.define_metric(f"{prefix}*", step_metric="epoch")

    def _write_losses(self, x, step, values):
        row = {**{f"loss/{k}": v for k, v in values.items()}, "epoch": x}
        if step is not None:
            row["images_seen"] = step
        self.run.log(row)

    def _write_convergence(self, epoch, value):
        row = {f"convergence/{self.quantity.column}": value, "epoch": float(epoch)}
        if self.quantity.equilibrium is not None:
            row["convergence/equilibrium"] = self.quantity.equilibrium
        self.run.log(row)

    def _write_lines(self, name, x, values):
        self.run.log({**{f"{name}/{k}": v for k, v in values.items()}, "epoch": x})

    def _write_images(self, grid, epoch, step):
        self.run.log({"visuals": self._wandb.Image(grid, caption=f"epoch {epoch}, {images_seen(step)}"),
                      "epoch": float(epoch)})

    def _finish(self):
        self.run.finish()


def _plain(options):
    """Options as W&B config values: tuples as lists, infinities and other objects as text."""
    def plain(value):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)
    return {str(k): plain(v) for k, v in options.items()}
