#!/usr/bin/env bash
# Run the test suite: ./test.sh [pytest arguments]
# Installs what is missing first (scripts/install.sh --dev), so it works on a fresh machine.
# Without arguments it runs everything: pytest, then the provisioning checks (scripts/infra.sh:
# lint + Molecule on a real LXC container). With pytest arguments it runs just those tests.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=${LLMBOX_VENV:-$ROOT/.venv}
"$ROOT/scripts/install.sh" --dev
"$ROOT/scripts/install_browser.sh"   # Debian chromium for the admin UI's browser tests
cd "$ROOT"
mkdir -p artifacts
"$VENV/bin/python" -m pytest "$@"
if [ $# -eq 0 ]; then
  "$ROOT/scripts/infra.sh"
fi
