"""The test-time path (models.inference): any size in, the same size out; tiles blended without seams."""
import re

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import stored_train_options, test_main
from models import create_model, inference

SIZES = {"a150x100": (150, 100), "b97x203": (97, 203)}  # name -> (width, height)
FAMILIES = {
    "pix2pix_unet": ["--model", "pix2pix", "--netG", "unet_256", "--ngf", "4", "--ndf", "4",
                     "--load_size", "256", "--crop_size", "256"],
    "pix2pix_resnet": ["--model", "pix2pix", "--netG", "resnet_6blocks", "--ngf", "4", "--ndf", "4",
                       "--load_size", "32", "--crop_size", "32"],
    "atme": ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
             "--load_size", "32", "--crop_size", "32"],
    "segan": ["--model", "segan", "--ngf", "4", "--ndf", "4", "--netD", "n_layers", "--n_layers_D", "2", "--nz", "4",
              "--load_size", "32", "--crop_size", "32"],
}
COMMON = ["--num_threads", "0", "--seed", "0", "--gpu_ids", "-1", "--display_id", "0", "--no_html"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of photos of odd sizes, as a user has them."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, (width, height) in SIZES.items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / f"{name}.png")
    return root


def make_run(checkpoints, family, dataroot):
    """A run folder with the stored options and untrained weights of `family`, as test.py finds a trained run."""
    opt = stored_train_options(["--dataroot", str(dataroot), "--checkpoints_dir", str(checkpoints), "--name", "run",
                                *FAMILIES[family], *COMMON])
    opt.dataset_size = 2
    model = create_model(opt)
    model.save_networks("latest")


def test_model(tmp_path, family, dataroot):
    """The model test.py builds for a run of `family`."""
    from options.test_options import TestOptions
    make_run(tmp_path / "checkpoints", family, dataroot)
    opt = TestOptions().parse(["--dataroot", str(dataroot), "--checkpoints_dir", str(tmp_path / "checkpoints"),
                               "--name", "run", "--gpu_ids", "-1"])
    model = create_model(opt)
    model.setup(opt)
    return model


test_model.__test__ = False  # a helper, not a test


def run_test(checkpoints, dataroot, results, *extra, check=True):
    return test_main("--dataroot", dataroot, "--checkpoints_dir", checkpoints, "--name", "run", "--results_dir",
                     results, "--dataset_mode", "single", "--preprocess", "none", "--num_threads", "0",
                     "--gpu_ids", "-1", *extra, check=check)


def written_sizes(results):
    """{input name: {(width, height) of every image written for it}}."""
    sizes = {}
    for path in sorted(results.rglob("*.png")):
        name = next(n for n in SIZES if path.name.startswith(n))
        sizes.setdefault(name, set()).add(Image.open(path).size)
    return sizes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_results_keep_the_input_size(family, photos, tmp_path):
    """150x100 and 97x203 photos with --preprocess none: every written image has its input's width and height
    (padding to the generator's multiple, not resizing), with no resize warning."""
    make_run(tmp_path / "checkpoints", family, photos)
    extra = ["--n_samples", "2"] if family == "segan" else []
    result = run_test(tmp_path / "checkpoints", photos, tmp_path / "results", *extra)
    assert "resiz" not in result.stdout + result.stderr
    sizes = written_sizes(tmp_path / "results")
    assert sizes == {name: {size} for name, size in SIZES.items()}
    outputs = [p.name for p in (tmp_path / "results").rglob("*fake_B*.png")]
    assert len(outputs) == 2 * (2 if family == "segan" else 1), outputs


def test_tiled_results_keep_the_input_size(photos, tmp_path):
    """ATME in 48-pixel tiles: W and its D map follow each tile; the results keep the input's size."""
    make_run(tmp_path / "checkpoints", "atme", photos)
    run_test(tmp_path / "checkpoints", photos, tmp_path / "results", "--tile", "48", "--tile_overlap", "16")
    assert written_sizes(tmp_path / "results") == {name: {size} for name, size in SIZES.items()}


def test_resizing_preprocess_is_said_with_the_flag(photos, tmp_path):
    make_run(tmp_path / "checkpoints", "pix2pix_resnet", photos)
    result = test_main("--dataroot", photos, "--checkpoints_dir", tmp_path / "checkpoints", "--name", "run",
                       "--results_dir", tmp_path / "results", "--dataset_mode", "single", "--num_threads", "0",
                       "--gpu_ids", "-1")
    assert "--preprocess resize_and_crop resizes every input to 32x32" in result.stdout + result.stderr
    assert "pass --preprocess none" in result.stdout + result.stderr
    assert written_sizes(tmp_path / "results") == {name: {(32, 32)} for name in SIZES}


def test_a_tile_the_model_cannot_take_is_refused_before_writing(photos, tmp_path):
    make_run(tmp_path / "checkpoints", "atme", photos)
    result = run_test(tmp_path / "checkpoints", photos, tmp_path / "results", "--tile", "16", check=False)
    assert result.returncode != 0
    said = " ".join((result.stderr + result.stdout).split())  # as one line: long errors wrap
    assert re.search(r"--tile 16 does not suit .*at least 24; use e\.g\. --tile 24", said)
    assert not (tmp_path / "results").exists()
    result = run_test(tmp_path / "checkpoints", photos, tmp_path / "results", "--tile", "32", "--tile_overlap", "40",
                      check=False)
    assert result.returncode != 0 and "--tile_overlap" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_images_come_back_at_their_size_or_are_refused_by_name(family, photos, tmp_path):
    """2x3 reflects; a side of 1 pixel cannot be reflected and says which --pad_mode can; replicate takes it."""
    model = test_model(tmp_path, family, photos)
    translate, rule = model.translator(), model.size_rule()
    with torch.no_grad():
        for height, width in ((2, 3), (3, 2), (5, 5)):
            outputs = inference.run(translate, torch.zeros(1, 3, height, width), rule)
            assert {tuple(t.shape[-2:]) for t in outputs.values()} == {(height, width)}
        for height, width in ((1, 1), (1, 7), (6, 1)):
            with pytest.raises(ValueError, match=rf"a {width}x{height} image cannot be padded by reflection.*"
                                                 r"--pad_mode replicate"):
                inference.run(translate, torch.zeros(1, 3, height, width), rule)
            outputs = inference.run(translate, torch.zeros(1, 3, height, width), rule, pad_mode="replicate")
            assert {tuple(t.shape[-2:]) for t in outputs.values()} == {(height, width)}


def test_atme_makes_its_test_time_map_for_the_padded_size(photos, tmp_path):
    """A 30x50 input is padded to 30x50 (multiples of 2, at least 24): W, noisy_A and fake_B have its size and the
    D map is the PatchGAN's for it; forward() at test time takes the same path as test()."""
    from models.networks.discriminators import patch_output_size
    model = test_model(tmp_path, "atme", photos)
    assert model.size_rule()[:2] == (2, 24)
    model.set_input({"A": torch.rand(1, 3, 30, 50) * 2 - 1, "A_paths": ["x.png"], "index": [0]})
    with torch.no_grad():
        model.forward()
    assert model.disc_prev.shape[-2:] == patch_output_size("basic", 3, 30, 50)
    assert {name: tuple(model.get_current_visuals()[name].shape[-2:]) for name in ("W", "noisy_A", "fake_B")} == {
        "W": (30, 50), "noisy_A": (30, 50), "fake_B": (30, 50)}
    model.set_input({"A": torch.rand(1, 3, 7, 9) * 2 - 1, "A_paths": ["x.png"], "index": [0]})
    model.test()
    assert model.disc_prev.shape[-2:] == patch_output_size("basic", 3, 24, 24)
    assert model.fake_B.shape[-2:] == (7, 9)


def test_a_one_pixel_photo_is_refused_by_test_py_and_nothing_is_written(photos, tmp_path):
    make_run(tmp_path / "checkpoints", "pix2pix_resnet", photos)
    root = tmp_path / "tiny"
    root.mkdir()
    Image.new("RGB", (1, 5), (10, 200, 30)).save(root / "line.png")
    result = run_test(tmp_path / "checkpoints", root, tmp_path / "results", check=False)
    assert result.returncode != 0
    said = " ".join(result.stderr.split())  # as one line: long errors wrap
    assert re.search(r"image .*line\.png is 1x5 \(width x height\).*--pad_mode replicate", said)
    assert not (tmp_path / "results").exists()
    run_test(tmp_path / "checkpoints", root, tmp_path / "results", "--pad_mode", "replicate")
    assert {Image.open(p).size for p in (tmp_path / "results").rglob("*.png")} == {(1, 5)}


def test_a_batch_of_photos_of_several_sizes_is_refused_with_the_batch_size_that_works(photos, tmp_path):
    make_run(tmp_path / "checkpoints", "pix2pix_resnet", photos)
    result = run_test(tmp_path / "checkpoints", photos, tmp_path / "results", "--batch_size", "2", check=False)
    assert result.returncode == 2 and "stack expects" not in result.stderr
    said = " ".join(result.stderr.split())
    assert re.search(r"--batch_size 2 with --preprocess none: the inputs have several sizes \(.* is \d+x\d+, .* is "
                     r"\d+x\d+\).*Use --batch_size 1", said), said
    assert not (tmp_path / "results").exists()
    run_test(tmp_path / "checkpoints", photos, tmp_path / "results", "--batch_size", "1")  # the advice
    assert written_sizes(tmp_path / "results") == {name: {size} for name, size in SIZES.items()}


# ---------------------------------------------------------------------- the path itself, with plain callables
def test_padding_then_cropping_returns_the_input_exactly():
    """An identity translator gives back x at every size and pad mode, and only ever sees sizes the rule takes."""
    rule = inference.SizeRule(8, 24, "a test net")

    def identity(x):
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0 and min(x.shape[-2:]) >= 24, x.shape
        return {"y": x.clone()}

    x = torch.randn(2, 3, 37, 50)
    for mode in inference.PAD_MODES:
        assert torch.equal(inference.run_padded(identity, x, rule, mode)["y"], x)
        torch.testing.assert_close(inference.run(identity, x, rule, mode, tile=24, overlap=8)["y"], x,
                                   rtol=1e-6, atol=1e-6)  # blended: sum(w * x) / sum(w)


def test_reflection_further_than_the_image_reflects_the_reflection():
    """F.pad reflects at most side - 1 pixels; padding 3x5 to 32x32 goes on as numpy's reflect does."""
    x = torch.arange(15.0).reshape(1, 1, 3, 5)
    padded = inference.pad_to(x, 32, 32, "reflect")
    expected = np.pad(x.numpy()[0, 0], ((14, 15), (13, 14)), mode="reflect")
    assert padded.shape == (1, 1, 32, 32) and np.array_equal(padded[0, 0].numpy(), expected)


def test_a_translator_that_changes_the_size_is_named():
    with pytest.raises(ValueError, match=r"output 'y' has shape \(1, 3, 16, 16\) for a 32x32 input"):
        inference.run_padded(lambda x: {"y": x[..., ::2, ::2]}, torch.zeros(1, 3, 32, 32), inference.SizeRule(1, 1, ""))


def local_net(radius):
    """`radius` 3x3 convolutions: each output pixel sees input pixels at most `radius` away."""
    torch.manual_seed(0)
    layers = []
    for i in range(radius):
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers, nn.Conv2d(8, 3, 1)).eval()


