#!/usr/bin/env bash
# Run the box on this machine:  ./start.sh [start|stop|status|reconcile|token NAME [--scope read]
#                                          |key NAME [--scope inference,control] [--models a,b]]
# `start` (the default) installs what is missing (scripts/install.sh), then starts what is not running.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${LLMBOX_VENV:-$ROOT/.venv}
command=${1:-start}
if [ "$command" = start ]; then
  "$ROOT/scripts/install.sh"
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[llmbox] not installed yet: run ./start.sh" >&2
  exit 1
fi
cd "$ROOT"
exec "$VENV/bin/python" -m app.box "$@"
