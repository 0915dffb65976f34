#!/usr/bin/env bash
# SEGAN on maps (supervised, map -> aerial photo (BtoA); settings: scripts/experiment.sh).
#   bash scripts/segan/maps.sh [AtoB|BtoA] [prepare train test diversity kid] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" segan maps "$@"
