"""Variants as a study axis (--variants) and the quick preset: how variants are named and parsed, the runs they
make (equal seeds, the variant's flags winning), and a tiny fp32-against-bf16 study whose tables have one row per
model and variant with mean and min..max over seeds of the distance, test L1, PSNR and training time per run."""
import csv
import json
import math
import re
import shlex

import pytest

from conftest import run_main
from scripts.experiments.jobs import events
from scripts.experiments.study import cli as convergence_study
from scripts.experiments.study import plan as study_plan
from scripts.experiments.study import report as study_report

TINY = ["--load_size", "32", "--crop_size", "32", "--batch_size", "4", "--netD", "n_layers", "--n_layers_D", "1",
        "--ndf", "8", "--gpu_ids", "-1", "--num_threads", "0", "--smooth", "2", "--executor", "debug"]


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------- parsing and naming
def test_built_in_and_named_variants_parse_in_the_order_given():
    assert study_plan.parse_variants(["fp32,bf16"]) == {"fp32": [], "bf16": ["--amp", "bf16", "--channels_last"]}
    assert study_plan.parse_variants(["prob=--pool_stores prob", "logits=--pool_stores logits"]) == \
        {"prob": ["--pool_stores", "prob"], "logits": ["--pool_stores", "logits"]}
    assert list(study_plan.parse_variants(["bf16", "fp32"])) == ["bf16", "fp32"]
    assert study_plan.parse_variants([]) == {}


@pytest.mark.parametrize("items, message", [
    (["fp32,fp16"], "'fp16' is not a built-in variant (fp32, bf16); give its flags as NAME=FLAGS"),
    (["a_b=--lr 1", "c=--lr 2"], "the name 'a_b' names run folders"),
    (["fp32", "fp32=--lr 1"], "names 'fp32' twice"),
    (["bf16"], "one variant compares nothing; leave --variants out, or give two or more"),
])
def test_bad_variants_are_refused_with_an_example_that_parses(items, message):
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        study_plan.parse_variants(items)
    examples = str(refused.value).split("e.g. ")[1].split(" or ")
    assert examples[0] == "--variants fp32,bf16"
    for example in examples:  # each example, typed as shown, parses
        words = shlex.split(example)
        assert len(study_plan.parse_variants(words[1:])) == 2


def test_each_variant_gets_every_seed_and_its_flags_win():
    runs = study_plan.plan_runs(["atme"], [0, 1], dataroot="d", runs_dir="r", matched={"crop_size": 64},
                                model_flags={}, gpu_ids="-1", num_threads=0, extra=["--amp", "fp16"],
                                variants=study_plan.parse_variants(["fp32,bf16", "small=--crop_size 32"]))
    assert [run.name for run in runs] == ["atme_fp32_seed0", "atme_bf16_seed0", "atme_small_seed0",
                                          "atme_fp32_seed1", "atme_bf16_seed1", "atme_small_seed1"]
    _, bf16 = study_plan.parsed_settings(runs[1].train_args)
    assert (bf16.amp, bf16.channels_last, bf16.seed) == ("bf16", True, 0)
    _, small = study_plan.parsed_settings(runs[2].train_args)
    assert small.crop_size == 32  # the variant's value, not the matched setting's
    assert {run.variant for run in runs} == {"fp32", "bf16", "small"}
    plain = study_plan.plan_runs(["atme"], [0], dataroot="d", runs_dir="r", matched={}, model_flags={},
                                 gpu_ids=None, num_threads=None, extra=[])
    assert plain[0].name == "atme_seed0" and plain[0].variant == ""


def test_the_quick_preset_is_two_models_one_seed_a_few_epochs_on_a_subset(demo_root, tmp_path):
    args = convergence_study.build_parser().parse_args(["--dataroot", demo_root, "--study_dir", str(tmp_path / "q"),
                                                        "--preset", "quick", "--dry_run"])
    matched, flags = convergence_study.resolve(args)
    assert args.models == ["atme", "pix2pix"] and args.seeds == [0]
    assert study_plan.total_epochs(matched) <= 3 and matched["crop_size"] <= 32
    shown = run_main(convergence_study.main, "--dataroot", demo_root, "--study_dir", tmp_path / "q", "--preset",
                     "quick", "--executor", "local", "--dry_run").stdout
    assert shown.count("python train.py") == 2 and shown.count("--max_dataset_size 48") == 2
    # explicit flags override the preset
    args = convergence_study.build_parser().parse_args(["--dataroot", demo_root, "--study_dir", str(tmp_path / "q"),
                                                        "--preset", "quick", "--seeds", "3", "4", "--models", "atme"])
    convergence_study.resolve(args)
    assert args.seeds == [3, 4] and args.models == ["atme"]
    assert not (tmp_path / "q").exists()


