#!/usr/bin/env bash
# Set up .venv if needed, then run the tests (CPU only).
#   bash scripts/run_tests.sh           the fast tier: everything not marked slow, in this one process (tests/tier_guard.py
#                                       fails a fast test that starts a process, sends a signal or compiles)
#   bash scripts/run_tests.sh --full    every test, including the slow ones (subprocesses, loader workers, torchrun,
#                                       signals, Chromium, torch.compile, ONNX/OpenVINO export, long trainings)
# Other arguments go to pytest (e.g. -k atme).
# The fast tier's time, on a 2-core Intel Xeon with AVX-512, AVX512-BF16 and AMX, 24 GiB, no GPU, torch 2.14.1, shared
# with a training study and other jobs (load average 6.5), at commit dbd10eb, with
#   OMP_NUM_THREADS=2 /usr/bin/time .venv/bin/python -m pytest -q -p no:cacheprovider -m "not slow" --timeout 600 \
#       --durations=5
# 464 tests in 108 s wall (pytest's count: 102 s; the slowest test 5.5 s) and 72 s of CPU time (64.6 user + 7.6 sys).
# The tests run torch on one thread (tests/conftest.py). On the same machine idle, at 8e0bb38, `time bash
# scripts/run_tests.sh`: 495 tests in 72 s by pytest's count, 76 s wall, 75 s of CPU time.
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
