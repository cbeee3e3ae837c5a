#!/usr/bin/env bash
# Can this host's NVIDIA stack run the CUDA vLLM that llmbox installs? The one owner of the GPU
# minimums: scripts/install.sh, the lxc_host role (on the LXC host) and the nvidia_userspace role
# (in the container) all run this script.
#
#   scripts/gpu_preflight.sh                      every GPU nvidia-smi lists: driver and compute capability
#   scripts/gpu_preflight.sh --driver-version V   only a driver version (before nvidia-smi is installed)
#
# Why these minimums: ray[serve,llm]==2.60.0 pins vLLM 0.29.0, built for CUDA 13 (its extensions
# link libcudart.so.13). CUDA 13 needs driver >= 580, and its kernels are built for compute
# capability 7.5 (Turing) and newer only: Maxwell, Pascal and Volta cards (GTX 9xx/10xx, P40,
# P100, V100) cannot run it. Raise them here when the pinned stack moves.
#
# Prints one "ok" line per GPU and exits 0, or prints what is wrong and what to do, and exits 1.
# Environment: NVIDIA_SMI (the nvidia-smi to run; tests put a fake first).
set -euo pipefail

MIN_DRIVER=580
MIN_COMPUTE_CAPABILITY=7.5
SMI=${NVIDIA_SMI:-nvidia-smi}

fail() { printf '[gpu-preflight] error: %s\n' "$*" >&2; exit 1; }

# driver_ok VERSION: true when the major version is at least MIN_DRIVER.
driver_ok() { [[ "$1" =~ ^([0-9]+)(\.[0-9]+)+$ ]] && [ "${BASH_REMATCH[1]}" -ge "$MIN_DRIVER" ]; }

# cc_ok X.Y: true when the compute capability is at least MIN_COMPUTE_CAPABILITY.
cc_ok() {
  [[ "$1" =~ ^([0-9]+)\.([0-9]+)$ ]] || return 1
  local major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
  local want_major=${MIN_COMPUTE_CAPABILITY%.*} want_minor=${MIN_COMPUTE_CAPABILITY#*.}
  [ "$major" -gt "$want_major" ] || { [ "$major" -eq "$want_major" ] && [ "$minor" -ge "$want_minor" ]; }
}

driver_message() {
  echo "NVIDIA driver $1 is too old: llmbox's CUDA engine (vLLM 0.29, CUDA 13) needs driver $MIN_DRIVER or newer." \
       "Install a $MIN_DRIVER+ driver on the host (Debian: NVIDIA's CUDA repository, package cuda-drivers;" \
       "Proxmox/.run hosts: the $MIN_DRIVER+ .run installer), reboot, and run this again; or install the CPU" \
       "build instead (scripts/install.sh --device cpu)."
}

if [ "${1:-}" = --driver-version ]; then
  [ $# -ge 2 ] || fail "--driver-version needs a version, e.g. 580.65.06"
  driver_ok "$2" || fail "$(driver_message "$2")"
  echo "[gpu-preflight] ok: NVIDIA driver $2 (>= $MIN_DRIVER)"
  exit 0
fi
[ $# -eq 0 ] || fail "unknown argument '$1' (usage: $0 [--driver-version V])"

command -v "$SMI" >/dev/null 2>&1 || fail "nvidia-smi not found: install the NVIDIA driver ($MIN_DRIVER or newer) first"
if ! rows=$("$SMI" --query-gpu=index,name,driver_version,compute_cap --format=csv,noheader 2>&1); then
  # Drivers older than 510 do not know the compute_cap field: ask for the version alone.
  version=$("$SMI" --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ') || true
  [ -n "$version" ] && ! driver_ok "$version" && fail "$(driver_message "$version")"
  fail "nvidia-smi failed: ${rows//$'\n'/ } (is the NVIDIA kernel driver loaded? try nvidia-smi on the host)"
fi
[ -n "$rows" ] || fail "nvidia-smi lists no GPU"

bad=()
while IFS=, read -r index name version cc; do
  index=${index// /} version=${version// /} cc=${cc// /} name=${name# }
  if ! driver_ok "$version"; then fail "$(driver_message "$version")"; fi
  if ! cc_ok "$cc"; then
    bad+=("GPU $index $name (compute capability $cc)")
  else
    echo "[gpu-preflight] ok: GPU $index $name, compute capability $cc, driver $version"
  fi
done <<< "$rows"
if [ ${#bad[@]} -gt 0 ]; then
  fail "$(IFS=';'; echo "${bad[*]}") is older than compute capability $MIN_COMPUTE_CAPABILITY, the oldest that" \
       "CUDA 13 (vLLM 0.29) supports: Maxwell, Pascal and Volta cards (GTX 9xx/10xx, P40, P100, V100) cannot run" \
       "llmbox's GPU engine. Remove or hide the card from this host (or the container's passthrough), or install" \
       "the CPU build (scripts/install.sh --device cpu)."
fi
