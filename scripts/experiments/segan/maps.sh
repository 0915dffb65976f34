#!/usr/bin/env bash
# SEGAN on maps (supervised, map -> aerial photo (BtoA); settings: scripts/experiments/experiment.sh).
#   bash scripts/experiments/segan/maps.sh [AtoB|BtoA] [prepare train test diversity kid] [job flags] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" segan maps "$@"
