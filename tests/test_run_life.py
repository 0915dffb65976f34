"""A run's whole life, driven at random: start, stop anywhere (after a step, at the end of an epoch, during
validation, during a save), resume with a typed change (allowed, refused, one-shot), extend a finished run, test
it, and in the slow profile SIGKILL it and run two test.py at once. After every rule the invariants hold:

- a refused command changed no byte on disk, and its printed commands parse as the CLI they name;
- nothing outside --checkpoints_dir and --results_dir changed, and test.py never writes into the run folder;
- every results page links only files that exist;
- at the end, the run, finished by plain resumes, equals an uninterrupted run of the same length bit for bit.

Each walk is seeded: a failure prints `RUN_LIFE_SEEDS=<seed>` and the rules it took, which reproduce it.
RUN_LIFE_SEEDS=a-b and RUN_LIFE_STEPS=n widen the slow profile (the long walk of the closing figures)."""
import os
import random
import re
import signal
import subprocess
import sys

import pytest

import train
from conftest import ROOT, folder_state, printed_commands, script_args, test_main, train_main
from options.train_options import TrainOptions
from test_run_state import KILLER, assert_same_run
from util.process.stop_request import StopRequest

MODELS = {
    "pix2pix": ["--model", "pix2pix", "--netG", "unet", "--ngf", "8", "--ndf", "8", "--norm", "instance"],
    "atme": ["--model", "atme", "--dim", "8", "--init_dim", "8", "--dim_mults", "1,2", "--groups", "4", "--ndf", "8"],
}
COMMON = ["--load_size", "36", "--crop_size", "32", "--batch_size", "2", "--num_threads", "0", "--seed", "0",
          "--gpu_ids", "-1", "--display_id", "0", "--print_freq", "2", "--n_epochs_decay", "0",
          "--save_epoch_freq", "2", "--save_latest_freq", "6", "--val_freq", "2"]
FIRST_EPOCHS = 2
STOPS = ("after_step", "end_of_epoch", "during_validation", "during_save", None)
ALLOWED = (["--display_freq", "8"], ["--save_latest_freq", "4"], ["--update_html_freq", "4"], ["--no_verify"],
           ["--lock", "none"], [])
REFUSED = (["--ngf", "16"], ["--gan_mode", "lsgan"], ["--epoch_count", "2"], ["--netD", "pixel"])


class Stopper:
    """Requests a stop, as Ctrl-C would, at one point of the next training command."""

    def __init__(self, monkeypatch, where, nth):
        self.fired = False
        original = {"after_step": train.Trainer.step, "end_of_epoch": train.Trainer.end_epoch,
                    "during_validation": train.validate, "during_save": train.Trainer.save}[where]
        calls = [0]

        def stopping(*a, **k):
            calls[0] += 1
            if where == "after_step":
                result = original(*a, **k)
            if calls[0] == nth and not self.fired:
                self.fired = True
                StopRequest.active.request(signal.SIGINT)
            return result if where == "after_step" else original(*a, **k)
        owner = train if where == "during_validation" else train.Trainer
        name = {"after_step": "step", "end_of_epoch": "end_epoch", "during_validation": "validate",
                "during_save": "save"}[where]
        monkeypatch.setattr(owner, name, stopping)


