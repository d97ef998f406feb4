#!/usr/bin/env bash
# Generates the Kotlin and Swift sources from a built doorstep-ffi library (its embedded UniFFI
# metadata), with the top-level uniffi.toml.
#
#   scripts/generate-bindings.sh [--android] [LIBRARY] [OUT_DIR]
#
# LIBRARY defaults to target/debug/libdoorstep_ffi.so (.dylib on macOS); OUT_DIR to target/bindings.
# Output: OUT_DIR/kotlin/app/doorstep/ffi/*.kt and OUT_DIR/swift/{DoorstepFFI.swift,*.h,*.modulemap}.
# --android turns on UniFFI's Android-specific Kotlin (android.system cleaner); bindings for the
# host JVM tests must be generated without it. The library must not be fully stripped: the
# metadata lives in its symbols.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

config=uniffi.toml
if [ "${1:-}" = "--android" ]; then
  shift
  config=$(mktemp --suffix=.toml)
  trap 'rm -f "$config"' EXIT
  sed 's/^\[crates\.doorstep_ffi\.bindings\.kotlin\]$/&\nandroid = true/' uniffi.toml > "$config"
fi

ext=so
[ "$(uname -s)" = Darwin ] && ext=dylib
lib="${1:-target/debug/libdoorstep_ffi.$ext}"
out="${2:-target/bindings}"
[ -f "$lib" ] || { echo "no library at $lib: build it first (cargo build -p doorstep-ffi)" >&2; exit 1; }

cargo build --quiet --locked -p uniffi-bindgen
bindgen=target/debug/uniffi-bindgen
rm -rf "$out/kotlin" "$out/swift"
"$bindgen" generate --library "$lib" --language kotlin --out-dir "$out/kotlin" --config "$config" --no-format
"$bindgen" generate --library "$lib" --language swift --out-dir "$out/swift" --config "$config" --no-format
echo "bindings written to $out/kotlin and $out/swift"
