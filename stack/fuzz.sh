#!/usr/bin/env bash
# Fuzzing: builds the targets in fuzz/ with cargo fuzz (libFuzzer, nightly
# Rust) and runs each for FUZZ_SECONDS (default 45) from its seeds in
# fuzz/seeds/ (real SDK payloads: `make fuzz-seeds` writes them). Fails on
# the first crash, panic, timeout or memory blow-up, leaving the input in
# fuzz/artifacts/<target>/ and printing how to replay it.
#
# Built without a sanitizer (`-s none`): the code is safe Rust (unsafe is
# forbidden), so AddressSanitizer would find nothing more and halve the
# executions; panics, overflow (debug assertions are on), hangs and memory
# are what is looked for. What the runs find is kept in
# .stack/fuzz-corpus/<target> for the next run; the seeds stay as committed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${FUZZ_SECONDS:-45}
CORPUS=${CYCLOPS_STACK_DIR:-$ROOT/.stack}/fuzz-corpus
CARGO_FUZZ_VERSION=0.13.2

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "[fuzz] ERROR: the nightly toolchain is missing (cargo fuzz needs it): rustup toolchain install nightly --profile minimal" >&2
  exit 1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "[fuzz] installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cd "$ROOT/fuzz"
cargo +nightly fuzz build -s none
targets=$(cargo +nightly fuzz list)
for target in $targets; do
  mkdir -p "$CORPUS/$target"
  echo "[fuzz] $target: ${SECONDS_EACH} s from $(ls "seeds/$target" | wc -l) seeds and $(ls "$CORPUS/$target" | wc -l) inputs kept"
  # Output: libFuzzer's final statistics, and everything when it fails.
  log=$(mktemp)
  if ! cargo +nightly fuzz run -s none "$target" "$CORPUS/$target" "seeds/$target" -- \
      -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "[fuzz] FAILED: $target (the input is in fuzz/artifacts/$target/; replay it with: cd fuzz && cargo +nightly fuzz run -s none $target <file>)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$log" | sed "s/^/[fuzz] $target: /" || true
  grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | sed "s/^/[fuzz] $target: /" || true
  rm -f "$log"
done
echo "[fuzz] every target ran ${SECONDS_EACH} s without a failure"
