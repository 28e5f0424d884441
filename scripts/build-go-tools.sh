#!/usr/bin/env bash
# Build the Go tools of the local cluster from their official modules, at the versions pinned
# in tools/go/<name>/go.mod (with go.sum), and link them into .tools/bin.
#
#   scripts/build-go-tools.sh [--into DIR] [NAME ...]     default: every tool below
#
# --into DIR copies the built binaries into DIR as well (workers/build-image.sh stages the
# worker image's tools this way, for each platform it builds).
#
# Each tool is built once per machine: the binaries go to a folder of the user's cache named by
# tool, version, platform and a hash of the build inputs (go.mod, go.sum, flags), which every
# clone on the machine shares, as it shares Go's own module and build caches. A second
# bootstrap, in this clone or a fresh one, only checks that folder. GOARCH=arm64 builds the
# same binaries for arm64 (for the worker image); they are cached and copied --into, never
# linked into .tools/bin.
#
# The first build of kubernetes is long (about 10 minutes on 2 cores); progress is printed as
# packages compile.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.tools/bin"
CACHE="${K8SEE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8see/go-tools}"
GOOS="$(go env GOOS)"
GOARCH="${GOARCH:-$(go env GOARCH)}"
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$BIN" "$CACHE"

KUBE_VERSION=v1.34.4
kube_ldflags() {
  local flags="-s -w" pkg minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}
module_dir() {  # tool -> its folder under tools/go (kubectl alone is built from kubernetes's)
  case "$1" in
    kubectl) echo "$ROOT/tools/go/kubernetes" ;;
    *) echo "$ROOT/tools/go/$1" ;;
  esac
}
module_version() {  # tool module
  (cd "$(module_dir "$1")" && go list -m -f '{{.Version}}' "$2")
}

# name | version | binaries (out-name=package ...) | ldflags | extra environment (optional)
spec() {
  case "$1" in
    kubernetes)
      echo "$KUBE_VERSION"
      echo "kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver" \
        "kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager" \
        "kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler" \
        "kubelet=k8s.io/kubernetes/cmd/kubelet" \
        "kubectl=k8s.io/kubernetes/cmd/kubectl"
      kube_ldflags
      echo
      ;;
    kubectl)
      # kubectl alone, for the worker image of another platform (no control plane there).
      echo "$KUBE_VERSION"
      echo "kubectl=k8s.io/kubernetes/cmd/kubectl"
      kube_ldflags
      echo
      ;;
    etcd)
      module_version etcd go.etcd.io/etcd/server/v3
      echo "etcd=go.etcd.io/etcd/server/v3"
      echo "-s -w"
      echo
      ;;
    helm)
      local helm_version
      helm_version="$(module_version helm helm.sh/helm/v3)"
      echo "$helm_version"
      echo "helm=helm.sh/helm/v3/cmd/helm"
      # As helm's own Makefile: the Kubernetes version it assumes offline (helm template,
      # lint) is that of the client-go it is built with.
      local minor
      minor="$(module_version helm k8s.io/client-go | cut -d. -f2)"
      echo "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1" \
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor" \
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1" \
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor"
      echo
      ;;
    trivy)
      local trivy_version
      trivy_version="$(module_version trivy github.com/aquasecurity/trivy)"
      echo "$trivy_version"
      echo "trivy=github.com/aquasecurity/trivy/cmd/trivy"
      echo "-s -w -X github.com/aquasecurity/trivy/pkg/version/app.ver=${trivy_version#v}"
      # As Trivy's goreleaser.yml: its JSON code uses encoding/json/v2.
      echo "GOEXPERIMENT=jsonv2"
      ;;
    trivydb)
      # Ours: writes the tests' vulnerability DB with trivy-db at the version Trivy reads.
      module_version trivydb github.com/aquasecurity/trivy-db | sed 's/^v0.0.0-[0-9]*-/trivy-db-/'
      echo "trivydb=k8see.dev/tools/trivydb"
      echo "-s -w"
      echo
      ;;
    helm-docs)
      local docs_version
      docs_version="$(module_version helm-docs github.com/norwoodj/helm-docs)"
      echo "$docs_version"
      echo "helm-docs=github.com/norwoodj/helm-docs/cmd/helm-docs"
      echo "-s -w -X main.version=$docs_version"
      echo
      ;;
    pause | testapp)
      echo "v1"
      echo "$1=k8see.dev/tools/$1"
      echo "-s -w"
      echo
      ;;
    *) echo "build-go-tools: unknown tool $1" >&2; exit 2 ;;
  esac
}

