#!/usr/bin/env bash
# Prints the plugin's version from the workspace's Cargo.toml (what `make release` names files by).
set -euo pipefail
cargo metadata --no-deps --format-version 1 --manifest-path "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/Cargo.toml" \
  | python3 -c "import json,sys; print(next(p['version'] for p in json.load(sys.stdin)['packages'] if p['name']=='vault-plugin-secrets-azure'))"
