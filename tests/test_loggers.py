"""TensorBoard and W&B behind the dashboard: they start from the run's CSV history and write only what they lack,
a broken logger warns once and never stops training, a logger that cannot start is refused with what to do;
the console keeps log lines off the progress bar and dates them."""
import glob
import io
import logging
import os
import re
import struct
import sys
import types
from collections import OrderedDict

import pytest
import torch

from conftest import train_main
from util.dashboard import Dashboard
from util.run.run_logs import CsvLog, setup_logging

pytestmark = pytest.mark.timeout(300)


def write_logs(run_dir, epochs, images_per_epoch=8, print_every=4):
    """loss_log.csv and convergence.csv rows for `epochs` as train.py writes them."""
    os.makedirs(run_dir, exist_ok=True)
    losses, conv = CsvLog(os.path.join(run_dir, "loss_log.csv")), CsvLog(os.path.join(run_dir, "convergence.csv"))
    for epoch in epochs:
        for iters in range(print_every, images_per_epoch + 1, print_every):
            total = (epoch - 1) * images_per_epoch + iters
            losses.append(dict(epoch=epoch, iters=iters, total_iters=total, G_GAN=1.0 / total, D_fake=0.5,
                               time_per_image=0.1, data_time=0.01))
        conv.append(dict(epoch=epoch, D_real=0.7, D_fake=0.6, neg_L_GAN=1.3, neg_L_GAN_minus_log4=1.3 - 1.386))


def visuals():
    return OrderedDict(real_A=torch.zeros(1, 3, 8, 8), fake_B=torch.ones(1, 3, 8, 8), real_B=-torch.ones(1, 3, 8, 8))


class FakeWandb(types.ModuleType):
    """Enough of the wandb module for the sink: records init arguments and every logged row."""

    def __init__(self, fail_log=False):
        super().__init__("wandb")
        self.inits, self.rows, self.finished, self.fail_log = [], [], 0, fail_log
        self.Settings = lambda **kw: kw
        self.Image = lambda data, caption=None: ("image", data.shape, caption)
        fake = self

        class Run:
            def define_metric(self, name, step_metric=None):
                pass

            def log(self, row):
                if fake.fail_log:
                    raise OSError("the W&B service went away")
                fake.rows.append(row)

            def finish(self):
                fake.finished += 1

        self._run = Run

    def init(self, **kwargs):
        self.inits.append(kwargs)
        return self._run()


def logged_x(rows, key):
    return [row["epoch"] for row in rows if key in row]


