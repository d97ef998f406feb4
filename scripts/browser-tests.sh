#!/usr/bin/env bash
# The customer's page and the operator's console in a real browser: Debian's Chromium driven by
# playwright-core (npm), QR codes decoded by zbarimg (Debian's zbar-tools), against the doorstep
# binary the tests built. Installs what is missing (as root: apt-get; playwright-core into
# /var/cache/doorstep), then runs tests/browser/e2e.mjs. Screenshots go to target/browser/;
# with --update-docs they also replace docs/screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v zbarimg >/dev/null || missing+=(zbar-tools)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "needs ${missing[*]} (apt-get install ${missing[*]}, as root)" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
version=1.65.1
cache=$(bash scripts/cache-dir.sh)
playwright="$cache/playwright-core-$version"
if [ ! -d "$playwright/node_modules/playwright-core" ]; then
  echo "installing playwright-core $version into $playwright (once; it uses Debian's Chromium, downloads no browser)"
  mkdir -p "$playwright"
  (cd "$playwright" && npm install --silent --no-audit --no-fund "playwright-core@$version")
fi
bin=$(bash scripts/doorstep-bin.sh)
target_dir=$(dirname "$(dirname "$bin")")
DOORSTEP_BIN="$bin" PLAYWRIGHT_DIR="$playwright" CHROMIUM="$(command -v chromium)" \
  SHOTS="$target_dir/browser" node tests/browser/e2e.mjs
if [ "${1:-}" = "--update-docs" ]; then
  mkdir -p docs/screenshots
  cp "$target_dir/browser/customer-page.png" "$target_dir/browser/console.png" docs/screenshots/
  echo "docs/screenshots/ updated"
fi
