#!/usr/bin/env bash
# Installs what the tests need beyond Rust, if it is missing: a JDK (17+) and Maven for the Kotlin
# host tests, libfaketime for the any-day test run, PostgreSQL (its programs; scripts/postgres.sh
# starts a private server for the tests) and psql, and the rustfmt/clippy components. Maven fetches its own dependencies from Maven
# Central on first use. Safe to run repeatedly.
set -euo pipefail

missing=()
command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v faketime >/dev/null || missing+=(faketime)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "please install: ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
