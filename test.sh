#!/usr/bin/env bash
# Run the test suite: ./test.sh [pytest arguments]
# Installs what is missing first (scripts/install.sh --dev), so it works on a fresh machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${LLMBOX_VENV:-$ROOT/.venv}
"$ROOT/scripts/install.sh" --dev
"$ROOT/scripts/install_browser.sh"   # Debian chromium for the admin UI's browser tests
cd "$ROOT"
mkdir -p artifacts
exec "$VENV/bin/python" -m pytest "$@"
