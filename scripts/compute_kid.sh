#!/usr/bin/env bash
# KID x100 of a test.py result folder (or of two folders); all flags go to scripts/compute_kid.py.
#   scripts/compute_kid.sh results/facades_atme_BtoA/test_latest [--fid] [--inception_weights PATH]
#   scripts/compute_kid.sh --dir1 real_images/ --dir2 fake_images/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  # A first argument that is not a flag is the result folder.
  RESULTS="$1"; shift
  exec "$PYTHON" "$ROOT/scripts/compute_kid.py" --results_dir "$RESULTS" "$@"
fi
exec "$PYTHON" "$ROOT/scripts/compute_kid.py" "$@"
