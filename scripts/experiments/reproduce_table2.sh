#!/usr/bin/env bash
# Every run behind the ATME paper's Table 2 (pix2pix and ATME, four datasets, both directions), then the table;
# with the "study" stage also its Fig. 3 (ATME, ATME without feedback and pix2pix over SEEDS, per dataset and
# direction: scripts/experiments/fig3/<dataset>.sh).
#   bash scripts/experiments/reproduce_table2.sh [table2] [study] [-- extra train.py flags, e.g. --gpu_ids 0,1]
# Default stage: table2. Environment as in scripts/experiments/experiment.sh (KID_ARGS="--inception_weights PATH" on
# offline machines, STUDY_ARGS for the study; SEG_WEIGHTS adds the Cityscapes FCN scores of Table 3). Writes
# results/table2.md and results/table2.csv, and studies/<dataset>_convergence_<direction>/ for the study.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
STAGES=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  [[ "$1" =~ ^(table2|study)$ ]] || { echo "error: unknown stage '$1' (table2 study)" >&2; exit 2; }
  STAGES+=("$1"); shift
done
[ ${#STAGES[@]} -gt 0 ] || STAGES=(table2)
for stage in "${STAGES[@]}"; do
  case "$stage" in
    table2)
      for model in pix2pix atme; do
        for dataset in facades maps cityscapes night2day; do
          bash "scripts/experiments/$model/$dataset.sh" both "$@"
        done
      done
      if [ "${DRY_RUN:-0}" = 1 ]; then
        echo "+ $PY -m scripts.eval.collect_results ${RESULTS_DIR:-results} --paper"
      else
        "$PY" -m scripts.eval.collect_results "${RESULTS_DIR:-results}" --paper \
            --out_md "${RESULTS_DIR:-results}/table2.md" --out_csv "${RESULTS_DIR:-results}/table2.csv"
        cat "${RESULTS_DIR:-results}/table2.md"
      fi ;;
    study)
      for dataset in facades maps cityscapes night2day; do
        bash "scripts/experiments/fig3/$dataset.sh" both "$@"
      done ;;
  esac
done
