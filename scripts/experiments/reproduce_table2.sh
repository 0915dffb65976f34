#!/usr/bin/env bash
# Every run behind the ATME paper's Table 2 (pix2pix and ATME, four datasets, both directions), one job per run,
# then the table (python -m scripts.experiments.table2); with the "study" stage also its Fig. 3 (ATME, ATME without
# feedback and pix2pix over SEEDS, per dataset and direction: scripts/experiments/fig3/<dataset>.sh).
#   bash scripts/experiments/reproduce_table2.sh [table2] [study] [job flags] [-- extra train.py flags]
# Job flags (docs/cluster.md): --executor local|slurm|debug, --max_parallel N, --slurm_partition P,
# --slurm_gpus_per_job N, --slurm_time_min M, --slurm_extra KEY=VALUE, --status, --dry_run. Default stage: table2.
# Environment as in scripts/experiments/experiment.sh (KID_ARGS="--inception_weights PATH" on offline machines,
# STUDY_ARGS for the study; SEG_WEIGHTS adds the Cityscapes FCN scores of Table 3). Writes results/table2.md and
# results/table2.csv, and studies/<dataset>_convergence_<direction>/ for the study. DRY_RUN=1 is --dry_run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
STAGES=()
while [ $# -gt 0 ] && [[ "$1" =~ ^(table2|study)$ ]]; do STAGES+=("$1"); shift; done
[ ${#STAGES[@]} -gt 0 ] || STAGES=(table2)
JOB_FLAGS=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do JOB_FLAGS+=("$1"); shift; done
[ "${DRY_RUN:-0}" = 1 ] && JOB_FLAGS+=(--dry_run)
for stage in "${STAGES[@]}"; do
  case "$stage" in
    table2) "$PY" -m scripts.experiments.table2 "${JOB_FLAGS[@]}" "$@" ;;
    study)
      for dataset in facades maps cityscapes night2day; do
        bash "scripts/experiments/fig3/$dataset.sh" both "${JOB_FLAGS[@]}" "$@"
      done ;;
  esac
done
