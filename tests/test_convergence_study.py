"""The convergence study (scripts/experiments/convergence_study.py): outputs, numbers recomputed from the run
folders' CSV files, resuming run by run, SEGAN's diversity measures, ATME's no-feedback ablation, the demo's
proportions and the experiment scripts' study stage."""
import csv
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

import train as train_cli
from conftest import run_main, test_main, train_main
from data import create_dataset
from models import create_model
from models.networks.discriminators import patch_output_size
from options.train_options import TrainOptions
from scripts.eval.pairwise_distances import L1_SCALE, l1_distance
from scripts.experiments.study import cli as convergence_study
from scripts.experiments.study import diversity as study_diversity
from scripts.experiments.study import plan as study_plan
from scripts.experiments.study import records as run_records
from util.run import convergence

ROOT = Path(__file__).resolve().parents[1]
FAMILY_FLAGS = {"atme": "atme=--dim 8 --init_dim 8 --dim_mults 1,2 --groups 4",
                "pix2pix": "pix2pix=--netG unet --ngf 8",
                "segan": "segan=--ngf 8 --nz 4 --samples_per_input 2"}
TINY = ["--load_size", "32", "--crop_size", "32", "--batch_size", "4", "--netD", "n_layers", "--n_layers_D", "1",
        "--ndf", "8", "--gpu_ids", "-1", "--num_threads", "0", "--smooth", "2"]


def study_args(demo_root, study_dir, models, seeds=(0, 1), epochs=(1, 1), *extra, executor="debug"):
    families = {study_plan.resolve_entry(m)[0] for m in models}
    flags = [a for f in sorted(families) for a in ("--model_flags", FAMILY_FLAGS[f])]
    return ["--dataroot", demo_root, "--study_dir", str(study_dir), "--models", *models,
            "--seeds", *map(str, seeds), "--n_epochs", str(epochs[0]), "--n_epochs_decay", str(epochs[1]),
            "--last_k", str(sum(epochs)), "--executor", executor, *TINY, *flags, *extra, "--", "--no_html"]


def study(*args, check=True):
    return run_main(convergence_study.main, *args, check=check)


class TrainSpy:
    """Wraps train.main and records the arguments of every training it starts."""

    def __init__(self, monkeypatch):
        self.calls, self.real = [], train_cli.main
        monkeypatch.setattr(train_cli, "main", self)

    def __call__(self, args):
        self.calls.append(list(args))
        return self.real(args)

    def names(self):
        return [a[a.index("--name") + 1] for a in self.calls]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def small_study(demo_root, tmp_path_factory):
    """atme and pix2pix, seeds 0 and 1, 2 epochs each, on the 32 px demo data (no KID or LPIPS weights)."""
    study_dir = tmp_path_factory.mktemp("study") / "study"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.hub, "get_dir", lambda: str(study_dir.parent / "hub"))
        result = study(*study_args(demo_root, study_dir, ("atme", "pix2pix")))
    return study_dir, result


