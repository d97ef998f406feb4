#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration, property, crash and FFI
# tests), then the Kotlin bindings on the host JVM (JUnit through Maven).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

cargo test --workspace --locked
bash scripts/kotlin-host-tests.sh
