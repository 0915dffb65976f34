#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite (CPU only). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider --timeout 300 "$@"
