"""Every committed checkpoint set records the SHA-256 of its files; a resume and test.py check them before they
load anything, and name a corrupt file (torch's zip reader would load a flipped byte without complaint)."""
import json
import os

import torch

from conftest import test_main, train_main
from util.run import integrity

ARGS = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance", "--load_size", "36",
        "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0", "--gpu_ids", "-1",
        "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0", "--save_epoch_freq", "1"]


def flip_a_byte_inside_a_tensor(path, tensor_name):
    """Flip one byte of a tensor's payload, not of the zip structure: torch still loads the file."""
    data = bytearray(open(path, "rb").read())
    state = torch.load(path, map_location="cpu", weights_only=False)
    values = state[tensor_name] if tensor_name in state else state["networks"]["G"][tensor_name]
    needle = values.numpy().tobytes()[:64]
    at = bytes(data).find(needle)
    assert at > 0, "the tensor's bytes are stored uncompressed in the zip"
    data[at + 3] ^= 0x10
    with open(path, "wb") as handle:
        handle.write(data)
    torch.load(path, map_location="cpu", weights_only=False)  # the corruption goes unnoticed by torch


def test_each_set_records_the_checksums_of_its_files(tmp_path, demo_root):
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "sums", *ARGS)
    run = tmp_path / "sums"
    for tag in ("latest", "1"):
        sums = json.loads((run / f"{tag}_checksums.json").read_text())["sha256"]
        assert sorted(sums) == [f"{tag}_net_D.pth", f"{tag}_net_G.pth", f"{tag}_train_state.pth"]
        for name, digest in sums.items():
            assert integrity.sha256_of(run / name) == digest


def test_a_flipped_byte_is_named_by_test_py_and_by_a_resume(tmp_path, demo_root):
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "flip"]
    train_main(*args, *ARGS)
    run = tmp_path / "flip"
    key = "model.model.0.weight"
    flip_a_byte_inside_a_tensor(run / "latest_net_G.pth", key)
    tested = test_main(*args, "--results_dir", tmp_path / "results", "--num_test", "1", check=False)
    assert tested.returncode != 0
    assert f"{run / 'latest_net_G.pth'} is corrupt" in tested.stderr and "--epoch" in tested.stderr
    assert not (tmp_path / "results").exists()
    # the way out for a file one trusts anyway
    test_main(*args, "--results_dir", tmp_path / "results", "--num_test", "1", "--no_verify")

    flip_a_byte_inside_a_tensor(run / "latest_train_state.pth", key)
    resume = [*args, *ARGS, "--n_epochs", "2", "--continue_train"]
    before = sorted(os.listdir(run))
    refused = train_main(*resume, check=False)
    assert refused.returncode != 0
    assert f"{run / 'latest_train_state.pth'} is corrupt" in refused.stderr
    assert "--continue_train --epoch N" in refused.stderr
    assert sorted(os.listdir(run)) == before
    # the advice, typed as shown: the epoch-1 set is intact
    train_main(*resume, "--epoch", "1")


def test_a_flipped_byte_in_a_kept_atme_pool_is_named(tmp_path, demo_root):
    atme = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
            *ARGS[10:]]
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "pool", *atme]
    train_main(*args)
    kept = tmp_path / "pool" / "1_disc_pool.npy"
    assert "1_disc_pool.npy" in json.loads((tmp_path / "pool" / "1_checksums.json").read_text())["sha256"]
    data = bytearray(kept.read_bytes())
    data[-1] ^= 0x01  # the last map's lowest mantissa bit: still a finite value in [0, 1]
    kept.write_bytes(bytes(data))
    refused = train_main(*args, "--n_epochs", "2", "--continue_train", "--epoch", "1", check=False)
    assert refused.returncode != 0 and f"{kept} is corrupt" in refused.stderr
    assert "--no_verify" in refused.stderr


def test_a_deleted_checksum_list_of_a_set_that_had_one_is_refused(tmp_path, demo_root):
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "gone"]
    train_main(*args, *ARGS)
    run = tmp_path / "gone"
    assert json.loads((run / integrity.SETS_FILE).read_text())["sets"] == ["1", "latest"]
    os.remove(run / "latest_checksums.json")
    tested = test_main(*args, "--results_dir", tmp_path / "results", "--num_test", "1", check=False)
    assert tested.returncode != 0
    said = " ".join(tested.stderr.split())
    assert f"the checksum list {run / 'latest_checksums.json'} is missing" in said and "--no_verify" in said
    assert not (tmp_path / "results").exists()
    resume = [*args, *ARGS, "--n_epochs", "2", "--continue_train"]
    before = sorted(os.listdir(run))
    refused = train_main(*resume, check=False)
    assert refused.returncode != 0 and "latest_checksums.json is missing" in refused.stderr
    assert sorted(os.listdir(run)) == before
    # the way out, typed as said
    test_main(*args, "--results_dir", tmp_path / "results", "--num_test", "1", "--no_verify")


def test_a_set_saved_before_checksums_loads_with_a_note(tmp_path, demo_root):
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "older"]
    train_main(*args, *ARGS)
    run = tmp_path / "older"
    for name in ("latest_checksums.json", "1_checksums.json", integrity.SETS_FILE):  # as an older version left it
        os.remove(run / name)
    tested = test_main(*args, "--results_dir", tmp_path / "results", "--num_test", "1")
    assert "has no recorded checksum" in tested.stdout and "loads unchecked" in tested.stdout


def test_a_deleted_kept_pool_is_named_with_reset_pool_as_the_way_out(tmp_path, demo_root):
    atme = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
            *ARGS[10:]]
    args = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "nopool", *atme]
    train_main(*args)
    kept = tmp_path / "nopool" / "1_disc_pool.npy"
    os.remove(kept)
    resume = [*args, "--n_epochs", "2", "--continue_train", "--epoch", "1"]
    refused = train_main(*resume, check=False)
    said = " ".join(refused.stderr.split())
    assert refused.returncode != 0 and f"{kept} is missing" in said, said
    assert "--reset_pool" in said and "--no_verify" in said and "Errno" not in said
    train_main(*resume, "--reset_pool")  # the advice, typed as said
