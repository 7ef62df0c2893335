#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit and black-box tests (real OpenBao,
# the Azure emulator), then the hvac client tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-tools.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# Tests whose precondition is missing here say so (azure_emulator::testing::skip); listed below.
export SKIP_LOG="$root/target/skipped-tests.txt"
rm -f "$SKIP_LOG"
# Most black-box tests wait on servers and timers, not on the CPU: cargo-nextest runs them four
# at a time (each test in its own process); plain `cargo test` where nextest is missing.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --test-threads 4 --no-fail-fast
else
  cargo test --workspace --lib --bins --tests -- --test-threads=2
fi
skipped=0
if [ -f "$SKIP_LOG" ]; then
  skipped=$(wc -l < "$SKIP_LOG")
  cat "$SKIP_LOG"
fi
echo "skipped tests (missing precondition): $skipped"

if [ -d tests/python ]; then
  .venv/bin/python -m pytest -q tests/python
fi
