"""Entry point: the last epoch's convergence line of a run folder,
`python -m scripts.experiments.run_records checkpoints/demo_atme` (scripts/experiments/study/records.py)."""
import os
import sys

if __name__ == "__main__":
    if not __package__:  # run as `python scripts/experiments/run_records.py`: import the project as -m would
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from scripts.experiments.study.records import main
    from util.command_line.cli import run_main
    run_main(main)
