#!/usr/bin/env bash
# Set up .venv if needed, then run the tests (CPU only).
#   bash scripts/run_tests.sh           the fast tier: everything not marked slow (in-process, a couple of minutes)
#   bash scripts/run_tests.sh --full    every test, including the slow ones (torchrun, signals, Chromium, torch.compile)
# Other arguments go to pytest (e.g. -k atme).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
TIER=(-m "not slow")
ARGS=()
for arg in "$@"; do
  if [ "$arg" = "--full" ]; then TIER=(); else ARGS+=("$arg"); fi
done
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider --timeout 300 "${TIER[@]}")
if [ ${#ARGS[@]} -gt 0 ]; then exec "${PYTEST[@]}" "${ARGS[@]}"; fi
# The export tests load ONNX Runtime and OpenVINO into the test process; with them loaded, later tests in the
# same process crashed with SIGSEGV here, so they run in a process of their own.
status=0
"${PYTEST[@]}" --ignore=tests/test_onnx_export.py || status=$?
if [ ${#TIER[@]} -eq 0 ]; then  # the export tests are all slow (tracing, compiling): the full tier only
  "${PYTEST[@]}" tests/test_onnx_export.py || status=$?
fi
exit $status
