#!/usr/bin/env bash
# atme on maps, both directions by default (settings: scripts/experiments/experiment.sh).
#   bash scripts/experiments/atme/maps.sh [AtoB|BtoA|both] [prepare train test kid ...] [job flags] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" atme maps "$@"
