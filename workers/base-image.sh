#!/usr/bin/env bash
# A Debian bookworm base image made from Debian's own mirror (`make worker-base`), for hosts
# that reach deb.debian.org but no image registry. Needs root (debootstrap, buildah mount).
#
#   BASE_IMAGE  the tag to create  (default localhost/k8see-base:bookworm)
#   MIRROR      the Debian mirror  (default http://deb.debian.org/debian)
#   PLATFORM    linux/amd64, linux/arm64 or both, comma-separated (default: the host's);
#               several make BASE_IMAGE a manifest list, which `make worker-image` with the
#               same PLATFORM builds on (a foreign one's packages are configured under
#               qemu-user: scripts/binfmt.sh)
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/k8see-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || {
    echo "base-image: debootstrap is missing (apt-get install debootstrap)." >&2
    exit 3
}

HOST_ARCH=$(dpkg --print-architecture)
PLATFORM=${PLATFORM:-linux/$HOST_ARCH}

container=""
trap '[ -z "$container" ] || buildah rm "$container" >/dev/null' EXIT

base() {  # arch tag
    local arch="$1" root
    container=$(buildah from scratch)
    root=$(buildah mount "$container")
    echo "base-image: debootstrap bookworm for linux/$arch"
    debootstrap --variant=minbase --arch="$arch" bookworm "$root" "$MIRROR"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
    buildah umount "$container" >/dev/null
    buildah config --os linux --arch "$arch" \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash "$container"
    buildah commit --quiet "$container" "$2" >/dev/null
    buildah rm "$container" >/dev/null
    container=""
}

# shellcheck source=workers/platforms.sh
source "$(dirname "$0")/platforms.sh"
platforms_to_archs base-image

if [ "${#archs[@]}" -eq 1 ]; then
    base "${archs[0]}" "$BASE_IMAGE"
else
    buildah manifest rm "$BASE_IMAGE" >/dev/null 2>&1 || true
    buildah manifest create "$BASE_IMAGE" >/dev/null
    for arch in "${archs[@]}"; do
        base "$arch" "$BASE_IMAGE-$arch"
        buildah manifest add --os linux --arch "$arch" "$BASE_IMAGE" \
            "containers-storage:$BASE_IMAGE-$arch" >/dev/null
    done
fi
echo "base-image: $BASE_IMAGE (${PLATFORM})"