@pytest.fixture(autouse=True)
def no_cached_weights(tmp_path, monkeypatch):
    """Metric weights a developer may have cached stay out of reach: KID off, SEGAN on the L1 fallback."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


# ------------------------------------------------------------------------------------------- outputs and numbers
def test_study_writes_figures_and_tables_whose_numbers_come_from_the_csv_files(small_study):
    study_dir, result = small_study
    for name in ("convergence.png", "validation.png", "summary.md", "summary.csv", "per_run.csv", "study.json"):
        assert (study_dir / name).is_file() and (study_dir / name).stat().st_size > 0, name
    assert sorted(os.listdir(study_dir / "runs")) == ["atme_seed0", "atme_seed1", "pix2pix_seed0", "pix2pix_seed1"]
    summary = {row["entry"]: row for row in read_csv(study_dir / "summary.csv")}
    assert list(summary) == ["atme", "pix2pix"]
    q = convergence.quantity("vanilla")
    for entry, row in summary.items():
        distances, slopes, l1s = [], [], []
        for seed in (0, 1):
            rows = read_csv(study_dir / "runs" / f"{entry}_seed{seed}" / "convergence.csv")
            epochs = np.array([float(r["epoch"]) for r in rows])
            values = np.array([float(r["neg_L_GAN"]) for r in rows])
            assert epochs.tolist() == [1.0, 2.0]
            distance = np.abs(values - q.equilibrium)
            distances.append(distance.mean())
            slopes.append(np.polyfit(epochs, distance, 1)[0])
            l1s.append(float(read_csv(study_dir / "eval" / f"{entry}_seed{seed}" / "test_metrics.csv")[0]["l1"]))
        assert float(row["dist_last_k_mean"]) == pytest.approx(np.mean(distances), rel=1e-4)
        assert float(row["dist_last_k_std"]) == pytest.approx(np.std(distances, ddof=1), rel=1e-3, abs=1e-7)
        assert float(row["slope_last_k_mean"]) == pytest.approx(np.mean(slopes), rel=1e-4, abs=1e-7)
        assert float(row["test_l1_mean"]) == pytest.approx(np.mean(l1s), rel=1e-4)
        params = {r["network"]: int(r["parameters"]) for r in read_csv(study_dir / "eval" / f"{entry}_seed0" /
                                                                        "params.csv")}
        assert float(row["g_over_d"]) == pytest.approx((params["G"] + params.get("W", 0)) / params["D"], rel=1e-4)
        assert row["kid_x100_mean"] in ("nan", "")  # no Inception weights on a test machine
    assert int(summary["atme"]["params_W"]) > 0 and summary["pix2pix"]["params_W"] == ""
    markdown = (study_dir / "summary.md").read_text()
    assert "distance of -L_GAN to log 4 = 1.386" in markdown and "local linear fit over 2 epochs" in markdown
    assert "atme | 2 |" in markdown and "pix2pix | 2 |" in markdown
    assert "| atme | 2 |" in result.stdout  # the table is printed too


def test_runs_get_the_matched_settings_and_their_own_seed(small_study):
    study_dir, _ = small_study
    import json
    for name in ("atme_seed1", "pix2pix_seed1"):
        stored = json.loads((study_dir / "runs" / name / "train_opt.json").read_text())
        assert (stored["seed"], stored["norm"], stored["ndf"], stored["n_layers_D"], stored["netD"]) == \
            (1, "instance", 8, 1, "n_layers", )
        assert stored["val_freq"] == 1 and stored["crop_size"] == 32 and stored["batch_size"] == 4


def test_runs_without_gpu_ids_take_train_pys_default_device():
    # A study without --gpu_ids must run where train.py would: an explicit "--gpu_ids 0" is refused on a CPU-only
    # machine, so the study passes no --gpu_ids (nor --num_threads) unless it is given one.
    parsed = convergence_study.build_parser().parse_args(["--dataroot", "d", "--study_dir", "s"])
    runs = study_plan.plan_runs(["atme"], [0], dataroot="d", runs_dir="r", matched={}, model_flags={},
                                gpu_ids=parsed.gpu_ids, num_threads=parsed.num_threads, extra=[])
    assert "--gpu_ids" not in runs[0].train_args and "--num_threads" not in runs[0].train_args
    runs = study_plan.plan_runs(["atme"], [0], dataroot="d", runs_dir="r", matched={}, model_flags={},
                                gpu_ids="-1", num_threads=0, extra=[])
    args = runs[0].train_args
    assert args[args.index("--gpu_ids") + 1] == "-1" and args[args.index("--num_threads") + 1] == "0"


def test_a_second_call_trains_nothing(small_study, demo_root, monkeypatch):
    study_dir, _ = small_study
    spy = TrainSpy(monkeypatch)
    before = {p: p.stat().st_mtime_ns for p in (study_dir / "runs").glob("*/latest_train_state.pth")}
    result = study(*study_args(demo_root, study_dir, ("atme", "pix2pix")))
    assert spy.calls == [] and "4 runs (4 finished, 0 partly trained, 0 new)" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_an_interrupted_study_trains_the_missing_runs_only(small_study, demo_root, tmp_path, monkeypatch):
    source, _ = small_study
    study_dir = tmp_path / "copy"
    shutil.copytree(source, study_dir)
    # The runs' checkpoints_dir is the folder they live in, so the copy is a study of its own.
    shutil.rmtree(study_dir / "runs" / "pix2pix_seed1")
    shutil.rmtree(study_dir / "eval" / "pix2pix_seed1")
    kept = {p: p.stat().st_mtime_ns for p in (study_dir / "runs").glob("*/latest_train_state.pth")}
    spy = TrainSpy(monkeypatch)
    study(*study_args(demo_root, study_dir, ("atme", "pix2pix")))
    assert spy.names() == ["pix2pix_seed1"] and "--continue_train" not in spy.calls[0]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert len(read_csv(study_dir / "runs" / "pix2pix_seed1" / "convergence.csv")) == 2
    assert (study_dir / "eval" / "pix2pix_seed1" / "test_metrics.csv").is_file()


def test_a_stopped_run_continues_where_it_stopped(demo_root, tmp_path, monkeypatch):
    """Ctrl-C during a run: train.py saves and exits 130, the study stops; called again, it resumes that run with
    --continue_train."""
    study_dir = tmp_path / "study"
    args = study_args(demo_root, study_dir, ("atme_no_feedback",), (0,))

    def stop_now(self):
        self.signum = signal.SIGINT
        return True

    with monkeypatch.context() as patch:
        patch.setattr(train_cli.StopRequest, "agreed", stop_now)
        stopped = study(*args, check=False)
    assert stopped.returncode == 130 and "call the study again to resume it" in stopped.stdout
    assert study_plan.saved_progress(str(study_dir / "runs" / "atme_no_feedback_seed0")) == (1, 4)
    assert not (study_dir / "summary.csv").exists()
    spy = TrainSpy(monkeypatch)
    study(*args)
    assert spy.names() == ["atme_no_feedback_seed0"] and "--continue_train" in spy.calls[0]
    rows = read_csv(study_dir / "runs" / "atme_no_feedback_seed0" / "convergence.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (study_dir / "summary.csv").is_file()


def test_other_settings_on_an_existing_study_are_refused_and_change_nothing(small_study, demo_root, monkeypatch):
    study_dir, _ = small_study
    spy = TrainSpy(monkeypatch)
    before = sorted((str(p), p.stat().st_mtime_ns) for p in study_dir.rglob("*"))
    args = study_args(demo_root, study_dir, ("atme", "pix2pix"))
    args[args.index("--ndf") + 1] = "16"
    result = study(*args, check=False)
    assert result.returncode == 2 and "--ndf 8 (the run) vs 16 (this study)" in result.stderr
    assert "atme_seed0" in result.stderr and spy.calls == []
    assert sorted((str(p), p.stat().st_mtime_ns) for p in study_dir.rglob("*")) == before


def test_bad_study_arguments_get_clear_errors(demo_root, tmp_path):
    result = study("--dataroot", demo_root, "--study_dir", tmp_path / "s", "--models", "atme", "gan9000", check=False)
    assert result.returncode == 2 and "unknown study model 'gan9000'" in result.stderr and "atme_no_feedback" in \
        result.stderr
    result = study("--dataroot", demo_root, "--study_dir", tmp_path / "s", "--models", "atme",
                   "--model_flags", "pix2pix=--ngf 8", check=False)
    assert result.returncode == 2 and "--model_flags for pix2pix" in result.stderr
    result = study("--dataroot", demo_root, "--study_dir", tmp_path / "s", "--n_epochs", "2", "--n_epochs_decay", "0",
                   "--last_k", "5", check=False)
    assert result.returncode == 2 and "--last_k 5" in result.stderr
    result = study("--dataroot", tmp_path / "nowhere", "--study_dir", tmp_path / "s", check=False)
    assert result.returncode == 2 and "nowhere/train does not exist" in result.stderr
    assert not (tmp_path / "s").exists()


def test_report_smoothing_and_last_k_statistics():
    from scripts.experiments.study.report import last_k_stats, mean_std, smooth
    assert smooth([1, 2, 3, 4], 2).tolist() == pytest.approx([1, 2, 3, 4])  # a line stays a line
    assert smooth([1, 2, 3, 4], 1).tolist() == [1, 2, 3, 4]
    mean, slope = last_k_stats(np.arange(1, 6), np.array([9.0, 9.0, 3.0, 2.0, 1.0]), 3)
    assert mean == pytest.approx(2.0) and slope == pytest.approx(-1.0)
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2.0)))
    assert np.isnan(mean_std([1.0])[1])


def test_last_epoch_line_names_the_quantity_its_distance_and_the_plot(small_study):
    study_dir, _ = small_study
    run_dir = study_dir / "runs" / "atme_seed0"
    rows = read_csv(run_dir / "convergence.csv")
    line = run_records.last_epoch_line(str(run_dir))
    value = float(rows[-1]["neg_L_GAN"])
    assert f"last epoch (2): -L_GAN = D_real + D_fake = {value:.4f}" in line
    assert f"distance to the equilibrium log 4 = 1.386: {abs(value - np.log(4)):.4f}" in line
    assert "convergence plot: none" in line  # the study's runs have --no_html


# ------------------------------------------------------------------------------------------- SEGAN
@pytest.mark.slow  # trains and evaluates four SEGAN runs
def test_segan_study_reports_diversity_with_mi_on_and_off(demo_root, tmp_path):
    study_dir = tmp_path / "segan"
    study(*study_args(demo_root, study_dir, ("segan", "segan_no_mi"), (0, 1), (1, 0), "--n_draws", "2",
                      "--n_codes", "3"))
    import json
    assert json.loads((study_dir / "runs" / "segan_no_mi_seed1" / "train_opt.json").read_text())["lambda_MI"] == 0
    summary = {row["entry"]: row for row in read_csv(study_dir / "diversity_summary.csv")}
    assert list(summary) == ["segan", "segan_no_mi"]
    for entry, row in summary.items():
        per_seed = []
        for seed in (0, 1):
            rows = read_csv(study_dir / "eval" / f"{entry}_seed{seed}" / "diversity.csv")
            assert [r["draw"] for r in rows] == ["0", "1"] and rows[0]["n_codes"] == "3"
            assert rows[0]["scale"] == L1_SCALE and "not LPIPS" in rows[0]["metric"]
            per_seed.append(np.mean([float(r["diversity"]) for r in rows]))
        assert float(row["diversity_mean"]) == pytest.approx(np.mean(per_seed), rel=1e-4)
        assert float(row["diversity_std"]) == pytest.approx(np.std(per_seed, ddof=1), rel=1e-3, abs=1e-7)
        assert 0 < float(row["target_distance_mean"]) < 1
    markdown = (study_dir / "summary.md").read_text()
    assert "2 draws of 3 codes" in markdown and "scale: [0, 1] image scale" in markdown
    assert "| segan_no_mi | 2 |" in markdown and "cross-input / target" in markdown
    assert int(read_csv(study_dir / "summary.csv")[0]["params_T"]) > 0  # segan has T, segan_no_mi not
    assert read_csv(study_dir / "summary.csv")[1]["params_T"] == ""


class CodeOnlyModel:
    """A 'generator' whose output is set by the code alone (diverse, blind to the input), or by the input alone."""

    nz = 2

    def __init__(self, use_code):
        self.use_code = use_code
        self.netG = self.generate

    def generate(self, inputs, codes):
        if self.use_code:
            return torch.tanh(codes[:, :1, None, None]).expand(-1, 3, 4, 4)
        return inputs

    def set_input(self, batch):
        self.real_A, self.real_B = batch["A"], batch["B"]


def test_diversity_measures_tell_an_input_blind_generator_from_a_code_blind_one():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 4, 4, generator=generator) * 2 - 1
    loader = [dict(A=images[:3], B=images[:3]), dict(A=images[3:], B=images[3:])]
    blind = study_diversity.code_draws(CodeOnlyModel(True), loader, l1_distance, n_draws=2, n_codes=4, max_inputs=6)
    assert len(blind) == 2 and all(r["n_inputs"] == 6 for r in blind)
    assert all(r["diversity"] > 0.05 and r["cross_input"] == 0 and r["target_distance"] > 0.1 for r in blind)
    faithful = study_diversity.code_draws(CodeOnlyModel(False), loader, l1_distance, n_draws=1, n_codes=3,
                                          max_inputs=6)[0]
    assert faithful["diversity"] == 0 and faithful["fidelity"] == 0
    assert faithful["cross_input"] == pytest.approx(faithful["target_distance"])


# ------------------------------------------------------------------------------------------- the ablation
ATME_TINY = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
             "--batch_size", "2", "--load_size", "32", "--crop_size", "32", "--num_threads", "0", "--seed", "0",
             "--gpu_ids", "-1", "--display_id", "0", "--no_html"]


def test_no_feedback_atme_has_no_pool_no_w_and_ignores_d(demo_root, tmp_path):
    args = ["--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "nofb", *ATME_TINY, "--no_feedback"]
    opt = TrainOptions().parse(args)
    opt.dataset_size = len(create_dataset(opt))
    model = create_model(opt)
    model.setup(opt)
    assert model.netW is None and model.model_names == ["G", "D"] and model.sample_readers() == {}
    assert model.disc_pool is None and not (tmp_path / "nofb" / "disc_pool.npy").exists()
    batch = default_collate([create_dataset(opt)[i] for i in (0, 1)])
    outputs = []
    for disc_prev in (torch.zeros(2, 1, 6, 6), torch.ones(2, 1, 6, 6)):  # whatever D said: the same output
        model.set_input(dict(batch, disc_prev=disc_prev))
        with torch.no_grad():
            model.forward()
        outputs.append(model.fake_B.clone())
    assert torch.equal(outputs[0], outputs[1])
    g_before = [p.detach().clone() for p in model.netG.parameters()]
    model.set_input(batch)
    model.optimize_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.netG.parameters()))
    assert not (tmp_path / "nofb" / "disc_pool.npy").exists()
    with pytest.raises(ValueError, match="--n_save_noisy"):
        create_model(TrainOptions().parse(args + ["--n_save_noisy", "2"]))


def test_no_feedback_run_trains_and_tests_without_w(demo_root, tmp_path):
    common = ["--dataroot", demo_root, "--checkpoints_dir", str(tmp_path), "--name", "nofb"]
    train_main(*common, *ATME_TINY, "--no_feedback", "--n_epochs", "1", "--n_epochs_decay", "0")
    run = tmp_path / "nofb"
    assert not (run / "disc_pool.npy").exists() and not list(run.glob("*_net_W.pth"))
    assert (run / "latest_net_G.pth").is_file()
    result = test_main(*common, "--results_dir", str(tmp_path / "res"), "--num_threads", "0", "--gpu_ids", "-1")
    assert "loaded" in result.stdout and "net_W" not in result.stdout  # --no_feedback came from the run
    images = os.listdir(tmp_path / "res" / "nofb" / "test_latest" / "images")
    assert any(f.endswith("_fake_B.png") for f in images) and not any("noisy_A" in f for f in images)
    refused = test_main(*common, "--results_dir", str(tmp_path / "res"), "--no_feedback", "false", check=False)
    assert refused.returncode == 2 and "--no_feedback" in refused.stderr


# ------------------------------------------------------------------------------------------- the demo
def demo_arch(model):
    text = (ROOT / "scripts" / "demo.sh").read_text()
    match = re.search(rf"^\s*{model}\)\s+ARCH=\((.*?)\) ;;", text, re.S | re.M)
    return match.group(1).split()


def test_demo_atme_is_built_to_the_papers_proportions():
    arch = demo_arch("atme")
    preset = study_plan.PRESETS["demo"]
    for flag in preset["model_flags"]["atme"].split():
        assert flag in arch
    for key in ("netD", "n_layers_D", "ndf"):
        assert arch[arch.index(f"--{key}") + 1] == str(preset["matched"][key])
    args = ["--dataroot", "unused", "--name", "x", "--model", "atme", *arch, "--crop_size", "64"]
    parser = TrainOptions().build_parser(args)
    opt = parser.parse_args(args)
    opt.isTrain, opt.gpu_ids, opt.checkpoints_dir = True, [], "unused"
    counts = {name: sum(p.numel() for p in net.parameters()) for name, net in create_model(opt).networks()}
    ratio = (counts["G"] + counts["W"]) / counts["D"]
    assert 13 <= ratio <= 20  # the paper: ATME 35.8 M / 2.77 M = 13x, pix2pix 54.4 M / 2.77 M = 20x
    # D's map is spatial: the 1-layer PatchGAN sees 16 px, so a 64 px crop holds 4 patches across (paper: 3.7).
    assert patch_output_size(opt.netD, opt.n_layers_D, 64, 64) == (30, 30)
    receptive = 1
    for kernel, stride in reversed([(4, 2)] * opt.n_layers_D + [(4, 1), (4, 1)]):
        receptive = (receptive - 1) * stride + kernel
    assert receptive == 16 and 3 <= 64 / receptive <= 4.5


# ------------------------------------------------------------------------------------------- scripts
def dry_run(script, *args, **env):
    full_env = dict(os.environ, DRY_RUN="1", DATASETS_DIR="/nonexistent/data", **env)
    return subprocess.run(["bash", str(ROOT / "scripts" / "experiments" / script), *args], capture_output=True,
                          text=True, env=full_env, timeout=60)


@pytest.mark.slow
def test_fig3_scripts_run_the_study_with_the_papers_settings():
    run = dry_run("fig3/facades.sh", "BtoA", "--", "--gpu_ids", "0", SEEDS="0 1 2 3")
    assert run.returncode == 0, run.stderr
    line = next(l for l in run.stdout.splitlines() if "convergence_study" in l)
    for part in ("--models atme atme_no_feedback pix2pix", "--seeds 0 1 2 3", "--direction BtoA", "--batch_size 48",
                 "--crop_size 256", "--norm instance", "--netD basic", "--ndf 64", "--n_epochs 100",
                 "--study_dir studies/facades_convergence_BtoA", "'atme=--dim 64 --dim_mults 1,2,4,8 --lambda_L1 100'",
                 "'pix2pix=--netG unet_256 --lambda_L1 100'", "-- --gpu_ids 0"):
        assert part in line, part
    segan = dry_run("experiment.sh", "segan", "maps", "BtoA", "study")
    line = next(l for l in segan.stdout.splitlines() if "convergence_study" in l)
    assert "--models segan segan_no_mi" in line and "--test_phase val" in line
    assert dry_run("experiment.sh", "segan", "edges2shoes", "AtoB", "study").returncode == 2
    table = dry_run("reproduce_table2.sh", "study")
    assert table.returncode == 0 and table.stdout.count("convergence_study") == 8  # 4 datasets x 2 directions
    assert "train.py" not in table.stdout
