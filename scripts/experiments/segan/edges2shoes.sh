#!/usr/bin/env bash
# SEGAN on edges2shoes (unsupervised, edges -> shoes; settings: scripts/experiments/experiment.sh).
#   bash scripts/experiments/segan/edges2shoes.sh [AtoB|BtoA] [prepare train test diversity kid] [job flags] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" segan edges2shoes "$@"
