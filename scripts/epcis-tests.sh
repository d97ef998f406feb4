#!/usr/bin/env bash
# The EPCIS 2.0 export against GS1's reference implementation of the CBV 2.0 event hash (PyPI
# `epcis-event-hash-generator`): a demo day (hand-overs with a code, a QR token and a delegate's
# code, failed attempts, lock-outs, reversals; parcels named by SSCC digits, SSCC URNs and
# doorstep's own URN) is exported through GET /v1/epcis/events, and every eventID must equal the
# hash the reference computes for that event (tests/epcis/check_event_ids.py).
#
#   bash scripts/epcis-tests.sh        # uses target/debug/doorstep (built by the tests)
#
# The reference is installed once into /var/cache/doorstep (or $XDG_CACHE_HOME) in a virtualenv.
# It reads the EPCIS context from its own copy: nothing is fetched while it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(bash scripts/doorstep-bin.sh)
version=1.9.3
cache=$(bash scripts/cache-dir.sh)
venv="$cache/epcis-event-hash-generator-$version"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import epcis_event_hash_generator' 2>/dev/null; then
  echo "installing epcis-event-hash-generator $version into $venv (once)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "epcis-event-hash-generator==$version"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" demo --parcels 120 --routes 3 --json --epcis-out "$work/day.jsonld" >"$work/demo.json"
"$venv/bin/python" tests/epcis/check_event_ids.py "$work/day.jsonld" 100
