"""One result per input, named after it: subfolders mirrored, colliding stems kept apart, the count printed is the
count written, the page shows each, and the metric readers (KID/FID, diversity, FCN) find the nested layout."""
import html
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, test_main, train_main
from util.run.result_files import (ResultNames, find_labelled_images, find_numbered_images, list_images,
                               result_image_sets)

TINY = ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]
# input (relative to the data folder) -> grey level; 0.jpg/0.png and sub1/x.jpg/sub2/x.jpg share stems
INPUTS = {"0.jpg": 10, "0.png": 245, "1.png": 128, "sub1/x.jpg": 40, "sub2/x.jpg": 200}
EXPECTED = {"0.jpg": "0_jpg", "0.png": "0_png", "1.png": "1", "sub1/x.jpg": "sub1/x", "sub2/x.jpg": "sub2/x"}


def test_names_mirror_subfolders_and_keep_colliding_stems_apart(tmp_path):
    names = ResultNames([tmp_path / p for p in INPUTS], tmp_path)
    assert {p: names(tmp_path / p) for p in INPUTS} == EXPECTED
    reordered = ResultNames([tmp_path / p for p in reversed(list(INPUTS))], tmp_path)
    assert {p: reordered(tmp_path / p) for p in INPUTS} == EXPECTED  # the order of the inputs does not matter


def test_names_stay_unique_when_a_stem_with_extension_exists_as_an_input(tmp_path):
    paths = [tmp_path / n for n in ("0.jpg", "0.png", "0_jpg.png", "A.png", "a.png")]
    names = ResultNames(paths, tmp_path)
    got = [names(p) for p in paths]
    assert len({name.casefold() for name in got}) == len(got) and got[:2] == ["0_jpg", "0_png"]
    assert got[3:] == ["A_png", "a_png_2"]  # one file on a case-insensitive disk otherwise
    assert names(tmp_path / "later" / "1.png") == "later/1"  # an input outside the list gets a name too
    assert names(tmp_path / "0.bmp") not in got


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root):
    ck = tmp_path_factory.mktemp("names") / "ck"
    train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "run", *TINY)
    return ck


def write_inputs(folder):
    for rel, grey in INPUTS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), grey, np.uint8)).save(path)


def test_test_py_writes_one_result_per_input(trained, tmp_path):
    data = tmp_path / "photos"
    write_inputs(data)
    out = test_main("--dataroot", data, "--dataset_mode", "single", "--checkpoints_dir", trained, "--name", "run",
                    "--results_dir", tmp_path / "res", "--gpu_ids", "-1", "--num_threads", "0")
    web = tmp_path / "res" / "run" / "photos_latest"  # not the run's data folder: a folder of its own
    files = list_images(str(web / "images"))
    printed = re.search(r"(\d+) inputs, (\d+) image files", out.stdout + out.stderr)
    assert printed, out.stdout[-2000:]
    assert (int(printed.group(1)), int(printed.group(2))) == (len(INPUTS), len(files)) == (5, 10)
    page = html.unescape((web / "index.html").read_text())
    for rel, grey in INPUTS.items():
        name = EXPECTED[rel]
        real = web / "images" / f"{name}_real_A.png"
        assert real.is_file() and (web / "images" / f"{name}_fake_B.png").is_file(), name
        assert abs(np.asarray(Image.open(real)).mean() - grey) < 8, f"{real} holds another input's image"
        assert f'src="images/{name}_fake_B.png"' in page and f"<h3>{rel}</h3>" in page
    fakes = find_labelled_images(str(web / "images"), "fake_B")
    assert sorted(fakes) == sorted(EXPECTED.values())


def test_metric_readers_find_the_nested_layout(tmp_path):
    images = tmp_path / "res" / "images"
    for name in EXPECTED.values():
        for label in ("real_B", "fake_B", "fake_B_0", "fake_B_1"):
            path = images / f"{name}_{label}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(path)
    real, fake = result_image_sets(str(tmp_path / "res"))
    assert len(real) == len(fake) == 5
    assert [os.path.relpath(p, images) for p in fake] == [f"{n}_fake_B.png" for n in sorted(EXPECTED.values())]
    groups = find_numbered_images(str(images), "fake_B")
    assert sorted(groups) == sorted(EXPECTED.values()) and all(len(g) == 2 for g in groups.values())


def test_a_folder_above_several_results_is_refused(tmp_path):
    from util.run.result_files import images_dir
    for epoch in ("test_latest", "test_5"):
        (tmp_path / "run" / epoch / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"--results_dir .*run/test_5"):
        result_image_sets(str(tmp_path / "run"))
    assert images_dir(str(tmp_path / "run" / "test_5")) == str(tmp_path / "run" / "test_5" / "images")


