#!/usr/bin/env bash
# SEGAN on facades (supervised, labels -> photo (BtoA); settings: scripts/experiments/experiment.sh).
#   bash scripts/experiments/segan/facades.sh [AtoB|BtoA] [prepare train test diversity kid] [job flags] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" segan facades "$@"
