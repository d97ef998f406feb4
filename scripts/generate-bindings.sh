#!/usr/bin/env bash
# Generates the Kotlin and Swift sources from a built doorstep-ffi library (its embedded UniFFI
# metadata), with the top-level uniffi.toml.
#
#   scripts/generate-bindings.sh [LIBRARY] [OUT_DIR]
#
# LIBRARY defaults to target/debug/libdoorstep_ffi.so (.dylib on macOS); OUT_DIR to target/bindings.
# Output: OUT_DIR/kotlin/app/doorstep/ffi/*.kt and OUT_DIR/swift/{DoorstepFFI.swift,*.h,*.modulemap}.
# The library must not be fully stripped: the metadata lives in its symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

ext=so
[ "$(uname -s)" = Darwin ] && ext=dylib
lib="${1:-target/debug/libdoorstep_ffi.$ext}"
out="${2:-target/bindings}"
[ -f "$lib" ] || { echo "no library at $lib: build it first (cargo build -p doorstep-ffi)" >&2; exit 1; }

cargo build --quiet -p uniffi-bindgen
bindgen=target/debug/uniffi-bindgen
rm -rf "$out/kotlin" "$out/swift"
"$bindgen" generate --library "$lib" --language kotlin --out-dir "$out/kotlin" --config uniffi.toml --no-format
"$bindgen" generate --library "$lib" --language swift --out-dir "$out/swift" --config uniffi.toml --no-format
echo "bindings written to $out/kotlin and $out/swift"
