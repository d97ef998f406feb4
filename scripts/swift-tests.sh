#!/usr/bin/env bash
# Swift package tests (ios/) on this host: builds libdoorstep_ffi with the test fixtures,
# generates the Swift bindings (ios/prepare-host.sh), then `swift build --build-tests` and
# `swift test` in Swift 6 language mode.
#
# Where the toolchain comes from:
#   - a native `swift` on PATH (a Mac, a Swift image) is used as it is;
#   - otherwise, as root on Debian, Swift 6.0.3 from Debian's trixie suite in a debootstrap chroot,
#     built once and cached under /var/cache/doorstep (keyed by $stamp below; ~3.3 GB, ~2 min);
#   - otherwise it fails and says why (set DOORSTEP_SKIP_SWIFT=1 to skip on purpose).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if [ "${DOORSTEP_SKIP_SWIFT:-}" = 1 ]; then
  echo "Swift tests SKIPPED (DOORSTEP_SKIP_SWIFT=1)"
  exit 0
fi

bash "$repo/ios/prepare-host.sh" >/dev/null
swift_args=(-Xswiftc -warnings-as-errors)

if command -v swift >/dev/null; then
  cd "$repo/ios"
  swift build --build-tests "${swift_args[@]}"
  exec swift test --skip-build
fi

# Bump the stamp to rebuild the cached chroot (a new suite or package list).
stamp="trixie-swiftlang-6.0.3-1"
mirror="${DOORSTEP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="/var/cache/doorstep"
root="$cache/swift-$stamp"

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "no swift on PATH, and installing one needs root on Debian (or set DOORSTEP_SKIP_SWIFT=1)" >&2
  exit 1
fi

if [ ! -e "$root/.ready" ]; then
  echo "setting up Swift in a Debian trixie chroot at $root (once; cached)"
  command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  mkdir -p "$cache"
  rm -rf "$root.partial"
  debootstrap --variant=minbase trixie "$root.partial" "$mirror" >/dev/null
  mount -t proc proc "$root.partial/proc"
  trap 'umount "$root.partial/proc" 2>/dev/null || true' EXIT
  chroot "$root.partial" /usr/bin/env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends swiftlang libc6-dev libstdc++-14-dev >/dev/null
  chroot "$root.partial" apt-get clean
  umount "$root.partial/proc"
  trap - EXIT
  touch "$root.partial/.ready"
  # Other runs only ever see a complete chroot.
  mv "$root.partial" "$root"
fi

# The repository appears at the same path inside the chroot, so the package's absolute paths
# (the host library's rpath) hold on both sides.
mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" 2>/dev/null || umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT
mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mkdir -p "$root/dev/shm" "$root$repo"
mount --bind /dev/shm "$root/dev/shm" && mounted+=("$root/dev/shm")
mount --bind "$repo" "$root$repo" && mounted+=("$root$repo")

in_chroot() {
  chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 bash -c "cd '$repo/ios' && $*"
}
in_chroot swift --version | head -1
in_chroot swift build --build-tests "${swift_args[*]}"
in_chroot swift test --skip-build