def test_tiled_equals_whole_image_when_the_receptive_field_fits_in_the_overlap():
    """Radius 3: a 16-pixel overlap (4 pixels left to each neighbour) gives the whole-image result to float
    tolerance, on both axes and at the image borders; an 8-pixel one (2 pixels) does not."""
    net = local_net(3)
    translate = lambda x: {"y": net(x)}
    rule = inference.SizeRule(1, 1, "a local net")
    x = torch.rand(1, 3, 100, 75) * 2 - 1
    with torch.no_grad():
        whole = translate(x)["y"]
        tiled = inference.run(translate, x, rule, tile=32, overlap=16)["y"]
        too_little = inference.run(translate, x, rule, tile=32, overlap=8)["y"]
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert (too_little - whole).abs().max() > 1e-3


def test_tiled_equals_whole_image_on_a_strided_network():
    """A 2x2 average pool then a nearest 2x upsampling (each output pixel sees its 2x2 block, inside the bound):
    tiles start at multiples of the rule's 2, so each sees the blocks the whole image has; an overlap of 9 would
    otherwise start the second tile at 23, one pixel off the blocks (differences up to the size of the input's)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(3, 3, 1), nn.Upsample(scale_factor=2, mode="nearest")).eval()
    translate = lambda x: {"y": net(x)}
    rule = inference.SizeRule(2, 2, "a strided net")
    x = torch.rand(1, 3, 100, 76) * 2 - 1
    with torch.no_grad():
        whole = translate(x)["y"]
        tiled = inference.run(translate, x, rule, tile=32, overlap=9)["y"]
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert all(start % 2 == 0 for start in inference.tile_starts(100, 32, 9, 2))


def test_an_overlap_that_leaves_no_aligned_step_is_refused_naming_the_flag():
    rule = inference.SizeRule(8, 24, "a test net")
    with pytest.raises(ValueError, match="--tile_overlap must be .* at most --tile 32 minus 8"):
        inference.check_tiles(rule, 32, 25)
    inference.check_tiles(rule, 32, 24)


def seam_zones(length, tile, overlap):
    """Masks over the jumps between neighbouring pixels (length - 1): where two tiles meet or blend, and inside
    a single tile (away from the image border)."""
    starts = inference.tile_starts(length, tile, overlap)
    shared = torch.zeros(length - 1, dtype=torch.bool)
    for start, following in zip(starts, starts[1:]):
        shared[max(following - 1, 0):start + tile] = True
    inside = ~shared
    inside[:2] = inside[-2:] = False
    return shared, inside


def test_blended_tiles_show_no_seams():
    """A network with per-tile normalisation statistics (instance norm) on a textured image: with blending, the
    mean jump between neighbouring rows (columns) where tiles meet is no larger than inside tiles (the largest of
    each, within 10%: the two maxima are over different rows of texture); tiles cut without overlap leave a seam
    of 1.4x and more, which is what the test would catch."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8), nn.Tanh(), nn.Conv2d(8, 3, 1),
                        nn.Tanh()).eval()
    translate = lambda x: {"y": net(x)}
    rule = inference.SizeRule(1, 1, "a normalising net")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    x = 0.7 * torch.stack([torch.sin(3 * xx + yy) + 0.3 * torch.sin(40 * xx) * torch.cos(30 * yy), xx ** 2 - yy,
                           xx * yy + 0.2 * torch.cos(50 * yy + 20 * xx)])[None]

    def border_and_inside(overlap):
        with torch.no_grad():
            y = inference.run(translate, x, rule, tile=64, overlap=overlap)["y"][0]
        found = []
        for axis in (1, 2):  # rows, then columns
            jumps = y.diff(dim=axis).abs().mean(dim=(0, 3 - axis))
            shared, inside = seam_zones(y.shape[axis], 64, overlap)
            found.append((jumps[shared].max().item(), jumps[inside].max().item()))
        return found

    for border, inside in border_and_inside(32):
        assert border <= 1.1 * inside, (border, inside)
    for border, inside in border_and_inside(0):
        assert border > 1.3 * inside, (border, inside)


@pytest.mark.slow
def test_a_2048x1536_image_in_tiles_needs_the_memory_of_a_tile():
    """Peak resident memory (getrusage in a child process, scripts.bench.tiles) of a ResNet generator on a
    2048x1536 image in 256-pixel tiles exceeds that of one 256x256 tile by less than six image-sized float
    buffers (input, blended sums, result), where one layer of whole-image activations alone would take more."""
    from scripts.bench.tiles import measure
    one_tile, _ = measure(256, 256, tile=0)
    large, _ = measure(1536, 2048, tile=256, overlap=64)
    image_buffer = 3 * 2048 * 1536 * 4
    whole_image_layer = 32 * 2048 * 1536 * 4  # the first convolution's output (ngf 32) on the whole image
    assert large - one_tile < 6 * image_buffer < whole_image_layer, (large, one_tile)