class Walk:
    def __init__(self, seed, tmp_path, demo_root, monkeypatch, slow, references):
        self.rng = random.Random(seed)
        self.seed, self.tmp, self.demo, self.patch, self.slow = seed, tmp_path, demo_root, monkeypatch, slow
        self.model = ("pix2pix", "atme")[seed % 2]
        self.name = ("run", "group/run")[(seed // 2) % 2]
        self.ck, self.results = tmp_path / "ck", tmp_path / "results"
        self.run_dir = self.ck / self.name
        self.epochs = FIRST_EPOCHS
        self.state = "none"  # none | partial | finished
        self.history, self.references = [], references
        self.outside = tmp_path / "outside.txt"
        self.outside.write_text("a file beside the run's folders\n")
        self.outside_before = (folder_state(demo_root), self.outside.read_bytes())

    # ------------------------------------------------------------------ running commands
    def train(self, *extra, stop=None, check=True):
        args = ["--checkpoints_dir", self.ck, "--name", self.name, *extra]
        with self.patch.context() as patch:
            self.patch = patch
            stopper = Stopper(patch, stop, self.rng.randint(1, 4)) if stop else None
            result = train_main(*args, check=False)
        self.patch = self.patch_root
        if check and result.returncode not in (0, 128 + signal.SIGINT):
            raise AssertionError(f"train.py {args} exited {result.returncode}:\n{result.stderr[-3000:]}")
        if result.returncode == 128 + signal.SIGINT:
            assert stopper is not None and stopper.fired, result.stderr[-2000:]
            self.state = "partial"
            self.check_stop_page()
        elif result.returncode == 0:
            self.state = "finished"
        return result

    def fresh_args(self):
        return ["--dataroot", self.demo, *MODELS[self.model], *COMMON, "--n_epochs", str(self.epochs)]

    def check_refused(self, result, before, cli="train.py"):
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert folder_state(self.tmp) == before, "a refused command changed the disk"
        for command in printed_commands(result.stderr):
            args = script_args(command, cli)
            if cli == "train.py":
                TrainOptions().parse(args)  # it parses as train.py takes it (a refusal of its own would raise)

    def check_stop_page(self):
        page = self.run_dir / "web" / "index.html"
        if page.exists():
            found = re.search(r"resumable with:</p>\s*<pre>\s*<code>([^<]*)</code>", page.read_text())
            assert found, "the stopped run's page gives no resume command"
            assert script_args(found.group(1).replace("&amp;", "&"), "train.py")[-1] == "--continue_train"

    # ------------------------------------------------------------------ rules
    def rules(self):
        found = []
        if self.state == "none":
            found += [self.start]
        else:
            found += [self.fresh_again, self.refused_change, self.test]
            found += [self.resume] if self.state == "partial" else [self.extend]
            if self.slow:
                found += [self.kill, self.two_tests]
        return found

    def start(self):
        stop = self.rng.choice(STOPS)
        self.history.append(f"start stop={stop}")
        self.train(*self.fresh_args(), stop=stop)

    def resume(self, extra=None):
        extra = list(self.rng.choice(ALLOWED)) if extra is None else extra
        stop = self.rng.choice(STOPS)
        self.history.append(f"resume {' '.join(extra)} stop={stop}")
        self.train("--continue_train", *extra, stop=stop)

    def extend(self):
        self.epochs += 1
        self.history.append(f"extend to {self.epochs}")
        stop = self.rng.choice(STOPS)
        self.train("--continue_train", "--n_epochs", str(self.epochs), stop=stop)

    def fresh_again(self):
        self.history.append("fresh command on the run's folder")
        before = folder_state(self.tmp)
        result = train_main(*["--checkpoints_dir", self.ck, "--name", self.name], *self.fresh_args(), check=False)
        self.check_refused(result, before)
        resume = script_args(printed_commands(result.stderr)[0], "train.py")
        assert resume[-1] == "--continue_train" and resume[resume.index("--name") + 1] == self.name

    def refused_change(self):
        change = self.rng.choice(REFUSED)
        self.history.append(f"refused {' '.join(change)}")
        before = folder_state(self.tmp)
        result = train_main("--checkpoints_dir", self.ck, "--name", self.name, "--continue_train", *change,
                            check=False)
        self.check_refused(result, before)

    def test(self):
        self.history.append("test")
        run_before = folder_state(self.run_dir)
        result = test_main("--checkpoints_dir", self.ck, "--name", self.name, "--results_dir", self.results,
                           "--num_test", "2", check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert folder_state(self.run_dir) == run_before, "test.py wrote into the run folder"
        self.check_pages()

    def kill(self):
        self.history.append("SIGKILL")
        args = ["--checkpoints_dir", str(self.ck), "--name", self.name, "--continue_train"]
        if self.state == "finished":
            self.epochs += 1
            args += ["--n_epochs", str(self.epochs)]
        proc = subprocess.run([sys.executable, "-c", KILLER, "step", str(self.rng.randint(1, 6)), *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr[-3000:]
        self.state = "partial" if proc.returncode else "finished"

    def two_tests(self):
        self.history.append("two test.py at once")
        command = [sys.executable, os.path.join(ROOT, "test.py"), "--checkpoints_dir", str(self.ck), "--name",
                   self.name, "--results_dir", str(self.results), "--num_threads", "0"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        codes = [p.returncode for p in procs]
        assert 0 in codes and set(codes) <= {0, 2}, outs
        self.check_pages()

    # ------------------------------------------------------------------ invariants
    def check_pages(self):
        for root, _, names in os.walk(self.results):
            if "index.html" not in names:
                continue
            page = open(os.path.join(root, "index.html")).read()
            for link in re.findall(r'(?:src|href)="([^"?#]+)', page):
                if "://" in link:
                    continue
                from urllib.parse import unquote
                assert os.path.exists(os.path.join(root, unquote(link))), f"{root}/index.html links {link}"

    def check_outside(self):
        assert (folder_state(self.demo), self.outside.read_bytes()) == self.outside_before, "a file outside changed"

    def finish(self):
        """Plain resumes until the run has trained all its epochs; then it equals the uninterrupted run."""
        for _ in range(3):
            if self.state == "finished":
                break
            self.history.append("finish")
            self.train("--continue_train") if self.state == "partial" else self.train(*self.fresh_args())
        assert self.state == "finished"
        assert_same_run(str(self.references(self.model, self.epochs)), str(self.run_dir), kept_pools="common")

    def walk(self, steps):
        self.patch_root = self.patch
        try:
            for _ in range(steps):
                self.rng.choice(self.rules())()
                self.check_outside()
            self.finish()
            self.check_outside()
        except BaseException as err:
            raise AssertionError(f"RUN_LIFE_SEEDS={self.seed} ({self.model}, --name {self.name}) failed after: "
                                 f"{' -> '.join(self.history)}\n{err}") from err


@pytest.fixture(scope="module")
def references(tmp_path_factory, demo_root):
    """Uninterrupted runs of each model and length, made when first asked for."""
    made = {}

    def reference(model, epochs):
        if (model, epochs) not in made:
            ck = tmp_path_factory.mktemp(f"uninterrupted_{model}_{epochs}")
            train_main("--dataroot", demo_root, "--checkpoints_dir", ck, "--name", "ref", *MODELS[model], *COMMON,
                       "--n_epochs", str(epochs))
            made[(model, epochs)] = ck / "ref"
        return made[(model, epochs)]
    return reference


def seeds(default):
    text = os.environ.get("RUN_LIFE_SEEDS")
    if not text:
        return default
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


@pytest.mark.parametrize("seed", seeds([0, 1]))
def test_a_runs_life_at_random_keeps_every_promise(seed, tmp_path, demo_root, monkeypatch, references):
    Walk(seed, tmp_path, demo_root, monkeypatch, slow=False, references=references).walk(steps=5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", seeds(list(range(100, 104))))
def test_a_runs_long_life_with_kills_and_parallel_tests(seed, tmp_path, demo_root, monkeypatch, references):
    Walk(seed, tmp_path, demo_root, monkeypatch, slow=True, references=references).walk(
        steps=int(os.environ.get("RUN_LIFE_STEPS", "10")))
