#!/usr/bin/env bash
# The fault suite (README "Fault suite"): kill -9 mid-issuance, a 3-node raft cluster with
# standby reads and leader failover, a throttling storm, a bounded fuzz of every writable
# path, static-role rotation across a failover, and a warm pool with the reconciler under
# kills, against a real OpenBao and the Azure emulator on loopback. Each part merges its figures
# into bench-results/chaos.json; the run goes on after a failing part and fails at the end.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-tools.sh || exit 1

cargo build --workspace --bins || exit 1
cargo test --test fault --no-run || exit 1

mkdir -p bench-results
export CHAOS_FIGURES="$root/bench-results/chaos.json"
echo '{}' > "$CHAOS_FIGURES"

failed=()
for part in \
  chaos_a_kill_9_at_varied_points_of_20_issuances \
  chaos_b_creds_through_leader_standby_and_failover_then_nothing_left \
  chaos_c_a_100_request_storm_under_throttling \
  chaos_d_bounded_fuzz_of_every_writable_path \
  writes_sent_to_a_standby_are_forwarded_and_standbys_do_no_azure_work \
  chaos_e_static_rotation_continues_after_failover \
  chaos_f_pool_and_reconciler_under_kills; do
  echo "=== $part"
  if ! cargo test --test fault "$part" -- --include-ignored --exact --test-threads=1; then
    failed+=("$part")
  fi
done

echo "figures: $CHAOS_FIGURES"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "failed parts: ${failed[*]}" >&2
  exit 1
fi
