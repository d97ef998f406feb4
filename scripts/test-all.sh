#!/usr/bin/env bash
# Runs every test of the project:
#   1. the Rust workspace (unit, integration, property, crash, FFI and HTTP tests), with dispatch
#      on SQLite; then the HTTP tests again with dispatch on PostgreSQL (a private server that
#      scripts/postgres.sh installs and starts), several nodes raced among them;
#   2. the dispatch API fuzzed against its OpenAPI document for a minute (scripts/api-fuzz.sh:
#      schemathesis; no 5xx, every answer as documented);
#   2a. the customer's page and the operator's console in a real browser (scripts/browser-tests.sh:
#      Debian's Chromium driven by playwright-core, QR codes decoded by zbarimg);
#   2b. the EPCIS export's event hashes against GS1's reference implementation
#      (scripts/epcis-tests.sh: epcis-event-hash-generator from PyPI);
#   2c. every benchmark once, in criterion's test mode (a benchmark that no longer runs fails here);
#   3. the Rust tests again under libfaketime at instants years apart (no test depends on the day
#      or hour it runs);
#   4. the Kotlin bindings on the host JVM (JUnit through Maven), and the Android module under
#      Robolectric (android-all and AndroidX from Maven Central);
#   5. the Swift package (XCTest, Swift 6), with a toolchain set up by scripts/swift-tests.sh;
#   6. the mobile library's size against its budget (scripts/measure-size.sh).
# Every step runs even when an earlier one failed (and cargo runs with --no-fail-fast), so one
# failure never hides another; the script fails if any step did.
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

failed=()
step() {
  echo "==> $*"
  "$@" || failed+=("$*")
}

step cargo test --workspace --locked --no-fail-fast
postgres_tests() (
  local exports
  exports=$(bash scripts/postgres.sh start) || return 1
  eval "$exports"
  trap 'eval "$DOORSTEP_TEST_POSTGRES_STOP"' EXIT
  DOORSTEP_TEST_POSTGRES="$DOORSTEP_TEST_POSTGRES" DOORSTEP_TEST_POSTGRES_DATA="$DOORSTEP_TEST_POSTGRES_DATA" \
    cargo test --workspace --locked --no-fail-fast --test 'http_*'
)
step postgres_tests
step bash scripts/api-fuzz.sh 60
step bash scripts/browser-tests.sh
step bash scripts/epcis-tests.sh
step cargo test --workspace --benches --locked --no-fail-fast
step bash scripts/test-any-day.sh
step bash scripts/kotlin-host-tests.sh
step bash scripts/android-robolectric-tests.sh
step bash scripts/swift-tests.sh
step bash scripts/measure-size.sh

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
