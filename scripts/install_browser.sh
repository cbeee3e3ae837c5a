#!/usr/bin/env bash
# Install the browser the admin UI's end-to-end tests drive: Debian's `chromium` (headless).
#
# Playwright (a PyPI package, in the venv's dev extra) drives this binary through its
# executable path; `playwright install` cannot download its own browser builds here.
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (apt-get) otherwise.
#
#   scripts/install_browser.sh
#
# Environment: LLMBOX_CHROMIUM (browser path, default /usr/bin/chromium).
set -euo pipefail

CHROMIUM=${LLMBOX_CHROMIUM:-/usr/bin/chromium}

say() { printf '[install-browser] %s\n' "$*"; }
die() { printf '[install-browser] error: %s\n' "$*" >&2; exit 1; }

if [ ! -x "$CHROMIUM" ]; then
  command -v apt-get >/dev/null 2>&1 \
    || die "$CHROMIUM is missing and there is no apt-get: install Chromium by hand or set LLMBOX_CHROMIUM"
  [ "$(id -u)" = 0 ] || die "$CHROMIUM is missing: run as root (apt-get install chromium) or set LLMBOX_CHROMIUM"
  say "installing chromium with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  # An old or missing package list makes apt-get install fail: refresh it first.
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  [ -x "$CHROMIUM" ] || die "apt-get installed chromium but $CHROMIUM is not there"
fi
say "$("$CHROMIUM" --version 2>/dev/null || echo "chromium at $CHROMIUM (version unknown)")"