# ------------------------------------------------------------------------------------------- a variants study
@pytest.fixture(scope="module")
def variants_study(demo_root, tmp_path_factory):
    """pix2pix, fp32 against bf16, seeds 0 and 1, 1 + 1 epochs on the 32 px demo data (debug executor)."""
    study_dir = tmp_path_factory.mktemp("variants") / "study"
    drawn = {}

    def convergence_plot(path, groups, *args):  # what the figure draws, then the figure itself
        drawn.update({label: len(curves) for label, curves in groups.items()})
        return real_plot(path, groups, *args)

    real_plot = study_report.convergence_plot
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(study_report, "convergence_plot", convergence_plot)
        result = run_main(convergence_study.main, "--dataroot", demo_root, "--study_dir", study_dir, "--models",
                          "pix2pix", "--seeds", "0", "1", "--n_epochs", "1", "--n_epochs_decay", "1",
                          "--variants", "fp32,bf16", "--model_flags", "pix2pix=--netG unet --ngf 8", *TINY,
                          "--", "--no_html")
    result.drawn = drawn
    return study_dir, result


def test_a_variants_study_has_a_run_folder_per_variant_and_seed(variants_study):
    study_dir, _ = variants_study
    names = sorted(p.name for p in (study_dir / "runs").iterdir())
    assert names == ["pix2pix_bf16_seed0", "pix2pix_bf16_seed1", "pix2pix_fp32_seed0", "pix2pix_fp32_seed1"]
    bf16 = json.loads((study_dir / "runs" / "pix2pix_bf16_seed1" / "train_opt.json").read_text())
    fp32 = json.loads((study_dir / "runs" / "pix2pix_fp32_seed1" / "train_opt.json").read_text())
    assert (bf16["amp"], bf16["channels_last"], bf16["seed"]) == ("bf16", True, 1)
    assert (fp32["amp"], fp32["channels_last"], fp32["seed"]) == ("none", False, 1)
    assert json.loads((study_dir / "study.json").read_text())["variants"] == \
        {"fp32": "", "bf16": "--amp bf16 --channels_last"}


def test_a_variants_study_reports_one_row_per_variant_with_the_seeds_spread(variants_study):
    study_dir, result = variants_study
    per_run = read_csv(study_dir / "per_run.csv")
    summary = read_csv(study_dir / "summary.csv")
    assert [(r["entry"], r["variant"], r["seeds"]) for r in summary] == [("pix2pix", "fp32", "2"),
                                                                      ("pix2pix", "bf16", "2")]
    for row in summary:
        mine = [r for r in per_run if r["variant"] == row["variant"]]
        assert sorted(r["seed"] for r in mine) == ["0", "1"]
        for key in ("dist_last_k", "test_l1", "test_psnr", "train_minutes"):
            values = [float(r[key]) for r in mine]
            assert float(row[f"{key}_min"]) == pytest.approx(min(values), rel=1e-4), key
            assert float(row[f"{key}_max"]) == pytest.approx(max(values), rel=1e-4), key
            assert float(row[f"{key}_mean"]) == pytest.approx(sum(values) / 2, rel=1e-4), key
    for run in per_run:  # the time per run is train.py's wall time the job recorded
        recorded = read_csv(events.train_time_path(events.events_path(str(study_dir / "jobs"), run["name"])))
        assert len(recorded) == 1 and recorded[0]["code"] == "0"
        assert float(run["train_minutes"]) == pytest.approx(float(recorded[0]["seconds"]) / 60, rel=1e-4)
        assert 0 < float(run["train_minutes"]) < 10
    markdown = (study_dir / "summary.md").read_text()
    assert "| pix2pix fp32 | 2 |" in markdown and "| pix2pix bf16 | 2 |" in markdown
    assert "training time per run (min)" in markdown
    fp32 = next(r for r in summary if r["variant"] == "fp32")
    spread = (f"{float(fp32['test_l1_mean']):.4f} ({float(fp32['test_l1_min']):.4f}.."
              f"{float(fp32['test_l1_max']):.4f})")
    assert spread in markdown
    assert "| pix2pix bf16 | 2 |" in result.stdout
    # the figure: one curve group per variant, each with both seeds
    assert {label.split(" (")[0]: n for label, n in result.drawn.items()} == {"pix2pix fp32": 2, "pix2pix bf16": 2}


def test_a_run_without_recorded_time_shows_none(variants_study, tmp_path):
    study_dir, _ = variants_study
    assert math.isnan(events.train_seconds(str(tmp_path / "jobs" / "old_run" / "events.csv")))
