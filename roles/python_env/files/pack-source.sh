#!/bin/bash
# Pack the checkout's source (tracked and untracked-but-not-ignored files, never venvs, models or
# runtime state) into a deterministic tarball: the same tree gives the same bytes, so Ansible's
# copy reports "changed" only when the source really changed.
# What the container does not run stays on the controller, secrets above all: the inventory (vaults,
# the registry the role templates from llmbox_app_registry_src), molecule/, any password or vault
# file (ansible/*password*, *vault*), and any file that is Ansible Vault ciphertext wherever it is.
# Nothing in the tarball is writable by group or others.
#   pack-source.sh SOURCE_DIR OUT.tar.gz
set -euo pipefail
src=$1 out=$2
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp" "$tmp.list"' EXIT
cd "$src"
git ls-files -z --cached --others --exclude-standard \
  | grep -zv -E '^(\.venv[^/]*|var|models|artifacts|build|inventory|molecule)/' \
  | grep -zv -E '(^|/)[^/]*(password|vault)[^/]*$' \
  | while IFS= read -r -d '' f; do
      [ -f "$f" ] && [ "$(head -c 14 "$f")" != '$ANSIBLE_VAULT' ] && printf '%s\0' "$f"
    done | sort -z > "$tmp.list"
tar --null -T "$tmp.list" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --mode='u+rwX,go+rX,go-w' -cf - | gzip -n > "$tmp"
if cmp -s "$tmp" "$out"; then echo unchanged; else mv "$tmp" "$out"; echo changed; fi
