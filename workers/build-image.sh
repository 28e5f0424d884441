#!/usr/bin/env bash
# Build the worker image with buildah (`make worker-image`).
#
#   IMAGE       the tag to build        (default localhost/k8see-worker:latest)
#   BASE_IMAGE  a Debian bookworm base  (default docker.io/library/python:3.12-slim-bookworm;
#               `make worker-base` makes localhost/k8see-base:bookworm from deb.debian.org
#               where no image registry is reachable)
#   PLATFORM    e.g. linux/arm64        (default: the host's)
#   CA_BUNDLE   a CA bundle for pip behind a TLS-intercepting proxy (a build secret: used by
#               the pip step only, never stored in the image)
#
# helm, kubectl and trivy are copied from .tools/bin (fetched and checked by `make bootstrap`)
# or PATH into workers/bin, the one place the Dockerfile takes binaries from.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${IMAGE:-localhost/k8see-worker:latest}
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/python:3.12-slim-bookworm}

mkdir -p "$ROOT/workers/bin"
for tool in helm kubectl trivy; do
    found=$(PATH="$ROOT/.tools/bin:$PATH" command -v "$tool" || true)
    if [ -z "$found" ]; then
        echo "build-image: $tool is missing; run \`make bootstrap\` first." >&2
        exit 3
    fi
    install -m 0755 "$found" "$ROOT/workers/bin/$tool"
done

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

# chroot isolation: RUN steps need no OCI runtime or network namespace on the build host.
buildah build --layers --isolation "${BUILDAH_ISOLATION:-chroot}" \
    --secret "id=ca-bundle,src=$ca" \
    ${PLATFORM:+--platform "$PLATFORM"} \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --ignorefile "$ROOT/workers/Dockerfile.dockerignore" \
    -f "$ROOT/workers/Dockerfile" -t "$IMAGE" "$ROOT"
