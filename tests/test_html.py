"""HTML pages, test.py's save_images rows, and the image helpers under them."""
import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from util.dashboard import Dashboard
from util.views import html
from util.run import folder_swap
from util.run.atomic import WriteError
from util.views.html import HTML, save_images
from util.views.image_utils import make_grid, save_image, tensor2im


def test_tensor2im_maps_range_channels_and_batch_index():
    t = torch.stack([torch.full((1, 2, 3), -1.0), torch.full((1, 2, 3), 1.0)])  # (B=2, C=1, H=2, W=3)
    first, second = tensor2im(t), tensor2im(t, index=1)
    assert first.shape == (2, 3, 3) and first.dtype == np.uint8
    assert first.max() == 0 and second.min() == 255
    assert tensor2im(torch.zeros(3, 4, 4)).flatten().tolist() == [128] * 48  # 0 -> mid grey
    assert tensor2im(torch.full((3, 2, 2), 7.0)).max() == 255  # out of range is clipped, not wrapped
    rgb = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert (tensor2im(rgb) == rgb).all()  # an image already passes through
    with pytest.raises(ValueError, match="channels"):
        tensor2im(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="out of range"):
        tensor2im(torch.zeros(2, 3, 4, 4), index=2)


def test_save_image_is_atomic_and_applies_aspect_ratio(tmp_path):
    image = np.zeros((8, 10, 3), dtype=np.uint8)
    save_image(image, tmp_path / "wide.png", aspect_ratio=2.0)
    save_image(image, tmp_path / "tall.png", aspect_ratio=0.5)
    assert Image.open(tmp_path / "wide.png").size == (20, 8)
    assert Image.open(tmp_path / "tall.png").size == (10, 16)
    assert sorted(os.listdir(tmp_path)) == ["tall.png", "wide.png"]  # no temporary files left behind
    with pytest.raises(ValueError, match="uint8"):
        save_image(image.astype(np.float32), tmp_path / "bad.png")


def test_make_grid_tiles_labels_and_resizes():
    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = np.full((4, 4, 3), 255, dtype=np.uint8)  # resized to the first tile's size
    grid = make_grid([a, b, a], labels=["real_A", "fake_B", "real_B"], ncols=2, padding=2)
    unlabelled = make_grid([a, b, a], ncols=2, padding=2)
    assert unlabelled.shape == (2 * (8 + 2) + 2, 2 * (8 + 2) + 2, 3)
    assert grid.shape[0] > unlabelled.shape[0] and grid.shape[1] == unlabelled.shape[1]
    enlarged = make_grid([a, b], ncols=2, padding=2, min_tile=20)  # 8 px tiles x2 (a whole factor)
    assert enlarged.shape == (16 + 4, 2 * (16 + 2) + 2, 3)
    assert (enlarged[2:18, 20:36] == 255).all()  # the second tile, enlarged by nearest neighbour
    with pytest.raises(ValueError, match="labels"):
        make_grid([a, b], labels=["one"])


def test_html_page_rows_and_atomic_save(tmp_path):
    page = HTML(tmp_path / "web", "my title", refresh=5)
    assert page.get_image_dir() == str(tmp_path / "web" / "images")
    page.add_header("row one")
    page.add_images(["a.png", "b c.png"], ["first", "second"], ["a.png", "b c.png"], width=64)
    path = page.save()
    text = open(path).read()
    assert "<title>my title</title>" in text and 'http-equiv="refresh"' in text
    assert 'src="images/a.png"' in text and 'src="images/b%20c.png"' in text and "width:64px" in text
    assert sorted(os.listdir(tmp_path / "web")) == ["images", "index.html"]  # no temporary file left
    with pytest.raises(ValueError, match="captions"):
        page.add_images(["a.png"], [], [])


def test_save_images_one_row_per_input_with_any_number_of_outputs(tmp_path):
    page = HTML(tmp_path, "test results")
    outputs = OrderedDict((f"fake_B_{k}", torch.rand(2, 3, 8, 8) * 2 - 1) for k in range(8))
    visuals = OrderedDict(list(outputs.items())[:4] + [("real_A", torch.rand(2, 1, 8, 8)),
                                                        ("real_B", torch.rand(2, 3, 8, 8))]
                          + list(outputs.items())[4:])
    saved = save_images(page, visuals, ["/data/test/1.jpg", "/data/test/2.jpg"], aspect_ratio=1.0, width=32)
    assert len(saved) == 2 * 10 and all(os.path.getsize(p) > 0 for p in saved)
    text = open(page.save()).read()
    rows = re.findall(r"<tr>(.*?)</tr>", text, flags=re.S)
    assert len(rows) == 2
    for stem, row in zip(("1", "2"), rows):
        srcs = re.findall(r'src="images/([^"]+)"', row)
        # input, then every output in the model's order, then the target
        assert srcs == [f"{stem}_real_A.png"] + [f"{stem}_fake_B_{k}.png" for k in range(8)] + [f"{stem}_real_B.png"]
    # each row shows its own sample of the batch
    first = np.asarray(Image.open(tmp_path / "images" / "1_real_B.png"))
    second = np.asarray(Image.open(tmp_path / "images" / "2_real_B.png"))
    assert (first == tensor2im(visuals["real_B"], index=0)).all() and (second == tensor2im(visuals["real_B"], index=1)).all()
    with pytest.raises(ValueError, match="image paths"):
        save_images(page, visuals, ["/only/one.jpg"])


