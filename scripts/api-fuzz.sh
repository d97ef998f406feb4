#!/usr/bin/env bash
# Property-based fuzzing of the dispatch API against its own OpenAPI document (GET /openapi.json)
# with schemathesis from PyPI: thousands of generated requests, valid and not, on every
# operation. A run fails on any 5xx, any answer whose status, content type or body the document
# does not describe (every error must be the JSON error body), or an operation that works
# without its credentials.
#
#   bash scripts/api-fuzz.sh [SECONDS]     # default 60; uses target/debug/doorstep (built by the tests)
#
# schemathesis is installed once into /var/cache/doorstep (or $XDG_CACHE_HOME) in a virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${1:-60}"
bin=$(bash scripts/doorstep-bin.sh)
version=4.32.5
cache=$(bash scripts/cache-dir.sh)
venv="$cache/schemathesis-$version"
if [ ! -x "$venv/bin/schemathesis" ]; then
  echo "installing schemathesis $version into $venv (once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

state=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  rm -rf "$state"
}
trap cleanup EXIT
# With an operator key, operator routes refuse every caller without it (the fuzzer checks that).
key=$("$bin" operator add --state "$state" --name api-fuzz | grep -o 'dso_[0-9a-f_]*')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Rate limits high enough that the fuzzer reaches the logic behind them.
"$bin" serve --state "$state" --addr "127.0.0.1:$port" \
  --customer-requests-per-minute 1000000 --enrol-requests-per-minute 1000000 \
  --device-requests-per-minute 1000000 --requests-per-device-per-minute 1000000 \
  --full-manifests-per-device-per-minute 1000000 >"$state/serve.log" 2>&1 &
pid=$!

status=0
# From the state folder: schemathesis keeps its own files (.schemathesis/) where it runs.
report="$PWD/target/api-fuzz"
mkdir -p "$report"
cd "$state"
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --wait-for-schema 30 \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,missing_required_header,ignored_auth \
  --header "Authorization: Bearer $key" \
  --max-time "$budget" --workers 2 \
  --report junit --report-dir "$report" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- dispatch's log (5xx details are logged, never answered); the run's report is in $report ---"
  tail -50 "$state/serve.log"
fi
exit "$status"
