#!/usr/bin/env bash
# Build the local base-image mirror: a multi-arch `busybox` (linux/amd64 + linux/arm64).
#
# Docker Hub is not reachable here, so `FROM busybox` in a Dockerfile would fail. We build the
# image from Debian's busybox-static packages for both architectures with buildah (from
# scratch, copy, config, commit per arch, one manifest list) and save it as an OCI layout in
# OUT/busybox. Tests and the demo push that layout into the registry they start
# (k8see.integrations.registry.push_mirror) and point builds at it through a generated
# registries.conf. Usage: build-mirror.sh OUT_DIR. Does nothing when OUT/mirror.json exists.
set -euo pipefail

OUT="${1:?usage: build-mirror.sh OUT_DIR}"
say() { printf '  %-16s %s\n' "$1" "$2"; }
SHOW="${OUT#"$PWD/"}"

if [[ -f "$OUT/mirror.json" && -f "$OUT/busybox/index.json" ]]; then
  say mirror "found busybox $(sed -n 's/.*"version": "\([^"]*\)".*/\1/p' "$OUT/mirror.json") (linux/amd64, linux/arm64) in $SHOW/busybox"
  exit 0
fi

ARCHES=(amd64 arm64)
host="$(dpkg --print-architecture)"
for arch in "${ARCHES[@]}"; do
  if [[ "$arch" != "$host" ]] && ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
    ADDED_ARCH=1
  fi
done
if [[ -n "${ADDED_ARCH:-}" ]] || ! apt-cache show "busybox-static:${ARCHES[1]}" >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
fi

work="$(mktemp -d)"
trap 'buildah "${B[@]}" rm -a >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
cd "$work"
# As root apt would try to drop to the _apt user, who cannot write into our private dir.
apt-get download -qq -o APT::Sandbox::User=root \
  "${ARCHES[@]/#/busybox-static:}" >/dev/null

# A private buildah store, thrown away afterwards: nothing leaks into the workers' caches.
B=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
version=""
for arch in "${ARCHES[@]}"; do
  deb="$(ls busybox-static_*_"$arch".deb)"
  full="$(dpkg-deb -f "$deb" Version)"
  version="${full#*:}" && version="${version%%-*}"
  rootfs="$work/rootfs-$arch"
  dpkg-deb -x "$deb" "$rootfs"
  rm -rf "$rootfs/usr/share"
  mkdir -p "$rootfs"/{etc,tmp,root,home,var/www,usr/bin,usr/sbin,sbin}
  chmod 1777 "$rootfs/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' \
    >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
done

# The applet list is the same in both packages (one source version); the host's busybox
# runs natively, so ask it, and link every applet (sh, httpd, wget, ...) to /bin/busybox.
applets="$("$work/rootfs-$host/bin/busybox" --list-full)"
for arch in "${ARCHES[@]}"; do
  rootfs="$work/rootfs-$arch"
  while read -r path; do
    [[ -z "$path" || "$path" == "bin/busybox" || -e "$rootfs/$path" ]] && continue
    mkdir -p "$rootfs/$(dirname "$path")"
    ln -s /bin/busybox "$rootfs/$path"
  done <<<"$applets"
done

list="localhost/k8see-mirror/busybox:$version"
buildah "${B[@]}" manifest create "$list" >/dev/null
for arch in "${ARCHES[@]}"; do
  ctr="$(buildah "${B[@]}" from --arch "$arch" --os linux scratch)"
  buildah "${B[@]}" copy "$ctr" "$work/rootfs-$arch/" / >/dev/null
  buildah "${B[@]}" config --arch "$arch" --os linux --cmd sh \
    --env PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    --label "org.opencontainers.image.description=busybox $version from Debian busybox-static" \
    --label "org.opencontainers.image.version=$version" "$ctr"
  buildah "${B[@]}" commit -q --format oci --timestamp 0 "$ctr" "busybox-$arch" >/dev/null
  buildah "${B[@]}" manifest add --arch "$arch" --os linux "$list" \
    "containers-storage:localhost/busybox-$arch" >/dev/null
done

rm -rf "$OUT/busybox" && mkdir -p "$OUT"
buildah "${B[@]}" manifest push -q --all --format oci "$list" "oci:$OUT/busybox" >/dev/null
cat >"$OUT/mirror.json" <<EOF
{
  "images": [
    {
      "layout": "busybox",
      "repository": "library/busybox",
      "version": "$version",
      "tags": ["latest", "$version", "${version%.*}"],
      "platforms": ["linux/amd64", "linux/arm64"]
    }
  ]
}
EOF
say mirror "built busybox $version (linux/amd64, linux/arm64) in $SHOW/busybox"
