#!/usr/bin/env bash
# Register qemu-user-static for the foreign architecture with the kernel's binfmt_misc.
#
# A multi-arch build runs the Dockerfile's RUN steps of the foreign platform (arm64 on an
# amd64 host, and the reverse) through qemu. The kernel finds qemu through binfmt_misc; in a
# container nothing registers it, so we mount binfmt_misc when needed and write the entry the
# qemu-user-static package ships under /usr/lib/binfmt.d into its `register` file. The entry
# has the F flag, so the interpreter is opened now and also works inside buildah's chroot.
# Failure is tolerated (prints why): only foreign-architecture RUN steps need this.
set -uo pipefail

MNT=/proc/sys/fs/binfmt_misc
case "$(uname -m)" in
  x86_64) FOREIGN=aarch64 ;;
  aarch64) FOREIGN=x86_64 ;;
  *) printf '  %-16s %s\n' binfmt "skipped: host $(uname -m) is neither x86_64 nor aarch64"; exit 0 ;;
esac
ENTRY="qemu-$FOREIGN"
CONF="/usr/lib/binfmt.d/$ENTRY.conf"

fail() {
  printf '  %-16s %s\n' binfmt "NOT registered: $*; foreign-architecture RUN steps will fail" >&2
  exit 1
}

if [[ -f "$MNT/$ENTRY" ]] && grep -qx enabled "$MNT/$ENTRY"; then
  printf '  %-16s %s\n' binfmt "found $ENTRY ($(sed -n 's/^interpreter //p' "$MNT/$ENTRY"))"
  exit 0
fi
[[ -f "$CONF" ]] || fail "$CONF is missing (apt-get install qemu-user-static)"
if [[ ! -w "$MNT/register" ]]; then
  mount -t binfmt_misc binfmt_misc "$MNT" 2>/dev/null ||
    fail "cannot mount binfmt_misc at $MNT (needs root and a privileged container)"
fi
if [[ ! -f "$MNT/$ENTRY" ]]; then
  # The .conf may hold comment lines; the kernel takes exactly one ':name:type:...' line.
  grep -m1 '^:' "$CONF" >"$MNT/register" 2>/dev/null || fail "the kernel refused $CONF"
fi
echo 1 >"$MNT/$ENTRY" 2>/dev/null || true
grep -qx enabled "$MNT/$ENTRY" 2>/dev/null || fail "$ENTRY is registered but disabled"
printf '  %-16s %s\n' binfmt "registered $ENTRY ($(sed -n 's/^interpreter //p' "$MNT/$ENTRY"))"
