#!/usr/bin/env bash
# Take the operators' CRDs from their Go modules at the versions pinned in
# tools/operator-crds.txt, and link them into .tools/crds.
#
#   scripts/fetch-operator-crds.sh
#
# `go mod download` fetches each module zip from the Go module proxy (checked against the
# checksum database, and here against the pinned go.sum hash too); the CRD files are copied
# into a folder of the user's cache named by module and version, which every clone on the
# machine shares. A second run only checks that folder and the links.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PINS="$ROOT/tools/operator-crds.txt"
CACHE="${K8SEE_CRDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8see/crds}"
LINKS="$ROOT/.tools/crds"
say() { printf '  %-16s %s\n' "$1" "$2"; }
die() { printf 'fetch-operator-crds: %s\n' "$*" >&2; exit 1; }

command -v go >/dev/null || die "go is not installed (the CRDs come from Go modules)"
mkdir -p "$CACHE" "$LINKS"
# Outside any module, with no go.mod to consult or change.
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local

fetched=0
wanted=()
while read -r module version sum files; do
  [[ -z "$module" || "$module" == \#* ]] && continue
  [[ -n "$files" ]] || die "$PINS: $module names no CRD file"
  dest="$CACHE/${module//\//_}@$version"
  complete=1
  for file in $files; do [[ -f "$dest/$(basename "$file")" ]] || complete=""; done
  # Fetched again when the pin moved or a file was added to its line.
  if [[ -z "$complete" || ! -f "$dest/.sum" || "$(cat "$dest/.sum")" != "$sum" ]]; then
    info="$(cd "$(mktemp -d)" && go mod download -json "$module@$version")" ||
      die "go mod download $module@$version failed: $info"
    dir="$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$info")"
    got="$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$info")"
    [[ "$got" == "$sum" ]] || die "$module@$version: go.sum hash $got, pinned $sum"
    tmp="$dest.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    for file in $files; do
      [[ -f "$dir/$file" ]] || die "$module@$version has no $file"
      install -m 0644 "$dir/$file" "$tmp/$(basename "$file")"
    done
    echo "$sum" >"$tmp/.sum"
    rm -rf "$dest" && mv "$tmp" "$dest"
    fetched=$((fetched + 1))
  fi
  for file in $files; do
    name="$(basename "$file")"
    wanted+=("$name")
    [[ "$(readlink "$LINKS/$name" 2>/dev/null)" == "$dest/$name" ]] || ln -sfn "$dest/$name" "$LINKS/$name"
  done
  # The module's last element, or the one before a major-version suffix (keda/v2 -> keda).
  label="${module##*/}"
  [[ "$label" =~ ^v[0-9]+$ ]] && label="${module%/*}" && label="${label##*/}"
  say "$label" "$([[ $fetched -gt 0 ]] && echo fetched || echo found) $version CRDs (.tools/crds)"
  fetched=0
done <"$PINS"

# A pin removed or moved on leaves no stale CRD behind.
for link in "$LINKS"/*.yaml; do
  [[ -e "$link" || -L "$link" ]] || continue
  keep=""
  for name in "${wanted[@]}"; do [[ "$(basename "$link")" == "$name" ]] && keep=1; done
  [[ -n "$keep" ]] || rm -f "$link"
done
