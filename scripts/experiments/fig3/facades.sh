#!/usr/bin/env bash
# The ATME paper's Fig. 3 on facades: ATME, ATME without feedback and pix2pix over SEEDS (default 0 1 2) with the
# paper's settings, then the figure and table in studies/facades_convergence_<direction>/ (scripts/experiments/experiment.sh).
#   bash scripts/experiments/fig3/facades.sh [AtoB|BtoA|both] [job flags, docs/cluster.md] [-- extra train.py flags, e.g. --gpu_ids 0]
set -euo pipefail
DIRECTION=both
if [[ "${1:-}" =~ ^(AtoB|BtoA|both)$ ]]; then DIRECTION="$1"; shift; fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" atme facades "$DIRECTION" prepare study "$@"
