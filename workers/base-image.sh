#!/usr/bin/env bash
# A Debian bookworm base image made from Debian's own mirror (`make worker-base`), for hosts
# that reach deb.debian.org but no image registry. Needs root (debootstrap, buildah mount).
#
#   BASE_IMAGE  the tag to create  (default localhost/k8see-base:bookworm)
#   MIRROR      the Debian mirror  (default http://deb.debian.org/debian)
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/k8see-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
command -v debootstrap >/dev/null || {
    echo "base-image: debootstrap is missing (apt-get install debootstrap)." >&2
    exit 3
}

container=$(buildah from scratch)
trap 'buildah rm "$container" >/dev/null' EXIT
root=$(buildah mount "$container")
debootstrap --variant=minbase bookworm "$root" "$MIRROR"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
buildah umount "$container" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash "$container"
buildah commit --quiet "$container" "$BASE_IMAGE"
echo "base-image: $BASE_IMAGE"
