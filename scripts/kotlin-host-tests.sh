#!/usr/bin/env bash
# Kotlin host-JVM tests: builds libdoorstep_ffi (debug, with the test fixtures), generates the
# Kotlin bindings from it, and runs the Maven/JUnit tests in android/host-tests on the host JVM.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

command -v mvn >/dev/null || { echo "Maven is required (apt-get install maven)" >&2; exit 1; }
cargo build --quiet --locked -p doorstep-ffi --features fixtures
bash scripts/generate-bindings.sh target/debug/libdoorstep_ffi.so target/bindings >/dev/null
mvn -B -ntp -f android/host-tests/pom.xml test "$@" | grep -vE "^\[INFO\] (Download|---|$)"
