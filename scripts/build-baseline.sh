#!/usr/bin/env bash
# Builds the plugin as it was at git revision REV (release profile of that revision), in a
# worktree and target directory of its own under target/baseline/, and prints the binary's
# path; for the runtime benchmark's comparison:
#   BASELINE_PLUGIN=$(scripts/build-baseline.sh cd2f9eb) cargo bench --bench runtime
set -euo pipefail
rev="${1:?usage: scripts/build-baseline.sh <git revision>}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
commit="$(git -C "$root" rev-parse --verify "$rev^{commit}")"
dir="$root/target/baseline/$commit"
if [ ! -d "$dir/src" ]; then
  rm -rf "$dir/src"
  git -C "$root" worktree prune
  git -C "$root" worktree add --detach "$dir/src" "$commit" >&2
fi
CARGO_TARGET_DIR="$dir/target" cargo build --release --manifest-path "$dir/src/Cargo.toml" \
  -p vault-plugin-secrets-azure >&2
echo "$dir/target/release/vault-plugin-secrets-azure"
