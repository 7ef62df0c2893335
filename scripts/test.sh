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
cargo test --workspace --lib --bins --tests -- --test-threads=2

if [ -d tests/python ]; then
  .venv/bin/python -m pytest -q tests/python
fi
