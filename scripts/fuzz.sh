#!/usr/bin/env bash
# Fuzzes every parser that takes outside bytes (tests/src/fuzz.rs) with libFuzzer, on stable Rust
# (coverage by LLVM's sanitizer-coverage pass; no sanitizer: the code is safe Rust, and a panic,
# an abort, a stack overflow, a timeout or running out of memory is what a finding is).
#
#   bash scripts/fuzz.sh [MINUTES] [TARGET...]   # default: 2 minutes per target, every target
#   bash scripts/fuzz.sh 0                        # each target over its corpus once (a smoke test)
#
# Seeds: tests/fuzz/corpus/<target>/ (real messages of a day). What a run learns goes to
# target/fuzz/corpus/<target>/; a finding to target/fuzz/findings/<target>/, and the run fails.
# Copy a finding into tests/fuzz/findings/<target>/ with its fix: every test run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-2}"
shift || true
out="$PWD/target/fuzz"
export CARGO_TARGET_DIR="$out/build"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing"
# An explicit --target keeps the instrumentation out of build scripts and proc-macros.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --locked --release --target "$host" -p doorstep-tests --features fuzzing --bin doorstep-fuzz
bin="$CARGO_TARGET_DIR/$host/release/doorstep-fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls tests/fuzz/corpus)
fi
found=()
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus/$t" "$out/findings/$t"
  echo "==> $t for $minutes min"
  # -timeout: one input may take 10 s (a device target commits to SQLite); -rss_limit_mb: 2 GiB.
  if [ "$minutes" -gt 0 ]; then budget=(-max_total_time=$((minutes * 60))); else budget=(-runs=0); fi
  if ! DOORSTEP_FUZZ_TARGET="$t" "$bin" "$out/corpus/$t" "tests/fuzz/corpus/$t" \
      "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -artifact_prefix="$out/findings/$t/" -print_final_stats=1 2>"$out/$t.log"; then
    found+=("$t")
  fi
  grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" "$out/$t.log" || true
done
if [ ${#found[@]} -gt 0 ]; then
  printf 'FINDING in %s (see %s/findings/)\n' "${found[@]}" "$out" >&2
  exit 1
fi
echo "no findings"
