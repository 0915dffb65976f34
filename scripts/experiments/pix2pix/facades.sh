#!/usr/bin/env bash
# pix2pix on facades, both directions by default (settings: scripts/experiments/experiment.sh).
#   bash scripts/experiments/pix2pix/facades.sh [AtoB|BtoA|both] [prepare train test kid ...] [job flags] [-- extra train.py flags]
exec bash "$(dirname "${BASH_SOURCE[0]}")/../experiment.sh" pix2pix facades "$@"
