#!/usr/bin/env bash
# Builds the mobile library for the host (x86_64 Linux) with the `mobile` profile and reports the
# size of a fully stripped copy against the 1.8 MB budget. The unstripped library (debuginfo only
# stripped) stays in target/mobile/ for binding generation: its symbols carry the UniFFI metadata.
#
# Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR: glibc 2.36+), as the Android
# build packs them (`--pack-dyn-relocs`, see android/doorstep/build.gradle.kts): unpacked, the
# ~4,000 pointers into vtables and string tables cost 24 bytes each. The library is then loaded and
# called once, so a build the loader cannot use fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

RUSTFLAGS="-C link-arg=-Wl,-z,pack-relative-relocs" cargo build --quiet --locked -p doorstep-ffi --profile mobile
target="${CARGO_TARGET_DIR:-target}"
lib="$target/mobile/libdoorstep_ffi.so"
stripped="$target/mobile/libdoorstep_ffi.stripped.so"
cp "$lib" "$stripped"
strip "$stripped"
bytes=$(stat -c %s "$stripped")
budget=1800000
printf 'libdoorstep_ffi.so (x86_64, mobile profile): %d bytes unstripped-for-bindgen, %d bytes stripped (budget %d)\n' \
  "$(stat -c %s "$lib")" "$bytes" "$budget"
python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1]).ffi_doorstep_ffi_uniffi_contract_version()' "$stripped" \
  || { echo "the packed library does not load" >&2; exit 1; }
[ "$bytes" -le "$budget" ] || { echo "over budget by $((bytes - budget)) bytes" >&2; exit 1; }
