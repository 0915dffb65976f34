#!/usr/bin/env bash
# pix2pix on night2day, both directions by default (settings: scripts/experiments/experiment.sh).
#   bash scripts/experiments/pix2pix/night2day.sh [AtoB|BtoA|both] [prepare train test kid ...] [job flags] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" pix2pix night2day "$@"
