#!/usr/bin/env bash
# Provisioning checks: yamllint + ansible-lint (production profile), then the Molecule scenario on
# two real LXC containers, a head and a Ray worker (create, prepare, check, converge, idempotence,
# verify, destroy), with timings.
#
#   scripts/infra.sh [all|setup|lint|molecule|destroy]     (default: all)
#
# Idempotent and quick on re-runs: apt packages, the tool venv (.venv-infra) and community.general
# are installed only when missing; the container rootfs tarball is kept in artifacts/infra/. Whatever the outcome, the containers, their bridge and NAT are removed on exit.
# Environment: LLMBOX_INFRA_VENV (tool venv path), LLMBOX_INFRA_KEEP=1 (keep the container).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LLMBOX_INFRA_VENV:-$ROOT/.venv-infra}
PYTHON=${LLMBOX_PYTHON:-python3}
APT_PACKAGES=(lxc lxc-templates debootstrap uidmap zstd nftables iproute2 lxc-dev pkg-config gcc python3-dev)
# Pinned tools. Galaxy is unreachable here: community.general comes out of the PyPI `ansible` wheel.
PIP_PACKAGES=(ansible-core==2.19.14 molecule==26.10.0 pytest-testinfra==10.2.2 lxc==3.0.4.0
              ansible-lint==26.10.1 yamllint==1.38.0 pytest==9.2.0 pytest-timeout==2.4.0)
ANSIBLE_WHEEL_VERSION=12.3.0
TIMINGS=()

say() { printf '[infra] %s\n' "$*"; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }

# step NAME COMMAND...: run it, record how long it took.
step() {
  local name=$1 start=$SECONDS; shift
  say "== $name"
  "$@"
  TIMINGS+=("$(printf '%-12s %4d s' "$name" $((SECONDS - start)))")
}

summary() {
  [ ${#TIMINGS[@]} -gt 0 ] || return 0
  say "timings:"
  printf '[infra]   %s\n' "${TIMINGS[@]}"
}

setup_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then say "apt packages: present"; return; fi
  say "apt packages: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

setup_venv() {
  local stamp="$VENV/.llmbox-infra-stamp" want
  want="$(printf '%s\n' "${PIP_PACKAGES[@]}" "ansible==$ANSIBLE_WHEEL_VERSION" | sha256sum | cut -c1-16)"
  if [ -x "$VENV/bin/molecule" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    say "tool venv: up to date ($VENV)"; return
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  say "tool venv: installing ${PIP_PACKAGES[*]}"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" 2>&1 | { grep -v 'is ignored: it is neither' || true; }
  local site wheel
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  wheel=$(mktemp -d)
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps "ansible==$ANSIBLE_WHEEL_VERSION" -d "$wheel" 2>&1 \
    | { grep -v 'is ignored: it is neither' || true; }
  rm -rf "$site/ansible_collections/community/general"
  "$VENV/bin/python" - "$wheel"/ansible-*.whl "$site" <<'PY'
import sys, zipfile
wheel, site = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(site, [n for n in z.namelist() if n.startswith("ansible_collections/community/general/")])
PY
  rm -rf "$wheel"
  echo "$want" > "$stamp"
}

lint() {
  cd "$ROOT"
  "$VENV/bin/yamllint" -s ansible roles inventory molecule tests/infra .yamllint .ansible-lint
  "$VENV/bin/ansible-lint" --profile production --offline -q
}

molecule_step() {
  (cd "$ROOT" && "$VENV/bin/molecule" "$@")
}

cleanup() {
  local rc=$?
  if [ "${MOLECULE_STARTED:-0}" = 1 ] && [ "${LLMBOX_INFRA_KEEP:-0}" != 1 ]; then
    say "cleaning up (molecule destroy)"
    molecule_step destroy >/dev/null 2>&1 || say "destroy failed: run scripts/infra.sh destroy"
  fi
  summary
  exit $rc
}

run_molecule() {
  MOLECULE_STARTED=1
  mkdir -p "$ROOT/artifacts/infra"
  step destroy molecule_step destroy
  step syntax molecule_step syntax
  step create molecule_step create       # rootfs tarball (debootstrap) only when missing
  step prepare molecule_step prepare     # the host play: fresh head and worker containers
  step check molecule_step check         # a dry run (--check) of the whole converge on them
  step converge molecule_step converge
  step idempotence molecule_step idempotence
  step verify molecule_step verify
  if [ "${LLMBOX_INFRA_KEEP:-0}" != 1 ]; then step destroy molecule_step destroy; MOLECULE_STARTED=0; fi
}

[ "$(id -u)" = 0 ] || die "needs root (LXC containers, bridges, nftables)"
export PATH="$VENV/bin:$PATH" PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
trap cleanup EXIT
case "${1:-all}" in
  setup) step setup-apt setup_apt; step setup-venv setup_venv ;;
  lint) step lint lint ;;
  molecule) run_molecule ;;
  destroy) step destroy molecule_step destroy ;;
  all) step setup-apt setup_apt; step setup-venv setup_venv; step lint lint; run_molecule ;;
  *) die "unknown command '$1': all, setup, lint, molecule or destroy" ;;
esac
