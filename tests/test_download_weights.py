"""scripts/tools/download_weights.py: released weights become a run folder test.py reads; a source that cannot be
read (offline) fails fast with what to do and leaves nothing behind."""
import hashlib
import json
import os

import pytest
import torch

from conftest import printed_commands, run_cli, run_main, script_args, test_main
from scripts.tools import download_weights

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def download(*args):
    return run_main(download_weights.main, *args, check=False)


def tiny_pix2pix_file(path, ngf=4, prefix=""):
    """A pix2pix U-Net 256 generator's weights as the published files hold them (no BatchNorm counters, as an
    older PyTorch saved them), at a small width."""
    from models.networks.generators import define_G
    torch.manual_seed(0)
    net = define_G(3, 3, ngf, "unet_256", norm="batch", use_dropout=True)
    state = {prefix + k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_pix2pix_weights_from_a_url_become_a_run_test_py_reads(tmp_path, demo_root):
    source = tmp_path / "facades_label2photo.pth"
    digest = tiny_pix2pix_file(source)
    ck = tmp_path / "checkpoints"
    result = download("pix2pix", "facades_label2photo", "--url", source.as_uri(), "--checkpoints_dir", ck,
                      "--sha256", digest)
    assert result.returncode == 0, result.stderr
    assert f"SHA-256 of {source.as_uri()}: {digest}" in result.stdout
    run = ck / "facades_label2photo_pretrained"
    assert sorted(os.listdir(run)) == ["download.json", "latest_net_G.pth", "train_opt.json"]
    assert sorted(os.listdir(ck)) == ["facades_label2photo_pretrained"]  # no staging folder left
    stored = json.loads((run / "train_opt.json").read_text())
    assert (stored["model"], stored["netG"], stored["norm"], stored["no_dropout"], stored["ngf"],
            stored["direction"]) == ("pix2pix", "unet_256", "batch", False, 4, "BtoA")
    record = json.loads((run / "download.json").read_text())["files"][0]
    assert record["sha256"] == digest and record["source"] == source.as_uri()
    placed = torch.load(run / "latest_net_G.pth", weights_only=True)
    assert "model.model.1.model.2.num_batches_tracked" in placed  # the counters an older PyTorch did not save
    assert record["placed_sha256"] == hashlib.sha256((run / "latest_net_G.pth").read_bytes()).hexdigest()

    # The printed test command runs as printed, with a data folder of this test in place of the facades.
    test_line = [c for c in printed_commands(result.stdout) if "test.py" in c]
    assert len(test_line) == 1, result.stdout
    args = script_args(test_line[0], "test.py")
    assert args[args.index("--dataroot") + 1] == "./datasets/facades"
    args[args.index("--dataroot") + 1] = demo_root
    test_main(*args, "--results_dir", tmp_path / "results", "--num_test", "1")
    written = sorted(p.name for p in (tmp_path / "results" / "facades_label2photo_pretrained").rglob("*.png"))
    assert [name.split("_", 1)[1] for name in written] == ["fake_B.png", "real_A.png", "real_B.png"], written


def test_a_local_file_with_a_module_prefix_is_placed_and_a_second_run_does_nothing(tmp_path):
    source = tmp_path / "edges.pth"
    tiny_pix2pix_file(source, prefix="module.")
    ck = tmp_path / "checkpoints"
    assert download("pix2pix", "edges2shoes", "--url", source, "--checkpoints_dir", ck).returncode == 0
    run = ck / "edges2shoes_pretrained"
    assert json.loads((run / "train_opt.json").read_text())["direction"] == "AtoB"
    assert not any(k.startswith("module.") for k in torch.load(run / "latest_net_G.pth", weights_only=True))
    again = download("pix2pix", "edges2shoes", "--url", tmp_path / "gone.pth", "--checkpoints_dir", ck)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    forced = download("pix2pix", "edges2shoes", "--url", tmp_path / "gone.pth", "--checkpoints_dir", ck, "--force")
    assert forced.returncode == 2 and "gone.pth is not a file" in forced.stderr
    assert os.path.isfile(run / "latest_net_G.pth")  # a failed --force leaves the folder as it was


@pytest.mark.parametrize("how", ["url", "env"])
def test_offline_fails_at_once_with_what_to_do_and_leaves_nothing(tmp_path, monkeypatch, how):
    ck = tmp_path / "new" / "checkpoints"
    if how == "env":
        monkeypatch.setenv("PIX2PIX_MODELS_URL", UNREACHABLE)
        args = ()
    else:
        args = ("--url", f"{UNREACHABLE}/map2sat.pth")
    result = download("pix2pix", "map2sat", "--checkpoints_dir", ck, "--timeout", "5", *args)
    assert result.returncode == 2
    assert f"could not download {UNREACHABLE}/map2sat.pth" in result.stderr
    assert "PIX2PIX_MODELS_URL" in result.stderr and "--verbose" not in result.stderr
    local = [c for c in printed_commands(result.stderr) if "download_weights" in c]
    assert local and script_args(local[0], "scripts.tools.download_weights")[:3] == ["pix2pix", "map2sat", "--url"]
    assert not (tmp_path / "new").exists()  # no folder it created stays behind


def test_a_wrong_sum_or_a_file_of_another_network_is_refused_before_anything_is_placed(tmp_path):
    source = tmp_path / "sat2map.pth"
    digest = tiny_pix2pix_file(source)
    ck = tmp_path / "checkpoints"
    wrong = "0" * 64
    refused = download("pix2pix", "sat2map", "--url", source, "--checkpoints_dir", ck, "--sha256", wrong)
    assert refused.returncode == 2 and f"SHA-256 {digest} differs" in refused.stderr
    assert not ck.exists()
    torch.save({"weight": torch.zeros(3, 3)}, source)
    other = download("pix2pix", "sat2map", "--url", source, "--checkpoints_dir", ck)
    assert other.returncode == 2 and "is not a pix2pix U-Net generator" in other.stderr
    assert not ck.exists()
    bad = download("pix2pix", "sat2map", "--url", source, "--checkpoints_dir", ck, "--sha256", "abc")
    assert bad.returncode == 2 and "64 hexadecimal digits" in bad.stderr


def release_files(folder):
    """The ATME release's G, T and D files (the layout of models/atme/release_layout.json), zero-filled."""
    from models.atme.release import release_layouts
    folder.mkdir()
    for name, layout in release_layouts().items():
        torch.save({k: torch.zeros(shape) for k, shape in layout.items()},
                   folder / f"latest_net_{'T' if name == 'W' else name}.pth")


def test_atme_release_from_a_folder_is_converted_and_without_a_source_says_what_to_do(tmp_path):
    ck = tmp_path / "checkpoints"
    missing = download("atme", "--checkpoints_dir", ck)
    assert missing.returncode == 2 and "no URL for the authors' release is known" in missing.stderr
    assert not ck.exists()
    offline = download("atme", "--url", f"{UNREACHABLE}/atme", "--checkpoints_dir", ck, "--timeout", "5")
    assert offline.returncode == 2 and f"could not download {UNREACHABLE}/atme/latest_net_G.pth" in offline.stderr
    assert not ck.exists()

    release_files(tmp_path / "release")
    done = download("atme", "--url", (tmp_path / "release").as_uri(), "--name", "group/facades_atme",
                    "--checkpoints_dir", ck, "--direction", "BtoA")
    assert done.returncode == 0, done.stderr
    run = ck / "group" / "facades_atme"
    assert {"latest_net_G.pth", "latest_net_T.pth", "latest_net_D.pth", "latest_net_W.pth", "train_opt.json",
            "download.json"} == set(os.listdir(run))
    assert torch.load(run / "latest_net_W.pth", weights_only=True).keys() == \
        torch.load(run / "latest_net_T.pth", weights_only=True).keys()
    assert json.loads((run / "train_opt.json").read_text())["model"] == "atme"
    sums = {f["file"]: f.get("sha256") for f in json.loads((run / "download.json").read_text())["files"]}
    assert sums["latest_net_G.pth"] == hashlib.sha256((run / "latest_net_G.pth").read_bytes()).hexdigest()
    assert "--name group/facades_atme" in done.stdout


@pytest.mark.slow
def test_the_script_as_a_file_fails_offline_within_its_timeout(tmp_path):
    proc = run_cli("scripts/tools/download_weights.py", "pix2pix", "day2night", "--checkpoints_dir",
                   tmp_path / "checkpoints", check=False, timeout=120,
                   env={"PIX2PIX_MODELS_URL": UNREACHABLE, "WEIGHTS_DOWNLOAD_TIMEOUT": "5"})
    assert proc.returncode == 2, proc.stderr
    assert f"could not download {UNREACHABLE}/day2night.pth" in proc.stderr
    assert not (tmp_path / "checkpoints").exists()
