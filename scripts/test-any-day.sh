#!/usr/bin/env bash
# Runs every Rust test binary of the workspace under libfaketime at instants far apart (Debian's
# `faketime`), to show that no test passes or fails by the date or hour it runs on. Builds nothing
# new: it runs the test binaries `cargo test` already built. Usage:
#   bash scripts/test-any-day.sh ["YYYY-MM-DD hh:mm:ss" ...]     (UTC instants; defaults below)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

command -v faketime >/dev/null || { echo "faketime is required (apt-get install faketime)" >&2; exit 1; }
instants=("$@")
if [ ${#instants[@]} -eq 0 ]; then
  # The day main went red, an early and a late hour, a DST change in Europe, a leap day, the far past
  # and future.
  instants=("2026-11-27 06:20:00" "2026-11-26 23:59:30" "2027-03-28 01:30:00" "2028-02-29 12:00:00"
            "2019-01-01 00:00:30" "2035-12-31 22:00:00")
fi

# The test executables cargo built (unit and integration tests of every crate).
mapfile -t binaries < <(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])')

failed=0
for at in "${instants[@]}"; do
  passed=0
  for bin in "${binaries[@]}"; do
    # Monotonic time stays real (tokio's timers); the wall clock is the faked one.
    if ! out=$(cd "$(dirname "$bin")" && DONT_FAKE_MONOTONIC=1 TZ=UTC faketime "$at" "$bin" 2>&1); then
      echo "FAILED at $at: $bin"
      echo "$out" | grep -E "panicked|FAILED|failures:" | head -20
      failed=1
    fi
    passed=$((passed + $(echo "$out" | grep -oE "[0-9]+ passed" | awk '{s+=$1} END {print s+0}')))
  done
  echo "at $at UTC: $passed tests passed in ${#binaries[@]} binaries"
done
exit $failed
