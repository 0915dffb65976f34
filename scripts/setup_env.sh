#!/usr/bin/env bash
# Create or update the virtual environment in .venv/ at the repository root.
# Idempotent: does nothing when .venv already matches requirements*.txt and this script.
# Usage: bash scripts/setup_env.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.requirements.sha256
want=$(cat requirements.txt requirements-test.txt scripts/setup_env.sh | sha256sum | cut -d' ' -f1)

if [ "${1:-}" != "--force" ] && [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating $VENV and installing requirements (a few minutes the first time)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
# visdom 0.2.4 is a source package whose setup.py imports pkg_resources (gone from setuptools >= 81):
# pin setuptools first and build it without isolation so it sees that setuptools.
$PIP install "setuptools<81" wheel
$PIP install --no-build-isolation -r requirements.txt -r requirements-test.txt
# The visdom server fetches its web assets from CDNs at start; install them from the npm registry so the
# dashboard works offline. Training never needs them, so a failure here is a warning only.
if ! "$VENV/bin/python" -m scripts.tools.install_visdom_assets; then
  echo "[setup] warning: visdom web assets not installed; the live dashboard needs them" \
       "(retry: .venv/bin/python -m scripts.tools.install_visdom_assets). Training is unaffected." >&2
fi
echo "$want" > "$STAMP"
echo "[setup] done: $("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)')"
