"""Each flag is declared once, with its lifetime, and the parser, the resume, test.py, the refusals and
docs/flags.md read that declaration: a one-shot flag is never stored, so a later resume does not repeat it."""
import json

import pytest

from conftest import train_main
from models import atme_model
from options import flags_doc
from options.flag_parser import FlagParser
from options.test_options import TestOptions
from options.train_options import TrainOptions
from util.command_line.cli import UsageError
from util.command_line.flags import INVOCATION, LIFETIMES
from util.command_line.registry import available_names

ATME = ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8",
        "--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
        "--gpu_ids", "-1", "--display_id", "0", "--no_html", "--n_epochs", "1", "--n_epochs_decay", "0"]


@pytest.mark.parametrize("options_class", [TrainOptions, TestOptions])
def test_every_flag_of_every_model_and_layout_has_a_lifetime(options_class):
    for model in available_names("models", "_model"):
        for mode in available_names("data", "_dataset"):
            parser = options_class().build_parser(["--model", model, "--dataset_mode", mode])
            declared = {action.dest for action in parser._actions if action.option_strings}
            assert declared == set(parser.flag_table.flags), (model, mode)
            for flag in parser.flag_table:
                assert flag.lifetime in LIFETIMES, flag


def test_a_flag_declared_without_a_lifetime_is_an_error():
    parser = FlagParser()
    with pytest.raises(TypeError, match="--forgotten is declared without a lifetime"):
        parser.add_argument_group("g").add_argument("--forgotten", type=int, default=1)
    with pytest.raises(ValueError, match="lifetime 'forever'"):
        parser.add_argument("--x", lifetime="forever")


def test_docs_flags_md_is_what_the_table_makes():
    assert open(flags_doc.PAGE).read() == flags_doc.page(), "run `python -m options.flags_doc`"


def test_the_page_names_each_models_own_flags_with_their_lifetime():
    page = flags_doc.page()
    assert "| `--dim_mults` | model atme | `1,2,4,8` | architecture |" in page
    assert "| `--reset_pool` | model atme |" in page and "| invocation |" in page
    assert "| `--mi_estimator` | model segan | `jsd` | loss |" in page


def test_train_opt_json_holds_no_invocation_flag(tmp_path, demo_root):
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "g/run", *ATME)
    stored = json.load(open(tmp_path / "g" / "run" / "train_opt.json"))
    invocation = set(TrainOptions().build_parser(["--model", "atme"]).flag_table.names(INVOCATION))
    assert {"name", "checkpoints_dir", "continue_train", "reset_pool", "no_verify", "lock"} <= invocation
    assert not invocation & set(stored), invocation & set(stored)
    assert stored["dim"] == 8 and stored["dataroot"] == str(demo_root)


def test_one_shot_flags_of_a_resume_are_not_taken_again_by_the_next(tmp_path, demo_root, monkeypatch):
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run"]
    train_main(*common, *ATME)
    first = train_main("--checkpoints_dir", tmp_path, "--name", "run", "--continue_train", "--n_epochs", "2",
                       "--reset_pool", "--no_verify", "--lock", "none")
    assert "starts afresh" in first.stdout + first.stderr
    stored = json.load(open(tmp_path / "run" / "train_opt.json"))
    assert not {"reset_pool", "no_verify", "lock", "continue_train"} & set(stored)

    def no_new_pool(*args, **kwargs):
        raise AssertionError("the second resume started the pool afresh: --reset_pool was taken again")

    monkeypatch.setattr(atme_model.EpochPool, "create", no_new_pool)
    second = train_main("--checkpoints_dir", tmp_path, "--name", "run", "--continue_train", "--n_epochs", "3")
    assert "starts afresh" not in second.stdout + second.stderr and "WARNING" not in second.stderr.replace(
        "--n_epochs 2 -> 3", "")
    # the next resume verifies again: a damaged checkpoint file is refused, where --no_verify would have loaded it
    weights = tmp_path / "run" / "latest_train_state.pth"
    raw = bytearray(weights.read_bytes())
    raw[-10] ^= 0xFF
    weights.write_bytes(bytes(raw))
    refused = train_main("--checkpoints_dir", tmp_path, "--name", "run", "--continue_train", "--n_epochs", "4",
                         check=False)
    assert refused.returncode == 2 and "latest_train_state.pth" in refused.stderr and "--no_verify" in refused.stderr


def test_an_older_runs_stored_invocation_flags_are_ignored_with_a_note(tmp_path, demo_root):
    common = ["--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run"]
    train_main(*common, *ATME)
    path = tmp_path / "run" / "train_opt.json"
    stored = json.load(open(path))
    stored.update(reset_pool=True, no_verify=True, lock="none", name="elsewhere", continue_train=True)
    json.dump(stored, open(path, "w"))
    resumed = train_main("--checkpoints_dir", tmp_path, "--name", "run", "--continue_train", "--n_epochs", "2")
    said = resumed.stdout + resumed.stderr
    assert "ignored, they apply to one command only" in said and "starts afresh" not in said


def test_an_ambiguous_prefix_with_continue_train_is_one_line_not_a_usage_dump(tmp_path, demo_root):
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run", *ATME)
    with pytest.raises(UsageError, match=r"unknown flag --display_ \(flags are not abbreviated\)"):
        TrainOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "run", "--continue_train",
                              "--display_", "3"])
    refused = train_main("--checkpoints_dir", tmp_path, "--name", "run", "--continue_train", "--n_ep", "3",
                         check=False)
    assert refused.returncode == 2 and "usage:" not in refused.stderr and len(refused.stderr.splitlines()) <= 3


def test_test_py_reads_the_stored_options_of_the_suffixed_run(tmp_path, demo_root):
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run", "--suffix", "{model}", *ATME)
    assert (tmp_path / "run_atme" / "train_opt.json").exists()
    opt = TestOptions().parse(["--checkpoints_dir", str(tmp_path), "--name", "run", "--suffix", "atme",
                               "--results_dir", str(tmp_path / "res")])
    assert opt.name == "run_atme" and opt.model == "atme" and opt.dim == 8 and opt.dataroot == str(demo_root)


def test_test_py_on_a_current_run_gives_no_note_about_stored_flags(tmp_path, demo_root):
    """test.py's own flags (--phase, --amp, ...) are run flags of the training that stored them: no note."""
    train_main("--dataroot", demo_root, "--checkpoints_dir", tmp_path, "--name", "run", *ATME)
    from conftest import test_main
    result = test_main("--checkpoints_dir", tmp_path, "--name", "run", "--results_dir", tmp_path / "res",
                       "--num_test", "1")
    assert "also holds flags" not in result.stdout + result.stderr
