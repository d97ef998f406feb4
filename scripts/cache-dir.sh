#!/usr/bin/env bash
# Prints the folder where the test scripts keep what they install once (schemathesis' virtualenv,
# playwright-core): /var/cache/doorstep (or $XDG_CACHE_HOME/doorstep) when writable, else
# ~/.cache/doorstep. Creates it.
set -euo pipefail
cache="${XDG_CACHE_HOME:-/var/cache}/doorstep"
if ! { mkdir -p "$cache" && [ -w "$cache" ]; } 2>/dev/null; then
  cache="$HOME/.cache/doorstep"
  mkdir -p "$cache"
fi
echo "$cache"
