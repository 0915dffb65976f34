"""The per-dataset experiment scripts, fig3/ and Table 2 through the one job layer: the scripts accept the job
flags, a run's job trains with experiment.sh's train.py command and runs its later stages after it, --status and
--dry_run answer without preparing data, a refused --executor slurm names a command that works, and the
per-dataset scripts and Table 2 share each run's job files (a run trained by one is done for the other)."""
import os
import re
import shlex
import subprocess

import pytest

from conftest import ROOT
from scripts.experiments import experiment_jobs

SCRIPTS = os.path.join(ROOT, "scripts", "experiments")


def script(name, *args, **env):
    full_env = dict(os.environ, DATASETS_DIR="/nonexistent/data", RESULTS_DIR=env.pop("RESULTS_DIR"), **env)
    return subprocess.run(["bash", os.path.join(SCRIPTS, name), *args], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


@pytest.mark.slow  # starts bash and Python processes
def test_a_per_dataset_script_hands_its_runs_to_the_job_layer(tmp_path):
    results = str(tmp_path / "results")
    shown = script("atme/facades.sh", "both", "--dry_run", "--max_parallel", "2", "--", "--gpu_ids", "-1",
                   RESULTS_DIR=results)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "executor: local (submitit LocalExecutor), 2 job(s), at most 2 at once" in out
    for direction in ("AtoB", "BtoA"):
        line = next(l for l in out.splitlines() if l.strip().startswith(f"facades_atme_{direction}:"))
        for part in ("python train.py --dataroot /nonexistent/data/facades", "--model atme --dim 64",
                     "--batch_size 48", f"--direction {direction}", "--gpu_ids -1"):
            assert part in line, part
    assert not os.path.exists(results)  # --dry_run prepares and writes nothing
    status = script("segan/maps.sh", "--status", RESULTS_DIR=results)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-2].split() == ["maps_segan_BtoA", "not", "submitted"]
    bad = script("pix2pix/maps.sh", "BtoA", "--executor", RESULTS_DIR=results)
    assert bad.returncode == 2 and "--executor needs a value" in bad.stderr


@pytest.mark.slow  # starts bash and Python processes
def test_slurm_without_slurm_is_refused_with_a_command_that_works(tmp_path):
    results = str(tmp_path / "results")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not os.path.isfile(
        os.path.join(p, "sbatch")))
    refused = script("atme/facades.sh", "BtoA", "--executor", "slurm", "--", "--gpu_ids", "-1", RESULTS_DIR=results,
                     PATH=path)
    assert refused.returncode == 2 and "this machine has no SLURM" in refused.stderr
    advice = next(l.strip() for l in refused.stderr.splitlines() if "--executor local" in l)
    assert advice.startswith("bash scripts/experiments/atme/facades.sh BtoA")  # the script typed, not python -m
    words = shlex.split(advice)
    dry = subprocess.run([*words[:words.index("--")], "--dry_run", *words[words.index("--"):]],
                         capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env=dict(os.environ, DATASETS_DIR="/nonexistent/data", RESULTS_DIR=results))
    assert dry.returncode == 0, dry.stderr
    assert "executor: local" in dry.stdout and re.search(r"facades_atme_BtoA: \S*python\S* train\.py", dry.stdout)
    assert not os.path.exists(results)


@pytest.mark.slow  # starts bash and Python processes
def test_fig3_and_table2_pass_the_job_flags_on(tmp_path):
    results = str(tmp_path / "results")
    fig3 = script("fig3/maps.sh", "AtoB", "--executor", "slurm", "--max_parallel", "4", "--slurm_extra", "qos=high",
                  "--", "--gpu_ids", "0", RESULTS_DIR=results, DRY_RUN="1")
    assert fig3.returncode == 0, fig3.stderr
    line = next(l for l in fig3.stdout.splitlines() if "convergence_study" in l)
    assert "--executor slurm --max_parallel 4 --slurm_extra qos=high -- --gpu_ids 0" in line
    table = script("reproduce_table2.sh", "study", "--max_parallel", "3", RESULTS_DIR=results, DRY_RUN="1")
    assert table.returncode == 0, table.stderr
    lines = [l for l in table.stdout.splitlines() if "convergence_study" in l]
    assert len(lines) == 8 and all("--max_parallel 3 --dry_run" in l for l in lines)


@pytest.mark.slow  # starts bash processes (experiment.sh's DRY_RUN)
def test_table2_and_the_per_dataset_scripts_share_each_runs_job_files(monkeypatch, tmp_path):
    from scripts.experiments import table2
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("SEG_WEIGHTS", raising=False)
    mine = experiment_jobs.plan_job("pix2pix", "cityscapes", "BtoA", ["prepare", "train", "test", "kid"], [])
    theirs = table2.plan_job("pix2pix", "cityscapes", "BtoA", [])
    assert (mine.name, mine.run_dir, mine.events, mine.train_args) == \
        (theirs.name, theirs.run_dir, theirs.events, theirs.train_args)
    assert mine.events.startswith(str(tmp_path / "results" / "jobs"))
    followed = [" ".join(c[1:3]) for c in mine.after.commands]
    assert followed[0].startswith("test.py --dataroot") and "-m scripts.eval.compute_kid" in followed[1]
    only_test = experiment_jobs.plan_job("pix2pix", "cityscapes", "BtoA", ["train", "test"], [])
    assert len(only_test.after.commands) == 1  # the job runs the stages asked for, no more


@pytest.mark.slow  # starts bash processes (experiment.sh's DRY_RUN) and collect_results
def test_table2_shows_status_without_collecting_and_collects_after_its_runs_finish(monkeypatch, tmp_path, capfd):
    import types
    from scripts.experiments import table2
    results = tmp_path / "results"
    monkeypatch.setenv("RESULTS_DIR", str(results))
    one = ["--models", "pix2pix", "--datasets", "facades", "--directions", "AtoB"]
    assert table2.main(one + ["--status"]) == 0  # before: went on to collect a table and failed with a traceback
    assert capfd.readouterr().out.splitlines()[-1] == "1 not submitted"
    assert not (results / "table2.md").exists()
    collected = []
    monkeypatch.setattr(table2, "subprocess", types.SimpleNamespace(
        run=lambda args, **kw: collected.append(args) or types.SimpleNamespace(returncode=0)))
    monkeypatch.setattr(experiment_jobs, "submit", lambda *a, **k: 1)  # a run failed: no table
    assert table2.main(one) == 1 and not collected
    monkeypatch.setattr(experiment_jobs, "submit", lambda *a, **k: 0)  # all finished: the table is collected
    (results / "table2.md").parent.mkdir(parents=True)
    (results / "table2.md").write_text("| table |\n")
    assert table2.main(one) == 0  # before: returned at once, with no table
    assert collected and collected[0][1:4] == ["-m", "scripts.eval.collect_results", str(results)]
    monkeypatch.setattr(table2, "subprocess", subprocess)
    (results / "table2.md").unlink()
    assert table2.main(one) == 2  # collect_results' own refusal (no kid.json yet), not a traceback
    assert "no kid.json under" in capfd.readouterr().err
