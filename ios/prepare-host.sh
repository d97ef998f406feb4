#!/usr/bin/env bash
# Prepares `swift test` on a Linux (or macOS) host without an XCFramework: builds the debug library
# with the test fixtures, generates the Swift bindings, and puts the generated Swift file, C header
# and a module map that links libdoorstep_ffi into the package.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cargo build --quiet --locked -p doorstep-ffi --features fixtures
ext=so
[ "$(uname -s)" = Darwin ] && ext=dylib
bash scripts/generate-bindings.sh "target/debug/libdoorstep_ffi.$ext" target/bindings >/dev/null
mkdir -p "$here/Sources/DoorstepFFI" "$here/Sources/doorstep_ffiFFI"
cp target/bindings/swift/DoorstepFFI.swift "$here/Sources/DoorstepFFI/DoorstepFFI.swift"
cp target/bindings/swift/doorstep_ffiFFI.h "$here/Sources/doorstep_ffiFFI/doorstep_ffiFFI.h"
cat > "$here/Sources/doorstep_ffiFFI/module.modulemap" <<'MAP'
module doorstep_ffiFFI {
    header "doorstep_ffiFFI.h"
    link "doorstep_ffi"
    export *
}
MAP
echo "ready: cd ios && swift test"
