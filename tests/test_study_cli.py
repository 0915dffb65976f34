"""The convergence study's command line: defaults shown in --help, a short study runs with its defaults (or the
refusal names the value to pass), its examples agree with its docs page, and its outputs are not tracked by git."""
import os
import re

import pytest

from conftest import ROOT
from scripts.experiments.study import cli as convergence_study


def checked(*argv):
    args = convergence_study.build_parser().parse_args([str(a) for a in argv])
    args.test_dataroot = args.test_dataroot or args.dataroot
    matched, _ = convergence_study.resolve(args)
    convergence_study.check_inputs(args, matched)
    return args


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        convergence_study.build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # as one line, whatever the terminal's width
    for shown in ("(default: 0 1 2)", "(default: atme atme_no_feedback pix2pix)", "(default: test)",
                  "default: 10, or every epoch of a shorter study", "(default: 5)"):
        assert shown in text, shown
    assert "(default: None)" not in text and "(default: )" not in text


def test_the_smallest_study_runs_with_its_defaults_or_the_refusal_names_the_value(demo_root, tmp_path):
    short = ["--dataroot", demo_root, "--study_dir", tmp_path / "s", "--preset", "demo", "--n_epochs", "2",
             "--n_epochs_decay", "1"]
    assert checked(*short).last_k == 3  # the default adapts to a 3-epoch study
    assert checked("--dataroot", demo_root, "--study_dir", tmp_path / "s", "--n_epochs", "20",
                   "--n_epochs_decay", "20").last_k == 10
    with pytest.raises(ValueError, match="--last_k 10 must be between 1 and the 3 epochs") as refused:
        checked(*short, "--last_k", "10")
    value = re.search(r"Pass --last_k (\d+)", str(refused.value)).group(1)
    assert checked(*short, "--last_k", value).last_k == 3
    assert not (tmp_path / "s").exists()


def first_study_command(text):
    """The first `python -m scripts.experiments.convergence_study ...` command in `text`, continuation lines
    joined."""
    start = text.index("python -m scripts.experiments.convergence_study")
    lines = []
    for line in text[start:].splitlines():
        lines.append(line.rstrip("\\ ").strip())
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(lines)


def test_the_studys_example_is_the_docs_pages():
    page = open(os.path.join(ROOT, "docs", "convergence_study.md")).read()
    assert first_study_command(convergence_study.__doc__) == first_study_command(page)


def test_study_outputs_are_ignored_by_git():
    assert "studies/" in open(os.path.join(ROOT, ".gitignore")).read().split()
