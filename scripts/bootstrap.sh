#!/usr/bin/env bash
# Install every tool k8see needs, only when it is missing, and say what was found.
#
# Run by `make bootstrap` (and so by `make test`, `make demo`, `make bench`). Works as root on
# a fresh Debian bookworm machine with Go and npm that can reach only the PyPI, Debian, Go module
# and npm registries; no release host is needed. When everything is present it only
# checks stamps and versions, which takes well under two seconds.
#
# Steps: (a) .venv with k8see[worker,dev]; (b) Debian packages; (c) the local cluster's
# binaries, helm, helm-docs, kubectl, trivy and trivydb (the writer of the tests' vulnerability
# DB), built from their Go modules (scripts/build-go-tools.sh); (c2) the operators' CRDs from
# their Go modules (scripts/fetch-operator-crds.sh); (d) promtool, unpacked from Debian's
# prometheus package; (e) binfmt_misc + qemu for foreign-architecture RUN steps; (f) the local
# busybox base-image mirror (an OCI layout under .tools/mirror), see docs/images.md; (g)
# GitHub's OpenAPI description and webhook schemas from npm (scripts/fetch-github-specs.sh,
# cached in ~/.cache/k8see), see docs/sandbox.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
VENV="$ROOT/.venv"
mkdir -p "$BIN" "$STAMPS"

# Several engineers (and `make test` runs) may bootstrap at once: one at a time.
exec 9>"$TOOLS/.bootstrap.lock"
flock 9

# --- pins -----------------------------------------------------------------------------------
# Go tools are pinned by tools/go/*/go.mod and go.sum.
# chromium: the headless browser of the Flower test (tests/e2e/test_operations.py).
# docker-compose: validates docker-compose.yml (tests/test_compose.py).
# redis-sentinel: Redis high availability, started by the Sentinel drill and the soak.
# containerd, runc, containernetworking-plugins, iproute2: the local cluster's node.
# runc, iproute2, iptables: sealed RUN steps (build.network, tests/security).
# redis-sentinel: Redis high availability (tests/drills/test_sentinel_failover.py).
APT_PACKAGES=(git redis-server redis-sentinel buildah qemu-user-static docker-registry docker.io chromium
  docker-compose containerd runc containernetworking-plugins iproute2 iptables)

