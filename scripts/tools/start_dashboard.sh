#!/usr/bin/env bash
# Start the visdom server that train.py's live dashboard talks to; installs its web assets first when
# they are missing (from the npm registry, so it works on machines without CDN access).
# Usage: bash scripts/tools/start_dashboard.sh [PORT] [more visdom.server flags, e.g. -bind_local]
# Then train with --display_port PORT and open http://localhost:PORT/env/<run name>.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PORT=${1:-8097}
[ $# -gt 0 ] && shift
if ! "$PY" -m scripts.tools.install_visdom_assets --check >/dev/null 2>&1; then
  "$PY" -m scripts.tools.install_visdom_assets
fi
echo "[dashboard] visdom on port $PORT: open http://localhost:$PORT/env/<run name> (Ctrl-C stops it)"
exec "$PY" -m visdom.server -port "$PORT" "$@"
