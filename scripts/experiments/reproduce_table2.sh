#!/usr/bin/env bash
# Every run behind the ATME paper's Table 2 (pix2pix and ATME, four datasets, both directions), then the table.
#   bash scripts/experiments/reproduce_table2.sh [-- extra train.py flags, e.g. --gpu_ids 0,1]
# Environment as in scripts/experiments/experiment.sh (KID_ARGS="--inception_weights PATH" on offline machines; SEG_WEIGHTS
# adds the Cityscapes FCN scores of Table 3). Writes results/table2.md and results/table2.csv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
for model in pix2pix atme; do
  for dataset in facades maps cityscapes night2day; do
    bash "scripts/experiments/$model/$dataset.sh" both "$@"
  done
done
"$PY" -m scripts.eval.collect_results "${RESULTS_DIR:-results}" --paper \
    --out_md "${RESULTS_DIR:-results}/table2.md" --out_csv "${RESULTS_DIR:-results}/table2.csv"
cat "${RESULTS_DIR:-results}/table2.md"
