#!/usr/bin/env bash
# Builds the mobile library for the host (x86_64 Linux) with the `mobile` profile and reports the
# size of a fully stripped copy against the 1.8 MB budget. The unstripped library (debuginfo only
# stripped) stays in target/mobile/ for binding generation: its symbols carry the UniFFI metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cargo build --quiet --locked -p doorstep-ffi --profile mobile
lib=target/mobile/libdoorstep_ffi.so
stripped=target/mobile/libdoorstep_ffi.stripped.so
cp "$lib" "$stripped"
strip "$stripped"
bytes=$(stat -c %s "$stripped")
budget=1800000
printf 'libdoorstep_ffi.so (x86_64, mobile profile): %d bytes unstripped-for-bindgen, %d bytes stripped (budget %d)\n' \
  "$(stat -c %s "$lib")" "$bytes" "$budget"
[ "$bytes" -le "$budget" ] || { echo "over budget by $((bytes - budget)) bytes" >&2; exit 1; }
