#!/usr/bin/env bash
# Build the worker image with buildah (`make worker-image`).
#
#   IMAGE       the tag to build        (default localhost/k8see-worker:latest)
#   BASE_IMAGE  a Debian bookworm base  (default docker.io/library/python:3.12-slim-bookworm;
#               `make worker-base` makes localhost/k8see-base:bookworm from deb.debian.org
#               where no image registry is reachable)
#   PLATFORM    linux/amd64, linux/arm64 or both, comma-separated (default: the host's);
#               several make IMAGE a manifest list
#   CA_BUNDLE   a CA bundle for pip behind a TLS-intercepting proxy (a build secret: used by
#               the pip step only, never stored in the image)
#
# helm, kubectl and trivy are staged into workers/bin/<arch>, the one place the Dockerfile takes
# binaries from: for the host's platform from .tools/bin (built by `make bootstrap`) or PATH;
# for another, built for it from the same pinned Go modules (scripts/build-go-tools.sh, cached
# per platform like the host's; the first arm64 Trivy takes a while). Each binary's ELF
# machine is checked against its platform, so an image never carries another platform's tools.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${IMAGE:-localhost/k8see-worker:latest}
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.12-slim-bookworm}

HOST_ARCH=$(go env GOHOSTARCH 2>/dev/null || dpkg --print-architecture)
PLATFORM=${PLATFORM:-linux/$HOST_ARCH}
TOOLS=(helm kubectl trivy)

elf_machine() {  # file -> amd64, arm64 or what it is
    case "$(od -An -tu2 -j18 -N2 "$1" 2>/dev/null | tr -d ' ')" in
        62) echo amd64 ;;
        183) echo arm64 ;;
        *) echo "not a linux/amd64 or linux/arm64 program" ;;
    esac
}

stage_tools() {  # arch
    local arch="$1" dest="$ROOT/workers/bin/$1" tool found
    rm -rf "$dest" && mkdir -p "$dest"
    if [ "$arch" = "$HOST_ARCH" ]; then
        for tool in "${TOOLS[@]}"; do
            found=$(PATH="$ROOT/.tools/bin:$PATH" command -v "$tool" || true)
            if [ -z "$found" ]; then
                echo "build-image: $tool is missing; run \`make bootstrap\` first." >&2
                exit 3
            fi
            install -m 0755 "$found" "$dest/$tool"
        done
    else
        echo "build-image: building ${TOOLS[*]} for linux/$arch from their Go modules"
        GOARCH="$arch" bash "$ROOT/scripts/build-go-tools.sh" --into "$dest" "${TOOLS[@]}"
    fi
    for tool in "${TOOLS[@]}"; do
        if [ "$(elf_machine "$dest/$tool")" != "$arch" ]; then
            echo "build-image: $dest/$tool is $(elf_machine "$dest/$tool"), not linux/$arch." >&2
            exit 3
        fi
    done
}

# Every platform is checked before anything is staged or built.
# shellcheck source=workers/platforms.sh
source "$ROOT/workers/platforms.sh"
platforms_to_archs build-image
rm -rf "$ROOT/workers/bin"
for arch in "${archs[@]}"; do stage_tools "$arch"; done

if ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 \
    && ! buildah pull --quiet "$BASE_IMAGE" >/dev/null; then
    echo "build-image: the base image $BASE_IMAGE cannot be pulled." >&2
    echo "Without a reachable registry: make worker-base, then" >&2
    echo "  make worker-image BASE_IMAGE=localhost/k8see-base:bookworm" >&2
    exit 3
fi

ca=$(mktemp)
trap 'rm -f "$ca"' EXIT
if [ -n "${CA_BUNDLE:-}" ]; then
    cat "$CA_BUNDLE" > "$ca"
fi

# One platform: an image; several: a manifest list, made afresh (buildah adds to a list).
if [ "${#archs[@]}" -gt 1 ]; then
    buildah manifest rm "$IMAGE" >/dev/null 2>&1 || true
    output=(--manifest "$IMAGE")
else
    output=(-t "$IMAGE")
fi

# chroot isolation: RUN steps need no OCI runtime or network namespace on the build host.
# A foreign platform's RUN steps run under qemu-user (scripts/binfmt.sh registers it).
buildah build --layers --isolation "${BUILDAH_ISOLATION:-chroot}" \
    --secret "id=ca-bundle,src=$ca" \
    --platform "$PLATFORM" "${output[@]}" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --ignorefile "$ROOT/workers/Dockerfile.dockerignore" \
    -f "$ROOT/workers/Dockerfile" "$ROOT"