def test_dashboard_page_lists_steps_newest_first_with_plots_on_top(tmp_path):
    dash = Dashboard(tmp_path, "page_run", display_id=0, winsize=64)
    for epoch, step in [(1, 4), (1, 8), (2, 12)]:
        dash.plot_current_losses(epoch, step / 8 - (epoch - 1), {"G_GAN": 1.0, "D_fake": 0.5})
        visuals = OrderedDict(real_A=torch.zeros(1, 3, 8, 8), fake_B=torch.ones(1, 3, 8, 8),
                              real_B=-torch.ones(1, 3, 8, 8))
        dash.display_current_results(visuals, epoch=epoch, step=step, save_result=True)
    dash.plot_convergence(1, 1.25)
    dash.close()
    text = (tmp_path / "web" / "index.html").read_text()
    headers = re.findall(r"<h3>(.*?)</h3>", text)
    assert headers == ["Curves", "epoch 2, 12 images seen", "epoch 1, 8 images seen", "epoch 1, 4 images seen"]
    assert text.index("losses.png") < text.index("convergence.png") < text.index("epoch002_step000000012_real_A")
    row = re.findall(r'src="images/(epoch002_step000000012_[^"]+)"', text)
    assert row == [f"epoch002_step000000012_{k}.png" for k in ("real_A", "fake_B", "real_B")]
    saved = np.asarray(Image.open(tmp_path / "web" / "images" / "epoch001_step000000004_fake_B.png"))
    assert saved.shape == (8, 8, 3) and saved.min() == 255
    assert Image.open(tmp_path / "web" / "images" / "losses.png").size[0] > 100


def test_result_images_are_replaced_as_a_whole_or_not_at_all(tmp_path):
    web = tmp_path / "test_latest"
    with html.replacing_images(web) as staging:
        for name in ("a.png", "b.png", "c.png"):
            (Path(staging) / name).write_bytes(b"old")
    assert sorted(p.name for p in (web / "images").iterdir()) == ["a.png", "b.png", "c.png"]
    # A failing rerun leaves the earlier images as they were and no staging folder behind.
    with pytest.raises(RuntimeError):
        with html.replacing_images(web) as staging:
            (Path(staging) / "a.png").write_bytes(b"new")
            raise RuntimeError("test stopped")
    assert sorted(p.name for p in (web / "images").iterdir()) == ["a.png", "b.png", "c.png"]
    assert sorted(p.name for p in web.iterdir()) == ["images"]
    # A staging folder a killed process left behind is removed; a successful rerun holds only its own images.
    (web / ".images.k1ll3d00.tmp").mkdir()
    (web / ".images.k1ll3d00.tmp" / "x.png").write_bytes(b"half")
    with html.replacing_images(web) as staging:
        (Path(staging) / "a.png").write_bytes(b"new")
    assert [p.name for p in (web / "images").iterdir()] == ["a.png"]
    assert (web / "images" / "a.png").read_bytes() == b"new"
    assert sorted(p.name for p in web.iterdir()) == ["images"]


def test_a_swap_that_fails_keeps_the_earlier_images(tmp_path, monkeypatch):
    web = tmp_path / "test_latest"
    with html.replacing_images(web) as staging:
        (Path(staging) / "a.png").write_bytes(b"old")

    def failing_exchange(first, second):  # the one step that puts the new folder in place fails
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder_swap, "_exchange", failing_exchange)
    with pytest.raises(WriteError, match="images: the disk is full"):
        with html.replacing_images(web) as staging:
            (Path(staging) / "b.png").write_bytes(b"new")
    monkeypatch.undo()
    assert [p.name for p in (web / "images").iterdir()] == ["a.png"]
    assert sorted(p.name for p in web.iterdir()) == ["images"]


def test_a_second_writer_never_removes_a_live_writers_staging_folder(tmp_path):
    """While one writer holds the results folder (its staging folder filling), another is refused naming the
    first's process, and the first's staging folder and images stay."""
    from util.run.results_folder import ResultsFolderError
    web = tmp_path / "test_latest"
    with html.replacing_images(web) as first:
        (Path(first) / "a.png").write_bytes(b"first")
        with pytest.raises(ResultsFolderError, match=rf"being written by process {os.getpid()} .*--results_dir"):
            with html.replacing_images(web):
                pass
        assert (Path(first) / "a.png").read_bytes() == b"first"
    assert [p.name for p in (web / "images").iterdir()] == ["a.png"]


def test_links_quote_question_marks_hashes_and_percent_signs(tmp_path):
    """A `?`, `#` or `%` in an input's file name is part of the name, not a query, fragment or escape: each link
    and image source, unquoted, names the file; the dashboard's `?v=<digits>` cache buster stays a query."""
    from urllib.parse import unquote
    names = ["what?.png", "no#1.png", "100%.png", "a?v=1.png"]
    page = HTML(tmp_path / "web", "quoting")
    page.add_images(names, ["q", "h", "p", "v"], names, width=64)
    page.add_images(["plot.png?v=123"], ["plot"], ["plot.png?v=123"], width=None)
    text = page.render()
    sources = re.findall(r'src="([^"]+)"', text)
    links = re.findall(r'href="([^"]+)"', text)
    assert sources == links
    assert [unquote(s) for s in sources[:4]] == [f"images/{n}" for n in names]
    assert all("?" not in s and "#" not in s for s in sources[:4])
    assert sources[4] == "images/plot.png?v=123"
