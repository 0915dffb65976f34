"""A damaged ATME pool refuses a resume before anything is written, naming the file, what is wrong and the
command that recovers (--reset_pool, or --start_over)."""
import json

import numpy as np
import pytest

from conftest import folder_state, train_main
from models.atme.pool_check import PoolError, check_maps

ARGS = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


def truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[:len(data) // 2])


def overwrite(value):
    def damage(path):
        array = np.load(path, mmap_mode="r+")
        array[...] = value
        array.flush()
        del array
    return damage


def break_json(path):
    with open(path, "w") as handle:
        handle.write('{"first_epoch": 1, "images"')


def wrong_size(path):
    meta = json.load(open(path))
    meta["images"] += 3
    json.dump(meta, open(path, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):
    ck = tmp_path_factory.mktemp("pool_check")
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *ARGS)
    return ck, demo_root


@pytest.mark.parametrize("name, damage, said", [
    ("disc_pool_a.npy", truncate, "may be truncated"),
    ("disc_pool_b.npy", overwrite(np.nan), "non-finite values"),
    ("disc_pool_a.npy", overwrite(3.5), "outside [0, 1]"),
    ("disc_pool.json", break_json, "unreadable or incomplete"),
    ("disc_pool.json", wrong_size, "was made for 11 images"),
])
def test_a_damaged_pool_refuses_the_resume_before_anything_is_written(trained, tmp_path, name, damage, said):
    import shutil
    ck, demo_root = trained
    run = tmp_path / "run"
    shutil.copytree(ck / "run", run)
    damage(str(run / name))
    before = folder_state(run)
    resume = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run", *ARGS, "--n_epochs", "2",
              "--continue_train"]
    refused = train_main(*resume, check=False)
    assert refused.returncode != 0
    message = refused.stderr
    assert f"the discriminator pool file {run / name}" in message and said in message, message[-2000:]
    assert "--reset_pool" in message and "--start_over" in message
    assert "Traceback" not in message
    assert folder_state(run) == before  # train_opt.json and .txt included
    # the recovering command, typed as the message says
    train_main(*resume, "--reset_pool")
    pool = np.load(run / "disc_pool_a.npy")
    assert np.isfinite(pool).all() and pool.shape[:2] == (8, 1) and 0 <= pool.min() and pool.max() <= 1


def test_a_logits_pool_may_leave_0_1_but_not_be_non_finite(tmp_path):
    path = str(tmp_path / "maps.npy")
    np.save(path, np.full((2, 1, 3, 3), -7.0, np.float32))
    check_maps(path, 2, (3, 3))
    with pytest.raises(PoolError, match=r"outside \[0, 1\]"):
        check_maps(path, 2, (3, 3), value_range=(0.0, 1.0))
    np.save(path, np.full((2, 1, 3, 3), np.inf, np.float32))
    with pytest.raises(PoolError, match="non-finite"):
        check_maps(path, 2, (3, 3))


def test_reset_pool_needs_a_resume(tmp_path, demo_root):
    refused = train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "fresh", *ARGS,
                         "--reset_pool", check=False)
    assert refused.returncode != 0 and "--reset_pool" in refused.stderr and "--continue_train" in refused.stderr
    assert not (tmp_path / "fresh").exists()