build() {  # name
  local name="$1" module version binaries ldflags extra_env key dir
  module="$(module_dir "$name")"
  { read -r version; read -r binaries; read -r ldflags; read -r extra_env || true; } \
    < <(spec "$name")
  key="$({ cat "$module"/go.* "$module"/*.go 2>/dev/null || true
    echo "$ldflags${extra_env:+ $extra_env} $(go env GOVERSION)"; } | sha256sum | cut -c1-12)"
  dir="$CACHE/$name-$version-$GOOS-$GOARCH-$key"
  # Clones share the cache: one build per tool at a time, the others wait and then reuse it.
  exec 8>"$dir.lock"
  if ! flock -n 8; then
    printf '  %-16s waiting for another build of %s %s (%s)\n' "$name" "$name" "$version" "$dir"
    flock 8
  fi
  if [[ ! -f "$dir/.complete" ]]; then
    local pkgs=() out tmp started total log
    rm -rf "$dir".tmp.*  # left by an interrupted build (we hold the lock)
    for pair in $binaries; do pkgs+=("${pair#*=}"); done
    tmp="$dir.tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    started=$SECONDS
    log="$tmp/build.log"
    total="$(cd "$module" && env $extra_env go list -deps "${pkgs[@]}" 2>/dev/null | grep -c . ||
      echo '?')"
    printf '  %-16s building %s %s from its Go module (%s packages; first time only)\n' \
      "$name" "$name" "$version" "$total"
    for pair in $binaries; do
      out="${pair%%=*}"
      # -v names each package as it compiles: count them for a progress line every 30 s.
      (cd "$module" && env $extra_env go build -v -trimpath -ldflags "$ldflags" -o "$tmp/$out" \
        "${pair#*=}") 2>&1 |
        {
          n=0 last=$SECONDS
          while IFS= read -r line; do
            n=$((n + 1))
            printf '%s\n' "$line" >>"$log"
            if ((SECONDS - last >= 30)); then
              last=$SECONDS
              printf '  %-16s %s: %d/%s packages compiled, %d s\n' "$name" "$out" "$n" "$total" \
                "$((SECONDS - started))"
            fi
          done
        }
      [[ "${PIPESTATUS[0]}" == 0 ]] ||
        { tail -30 "$log" >&2; echo "build-go-tools: building $out failed" >&2; exit 1; }
    done
    printf '%s\n' "$version" >"$tmp/.version"
    touch "$tmp/.complete"
    rm -rf "$dir" && mv "$tmp" "$dir"
    printf '  %-16s built in %d s (%s)\n' "$name" "$((SECONDS - started))" "$dir"
  fi
  exec 8>&-
  for pair in $binaries; do
    out="${pair%%=*}"
    if [[ "$GOARCH" == "$(go env GOHOSTARCH)" ]]; then
      ln -sfn "$dir/$out" "$BIN/$out"
    fi
    if [[ -n "$INTO" ]]; then
      install -m 0755 "$dir/$out" "$INTO/$out"
    fi
  done
}

INTO=""
if [[ "${1:-}" == "--into" ]]; then
  [[ -n "${2:-}" ]] || { echo "build-go-tools: --into needs a folder" >&2; exit 2; }
  INTO="$2"
  shift 2
  mkdir -p "$INTO"
fi
names=("$@")
((${#names[@]})) || names=(pause testapp etcd helm helm-docs trivy trivydb kubernetes)
for name in "${names[@]}"; do build "$name"; done
