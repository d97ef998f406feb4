#!/usr/bin/env bash
# Builds the `doorstep` binary the tests built (a no-op build when it is up to date) and prints
# its absolute path, for the scripts that drive it from outside (api-fuzz, browser, epcis).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked -p doorstep-dispatch --bin doorstep >&2
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
echo "$target_dir/debug/doorstep"
