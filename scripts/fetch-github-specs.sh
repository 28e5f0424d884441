#!/usr/bin/env bash
# GitHub's own descriptions of its API, which the tests hold the GitHub stand-in to.
#
# - @octokit/openapi: GitHub's published OpenAPI description of api.github.com (3.0.3). The
#   tests check every request k8see sends to the stand-in and every answer it gives against it.
# - @octokit/webhooks-schemas: JSON schemas of the webhook payloads; the payloads the tests
#   build (pull_request, issue_comment) are checked against them.
#
# Fetched once per machine with `npm pack` from the npm registry, pinned by version and by the
# registry's sha512 integrity, and unpacked (only the files the tests read) into the user's
# cache, which every clone on the machine shares. Never committed. Idempotent: a second run
# only checks the stamps. Prints where the files are.
set -euo pipefail

OPENAPI_VERSION="23.0.2"
OPENAPI_INTEGRITY="sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg=="
WEBHOOKS_VERSION="7.6.1"
WEBHOOKS_INTEGRITY="sha512-qW0Bwtb76r4m2WzVhKDyfEeEnt1GEQoRjkCqmq2ZeB0nNVDJ+Z2LBDS9FDPyduuMXf/ZTWiCJp9PFFHgRfBe3A=="

CACHE="${K8SEE_GITHUB_SPECS:-${XDG_CACHE_HOME:-$HOME/.cache}/k8see/github-specs}"
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock 8

say() { printf '  %-16s %s\n' "$1" "$2"; }
die() { printf 'fetch-github-specs: %s\n' "$*" >&2; exit 1; }

# fetch PACKAGE VERSION INTEGRITY DEST FILE...: unpack FILEs (paths inside the tarball's
# package/ folder) of PACKAGE@VERSION into DEST, verified against INTEGRITY.
fetch() {
  local package="$1" version="$2" integrity="$3" dest="$4"
  shift 4
  if [[ -f "$dest/.integrity" && "$(cat "$dest/.integrity")" == "$integrity" ]]; then
    say "${package#@octokit/}" "found $version ($dest)"
    return
  fi
  command -v npm >/dev/null || die "npm is not installed (the polyglot machine has it; apt-get install npm)"
  local tmp started=$SECONDS
  tmp="$(mktemp -d)"
  say "${package#@octokit/}" "fetching $package@$version with npm pack ..."
  (cd "$tmp" && npm pack --silent "$package@$version" >"$tmp/pack.log" 2>&1) ||
    { cat "$tmp/pack.log" >&2; rm -rf "$tmp"; die "npm pack $package@$version failed"; }
  local tgz
  tgz="$(ls "$tmp"/*.tgz)"
  local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  [[ "$got" == "$integrity" ]] || { rm -rf "$tmp"; die "integrity mismatch for $package@$version: expected $integrity, got $got"; }
  local members=()
  for file in "$@"; do members+=("package/$file"); done
  tar -xzf "$tgz" -C "$tmp" "${members[@]}"
  rm -rf "$dest.new" && mkdir -p "$dest.new"
  for file in "$@"; do install -m 0644 "$tmp/package/$file" "$dest.new/$(basename "$file")"; done
  echo "$integrity" >"$dest.new/.integrity"
  rm -rf "$dest" && mv "$dest.new" "$dest"
  rm -rf "$tmp"
  say "${package#@octokit/}" "installed $version in $((SECONDS - started)) s ($dest)"
}

fetch @octokit/openapi "$OPENAPI_VERSION" "$OPENAPI_INTEGRITY" \
  "$CACHE/openapi-$OPENAPI_VERSION" generated/api.github.com.json
fetch @octokit/webhooks-schemas "$WEBHOOKS_VERSION" "$WEBHOOKS_INTEGRITY" \
  "$CACHE/webhooks-schemas-$WEBHOOKS_VERSION" schema.json