def test_other_photos_get_a_folder_of_their_own_and_the_page_names_data_and_backend(trained, tmp_path, demo_root):
    """The run's own data set writes <phase>_<epoch>; a folder of photos writes <its name>_<epoch> and leaves
    the split's result as it was; each page's heading names its data folder and the backend, and the
    console says which backend ran."""
    common = ["--checkpoints_dir", trained, "--name", "run", "--results_dir", tmp_path / "res", "--gpu_ids", "-1",
              "--num_threads", "0"]
    split = test_main("--dataroot", demo_root, *common)
    own = tmp_path / "res" / "run" / "test_latest"
    before = {p.name: p.read_bytes() for p in (own / "images").iterdir()}
    assert "the generator runs on PyTorch eager (--backend torch)" in split.stdout + split.stderr
    data = tmp_path / "photos"
    write_inputs(data)
    test_main("--dataroot", data, "--dataset_mode", "single", *common)
    assert {p.name: p.read_bytes() for p in (own / "images").iterdir()} == before
    assert len(list_images(str(tmp_path / "res" / "run" / "photos_latest" / "images"))) == 10
    for folder, root in ((own, demo_root), (tmp_path / "res" / "run" / "photos_latest", data)):
        heading = html.unescape(re.search(r"<h2>(.*?)</h2>", (folder / "index.html").read_text()).group(1))
        assert f"data {root} (test split" in heading and "PyTorch eager" in heading, heading


def test_another_data_folder_of_the_same_name_is_refused_naming_results_dir(trained, tmp_path):
    """Two data folders called `photos`: the second's result would land in the first's folder; it is refused,
    naming --results_dir, and the first's result stays."""
    common = ["--dataset_mode", "single", "--checkpoints_dir", trained, "--name", "run", "--results_dir",
              tmp_path / "res", "--gpu_ids", "-1", "--num_threads", "0"]
    first, second = tmp_path / "a" / "photos", tmp_path / "b" / "photos"
    write_inputs(first)
    write_inputs(second)
    test_main("--dataroot", first, *common)
    web = tmp_path / "res" / "run" / "photos_latest"
    before = {p: p.read_bytes() for p in web.rglob("*") if p.is_file()}
    result = test_main("--dataroot", second, *common, check=False)
    assert result.returncode != 0 and f"holds the result of {first}" in result.stderr
    assert "--results_dir" in result.stderr
    assert {p: p.read_bytes() for p in web.rglob("*") if p.is_file()} == before


SLOW_WRITER = """
import sys, time
sys.argv = ["test.py"] + sys.argv[1:]
import test
real = test.save_images
def late(*args, **kwargs):
    time.sleep(0.05)
    return real(*args, **kwargs)
test.save_images = late
from util.command_line.cli import run_main
run_main(test.main)
"""


@pytest.mark.slow
def test_two_tests_on_one_results_folder_never_lose_an_image(trained, tmp_path):
    """A second test.py (--num_test 2) started on a results folder while the first writes its 300 inputs: it is
    refused naming the first's process, and the page links every image, and images/ holds every linked one.
    (Without the lock the second removed the first's staging folder, and the first's page linked 600 images of
    which images/ held those written afterwards.)"""
    data = tmp_path / "photos"
    data.mkdir()
    for i in range(300):  # the first one writes for longer than the second takes to start
        Image.fromarray(np.full((64, 64, 3), i % 256, np.uint8)).save(data / f"{i}.png")
    command = [sys.executable, os.path.join(ROOT, "test.py"), "--dataroot", str(data), "--dataset_mode", "single",
               "--checkpoints_dir", str(trained), "--name", "run", "--results_dir", str(tmp_path / "res"),
               "--gpu_ids", "-1", "--num_threads", "0", "--preprocess", "none"]
    web = tmp_path / "res" / "run" / "photos_latest"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # The first one writes each image 50 ms late, so it is still writing when the second has started up, however
    # fast this machine is (an idle one wrote all 300 before the second's imports were done).
    first = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, *command[2:]], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (web.is_dir() and any(p.name.endswith(".tmp") for p in web.iterdir())):
        time.sleep(0.02)  # until the first one's staging folder exists
    second = subprocess.run(command + ["--num_test", "2"], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=300)
    out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out[-3000:]
    assert second.returncode != 0, second.stdout[-2000:]
    assert f"is being written by process {first.pid} " in second.stderr and "--results_dir" in second.stderr
    page = html.unescape((web / "index.html").read_text())
    linked = set(re.findall(r'src="images/([^"]+)"', page))
    written = {os.path.relpath(p, web / "images") for p in list_images(str(web / "images"))}
    assert linked == written and len(written) == 2 * 300
