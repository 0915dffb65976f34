"""test.py beside a training: the networks of one checkpoint come from one save, even when a save replaces the
set while they are read (G from one save and W from the next would be a network pair that never existed)."""
import torch

from conftest import train_main
from models import create_model
from options.test_options import TestOptions
from util.run import checkpoint

ATME = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


def test_a_save_between_two_networks_makes_the_reader_take_the_new_set_whole(tmp_path, demo_root, monkeypatch):
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run", *ATME)
    opt = TestOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "run", "--results_dir",
                               str(tmp_path / "res")])
    writer = create_model(opt)  # stands in for the training that saves beside the reader
    for _, net in writer.networks():
        for p in net.parameters():
            p.data.add_(0.25)
    real_load, calls = checkpoint.load_file, []

    def load_then_a_save_lands(path, *args, **kwargs):
        state = real_load(path, *args, **kwargs)
        calls.append(path)
        if len(calls) == 1:  # after the first network of the set, the training commits a new set
            writer.save_networks("latest")
        return state
    monkeypatch.setattr(checkpoint, "load_file", load_then_a_save_lands)
    reader = create_model(opt)
    reader.setup(opt)
    assert len(calls) > len(list(reader.networks())), "the set was read once only"
    for (name, mine), (_, theirs) in zip(reader.networks(), writer.networks()):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value), f"network {name} is not from the newest save"