def test_wandb_starts_from_the_csv_history_and_a_resume_adds_only_new_points(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    write_logs(run, [1, 2])  # a first segment that ran without W&B
    dash = Dashboard(run, "wb", display_id=0, use_html=False, use_wandb=True, wandb_project="proj",
                     images_per_epoch=8, run_options={"lr": 2e-4, "max_dataset_size": float("inf"), "ids": (0, 1)})
    dash.plot_current_losses(3, 0.5, {"G_GAN": 0.1, "D_fake": 0.4}, total_iters=20)
    dash.epoch_snapshot(visuals(), 3, 24)
    dash.plot_convergence(3, 1.25)
    dash.close()
    init = fake.inits[0]
    assert init["project"] == "proj" and re.fullmatch(r"[0-9a-f]{8}", init["id"]) and init["resume"] == "allow"
    assert init["dir"] == str(run) and init["config"] == {"lr": 2e-4, "max_dataset_size": "inf", "ids": [0, 1]}
    assert logged_x(fake.rows, "loss/G_GAN") == [0.5, 1.0, 1.5, 2.0, 2.5]
    assert logged_x(fake.rows, "convergence/neg_L_GAN") == [1.0, 2.0, 3.0]
    assert [r["convergence/equilibrium"] for r in fake.rows if "convergence/equilibrium" in r] == \
        pytest.approx([1.3862944] * 3)
    assert [r["visuals"][2] for r in fake.rows if "visuals" in r] == ["epoch 3, 24 images seen"]
    assert fake.finished == 1

    fake.rows.clear()
    write_logs(run, [3])  # train.py's rows of epoch 3, then a resume
    again = Dashboard(run, "wb", display_id=0, use_html=False, use_wandb=True, wandb_project="proj",
                      images_per_epoch=8)
    again.close()
    assert fake.inits[1]["id"] == init["id"]  # the same W&B run goes on
    assert logged_x(fake.rows, "loss/G_GAN") == [3.0]  # only the row it had not logged


def test_a_broken_logger_warns_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    fake = FakeWandb(fail_log=True)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    dash = Dashboard(tmp_path, "broken", display_id=0, use_wandb=True, wandb_project="p", images_per_epoch=8)
    for k in range(1, 9):
        dash.plot_current_losses(1, k / 8, {"G_GAN": 1.0 / k}, total_iters=k)
        assert dash.flush(timeout=30)
    dash.epoch_snapshot(visuals(), 1, 8)
    dash.plot_convergence(1, 1.3)
    dash.close()
    warnings = [r.getMessage() for r in caplog.records
                if r.levelno == logging.WARNING and r.name.startswith("util.dashboard")]
    assert len(warnings) == 1 and "W&B: logging failed" in warnings[0] and "training goes on" in warnings[0]
    page = (tmp_path / "web" / "index.html").read_text()  # the other views carried on
    assert "epoch001_step000000008_fake_B.png" in page and "losses.png" in page


def test_a_logger_that_cannot_start_is_refused_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(RuntimeError, match=r"--use_wandb needs the wandb package .*pip install wandb=="):
        Dashboard(tmp_path, "x", display_id=0, use_wandb=True)

    failing = FakeWandb()
    failing.init = lambda **kw: (_ for _ in ()).throw(RuntimeError("api_key not configured (no-tty)"))
    monkeypatch.setitem(sys.modules, "wandb", failing)
    with pytest.raises(RuntimeError, match=r"wandb login.*WANDB_MODE=offline"):
        Dashboard(tmp_path, "y", display_id=0, use_wandb=True)

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(RuntimeError, match=r"--use_tensorboard needs the tensorboard package .*pip install"):
        Dashboard(tmp_path, "z", display_id=0, use_tensorboard=True)


# ------------------------------------------------------------------------------------------ W&B for real


def wandb_records(path):
    """The records of a .wandb file (LevelDB log format: 32 KiB blocks of chunks with a 7-byte header),
    parsed as wandb's protobuf Records."""
    from wandb.proto import wandb_internal_pb2
    data = open(path, "rb").read()
    assert data[:4] == b":W&B", path
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:  # padding to the end of a block
            pos += block - pos % block if pos % block else 0
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


@pytest.mark.slow  # wandb starts its service process
def test_wandb_offline_run_folder_holds_the_logged_keys(demo_root, tmp_path, monkeypatch):
    for variable, folder in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(variable, str(tmp_path / folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    ck = tmp_path / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "wb", "--model", "pix2pix", "--netG",
               "unet", "--ngf", "8", "--ndf", "8", "--load_size", "36", "--crop_size", "32", "--batch_size", "4",
               "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1", "--display_id", "0", "--print_freq", "4",
               "--n_epochs", "1", "--n_epochs_decay", "0", "--use_wandb", "--wandb_project_name", "offline_test")
    folders = glob.glob(str(ck / "wb" / "wandb" / "offline-run-*"))
    assert len(folders) == 1
    files = glob.glob(os.path.join(folders[0], "run-*.wandb"))
    assert len(files) == 1
    keys, config = set(), {}
    for record in wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            keys.update(item.key or "/".join(item.nested_key) for item in record.history.item)
        elif kind == "run":
            config.update((item.key, item.value_json) for item in record.run.config.update)
    for key in ("loss/G_GAN", "loss/G_L1", "loss/D_real", "loss/D_fake", "epoch", "convergence/neg_L_GAN",
                "convergence/equilibrium"):
        assert key in keys, (key, sorted(keys))
    assert any(key.startswith("visuals") for key in keys), sorted(keys)
    assert config.get("gan_mode") == '"vanilla"' and config.get("name") == '"wb"'


# ------------------------------------------------------------------------------------------ console


def test_log_lines_go_through_the_progress_bar_and_carry_the_date(tmp_path, monkeypatch):
    from tqdm import tqdm
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stream)
    setup_logging(str(tmp_path / "train.log"))
    bar = tqdm(total=4, file=stream, desc="epoch 1/1", ascii=True, mininterval=0)
    bar.update(1)
    logging.getLogger("train").info("saving the latest model")
    bar.update(1)
    bar.close()
    text = stream.getvalue()
    line = next(part for part in re.split(r"[\r\n]", text) if "saving the latest model" in part)
    # the bar was lifted first: the record starts its own line instead of trailing the bar's text
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO saving the latest model", line.strip()), repr(text)
    logged = (tmp_path / "train.log").read_text()
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO saving the latest model", logged)