say() { printf '  %-16s %s\n' "$1" "$2"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
as_root() {
  if [[ $EUID -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
}
apt_install() {
  apt_update_once
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

echo "k8see bootstrap ($ROOT)"

# --- (b) Debian packages ------------------------------------------------------------------
# One dpkg-query for all of them; apt-get runs only when something is missing.
pkg_versions() {
  dpkg-query -W -f='${Package} ${Status} ${Version}\n' "$@" 2>/dev/null |
    awk '$4 == "installed" {print $1, $5}' || true
}
declare -A HAVE=()
while read -r name version; do HAVE[$name]="$version"; done < <(pkg_versions "${APT_PACKAGES[@]}")
missing=()
for pkg in "${APT_PACKAGES[@]}"; do [[ -n "${HAVE[$pkg]:-}" ]] || missing+=("$pkg"); done
if ((${#missing[@]})); then
  if [[ -z "$(command -v apt-get)" ]]; then
    die "apt-get is not available; install ${missing[*]} with your package manager"
  fi
  apt_install "${missing[@]}" || die "apt-get install ${missing[*]} failed (need root or sudo)"
  while read -r name version; do HAVE[$name]="$version"; done < <(pkg_versions "${missing[@]}")
fi
for pkg in "${APT_PACKAGES[@]}"; do
  state="found"
  for m in "${missing[@]+"${missing[@]}"}"; do [[ "$m" == "$pkg" ]] && state="installed"; done
  say "$pkg" "$state ${HAVE[$pkg]:-?}"
done

# --- (a) virtualenv -------------------------------------------------------------------------
VENV_STAMP="$VENV/.k8see-installed"
if [[ ! -x "$VENV/bin/python" ]]; then
  PY="$(command -v python3 || true)"
  [[ -n "$PY" ]] || { apt_install python3 python3-venv; PY=/usr/bin/python3; }
  if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then apt_install python3-venv; fi
  "$PY" -m venv "$VENV"
fi
# k8see and, beside it, k8see-sandbox (sandbox/: the stand-ins the tests and the demo run
# against, which `pip install k8see` never installs), both editable.
if [[ ! -f "$VENV_STAMP" || "$ROOT/pyproject.toml" -nt "$VENV_STAMP" ||
  "$ROOT/sandbox/pyproject.toml" -nt "$VENV_STAMP" ]] ||
  ! "$VENV/bin/python" -c 'import k8see_sandbox' 2>/dev/null; then
  # pip's build-backend warnings are noise here; keep them for when the install fails.
  log="$(mktemp)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[worker,dev]" \
    -e "$ROOT/sandbox" >"$log" 2>&1 ||
    { cat "$log" >&2; die "pip install -e '.[worker,dev]' -e sandbox failed"; }
  rm -f "$log"
  touch "$VENV_STAMP"
  say ".venv" "installed k8see[worker,dev] and k8see-sandbox ($("$VENV/bin/python" -V 2>&1))"
else
  say ".venv" "found ($("$VENV/bin/python" -V 2>&1), up to date with pyproject.toml)"
fi

# --- (c) the local cluster, helm, kubectl and trivy, built from their Go modules -------------
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl (one
# Kubernetes version), helm, trivy, trivydb, and our pause and test-app images' binaries;
# pinned by tools/go/*/go.mod and go.sum, built once per machine into the user's cache and
# linked here.
command -v go >/dev/null || die "go is not installed: the polyglot machine has Go 1.26 (docs/sandbox.md)"
for stale in helm kubectl trivy; do  # the npm-layer and PyPI-wheel binaries of earlier checkouts
  [[ -L "$BIN/$stale" ]] || rm -f "$BIN/$stale" "$STAMPS/$stale"
done
go_started=$SECONDS
bash "$ROOT/scripts/build-go-tools.sh"
for name in etcd kube-apiserver kubelet kubectl helm trivy; do
  case "$name" in
    kubectl) version="$("$BIN/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p')" ;;
    helm) version="$("$BIN/helm" version --short 2>/dev/null)" ;;
    trivy) version="$("$BIN/trivy" --version 2>/dev/null | sed -n 's/^Version: //p')" ;;
    etcd) version="$("$BIN/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: //p')" ;;
    *) version="$("$BIN/$name" --version 2>/dev/null | awk '{print $2}')" ;;
  esac
  say "$name" "found $version (.tools/bin/$name)"
done
((SECONDS - go_started < 5)) || say "go tools" "ready in $((SECONDS - go_started)) s"

# --- (c2) the operators' CRDs, from their Go modules ----------------------------------------
# CloudNativePG's Cluster, MongoDB Community's MongoDBCommunity and the Prometheus operator's
# ServiceMonitor at the versions pinned in tools/operator-crds.txt, cached per machine and
# linked into .tools/crds; the local cluster installs them (sandbox/k8see_sandbox/operators.py).
bash "$ROOT/scripts/fetch-operator-crds.sh"

# --- (d) promtool from Debian's prometheus package --------------------------------------------
# It tests the platform chart's alerting rules (tests/charts/test_alert_rules.py). apt checks
# the download against the signed archive; the package is unpacked, not installed, so no
# Prometheus server is set up or started, and only the promtool binary is kept.
promtool_state="found"
if [[ ! -x "$BIN/promtool" ]]; then
  apt_update_once || true
  tmp="$(mktemp -d)"
  chmod 0755 "$tmp"  # apt's download user must be able to write there
  (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1) ||
    die "apt-get download prometheus failed (for promtool)"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/unpacked"
  install -m 0755 "$tmp/unpacked/usr/bin/promtool" "$BIN/promtool.new"
  mv -f "$BIN/promtool.new" "$BIN/promtool"
  rm -rf "$tmp"
  promtool_state="installed"
fi
say promtool "$promtool_state $("$BIN/promtool" --version 2>&1 | sed -n '1s/^promtool, version \([^ ]*\).*/\1/p') (.tools/bin/promtool)"

# --- (e) binfmt_misc + qemu: foreign-architecture RUN steps ------------------------------------
bash "$ROOT/scripts/binfmt.sh" || true

# --- (f) the local base-image mirror ---------------------------------------------------------
bash "$ROOT/scripts/build-mirror.sh" "$TOOLS/mirror"

# --- (g) GitHub's API description and webhook schemas (npm), for the stand-in's contract tests
bash "$ROOT/scripts/fetch-github-specs.sh"
