"""Entry point of the convergence study: `python -m scripts.experiments.convergence_study --help` (or
`python scripts/experiments/convergence_study.py --help`). The study lives in scripts/experiments/study/."""
import os
import sys

if __name__ == "__main__":
    if not __package__:  # run as `python scripts/experiments/convergence_study.py`: import the project as -m would
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from scripts.experiments.study.cli import main
    from util.command_line.cli import run_main
    run_main(main)
