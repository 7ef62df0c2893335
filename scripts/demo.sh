#!/usr/bin/env bash
# The demo: an OpenBao dev server, the Azure emulator and the plugin, end to end:
# register, enable, configure, write a role with two Azure roles and a group, issue a
# credential, show the new service principal in the emulator, revoke it, show it gone; then a
# static role on an existing application: its credentials, an access token, a rotation.
# Expects `cargo build --release --bins` and scripts/install-tools.sh to have run
# (`make demo` does both).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bao="$root/.venv/bin/bao"
plugin="$root/target/release/vault-plugin-secrets-azure"
emulator="$root/target/release/azure-emulator"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
state() { curl -sf "$EMULATOR_ADMIN/state"; }

step "Start the Azure emulator"
"$emulator" --listen 127.0.0.1:0 --arc-token-dir "$work/arc" > "$work/emulator.env" 2> "$work/emulator.log" &
pids+=($!)
for _ in $(seq 100); do grep -q '^READY$' "$work/emulator.env" 2>/dev/null && break; sleep 0.1; done
grep -q '^READY$' "$work/emulator.env" || { echo "emulator did not start" >&2; cat "$work/emulator.log" >&2; exit 1; }
set -a; source <(grep '=' "$work/emulator.env"); set +a
echo "tenant $AZURE_TENANT_ID, subscription $AZURE_SUBSCRIPTION_ID"
echo "Graph $AZURE_GRAPH_ENDPOINT, ARM $AZURE_RESOURCE_MANAGER_ENDPOINT, login $AZURE_AUTHORITY_HOST"
# The engine's own identity is given through `config` below, not the environment.
tenant="$AZURE_TENANT_ID"; subscription="$AZURE_SUBSCRIPTION_ID"
root_client_id="$AZURE_CLIENT_ID"; root_client_secret="$AZURE_CLIENT_SECRET"
unset AZURE_CLIENT_ID AZURE_CLIENT_SECRET AZURE_TENANT_ID AZURE_SUBSCRIPTION_ID IDENTITY_ENDPOINT IMDS_ENDPOINT

step "Start an OpenBao dev server (the plugin reaches the emulator as a custom cloud)"
mkdir -p "$work/plugins"
cp "$plugin" "$work/plugins/azure"
port="$(free_port)"
export BAO_ADDR="http://127.0.0.1:$port" BAO_TOKEN=root
"$bao" server -dev -dev-root-token-id=root -dev-listen-address="127.0.0.1:$port" \
  -dev-plugin-dir="$work/plugins" > "$work/bao.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do "$bao" status >/dev/null 2>&1 && break; sleep 0.1; done
"$bao" status >/dev/null

step "Register and enable the plugin"
version="v$(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)"
sha="$(sha256sum "$work/plugins/azure" | cut -d' ' -f1)"
"$bao" plugin register -sha256="$sha" -version="$version" secret azure
"$bao" secrets enable azure
"$bao" secrets list -detailed | awk 'NR<=2 || /^azure\//' | cut -c1-140

step "Configure it with the emulator's root identity"
"$bao" write azure/config tenant_id="$tenant" subscription_id="$subscription" \
  client_id="$root_client_id" client_secret="$root_client_secret"
"$bao" read azure/config

step "Write a role with two Azure roles and a group"
cat > "$work/roles.json" <<JSON
[
  {"role_name": "Reader", "scope": "/subscriptions/$subscription"},
  {"role_name": "Contributor", "scope": "/subscriptions/$subscription/resourceGroups/vault-rg"}
]
JSON
cat > "$work/groups.json" <<JSON
[{"group_name": "vault-test-group-1"}]
JSON
"$bao" write azure/roles/demo azure_roles=@"$work/roles.json" azure_groups=@"$work/groups.json" ttl=1h max_ttl=4h
"$bao" read azure/roles/demo

step "Issue a credential"
"$bao" read -format=json azure/creds/demo > "$work/creds.json"
python3 - "$work/creds.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
d = c["data"]
print(f"lease_id       {c['lease_id']}")
print(f"lease_duration {c['lease_duration']}s")
print(f"client_id      {d['client_id']}")
print(f"client_secret  {d['client_secret'][:3]}... ({len(d['client_secret'])} characters)")
if "credential_ready_wait_ms" in d:
    print(f"proven usable after {d['credential_ready_wait_ms']} ms")
PY
lease_id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["lease_id"])' "$work/creds.json")"
client_id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["data"]["client_id"])' "$work/creds.json")"

step "The new service principal in the emulator"
state | python3 -c '
import json, sys
s = json.load(sys.stdin); app_id = sys.argv[1]
apps = [a for a in s["applications"] if a.get("appId") == app_id]
sps = [p for p in s["servicePrincipals"] if p.get("appId") == app_id]
print("application:", [a["displayName"] for a in apps])
sp_ids = {p["id"] for p in sps}
print("service principal:", sorted(sp_ids))
for ra in s["roleAssignments"]:
    p = ra.get("properties", ra)
    if p.get("principalId") in sp_ids:
        print("role assignment:", p.get("roleDefinitionId", "").rsplit("/", 1)[-1], "at", p.get("scope"))
for g in s["groups"]:
    members = [m if isinstance(m, str) else m.get("id") for m in g.get("members", [])]
    if sp_ids & set(members):
        print("member of group:", g["displayName"])
' "$client_id"

step "Revoke the lease"
"$bao" lease revoke -sync "$lease_id"

step "The service principal is gone"
state | python3 -c '
import json, sys
s = json.load(sys.stdin); app_id = sys.argv[1]
left = [a for a in s["applications"] if a.get("appId") == app_id]
print("applications left for", app_id, ":", len(left))
sys.exit(1 if left else 0)
' "$client_id"

step "Static roles: an existing application in the emulator"
graph_token="$(curl -sf --cacert "$SSL_CERT_FILE" "${AZURE_AUTHORITY_HOST}${tenant}/oauth2/v2.0/token" \
  --data-urlencode grant_type=client_credentials --data-urlencode client_id="$root_client_id" \
  --data-urlencode client_secret="$root_client_secret" --data-urlencode scope="$AZURE_GRAPH_ENDPOINT/.default" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
graph() { curl -sf --cacert "$SSL_CERT_FILE" -H "Authorization: Bearer $graph_token" -H 'Content-Type: application/json' "$@"; }
app_json="$(graph -X POST "$AZURE_GRAPH_ENDPOINT/v1.0/applications" -d '{"displayName": "billing-service"}')"
app_object_id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$app_json")"
app_client_id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["appId"])' "$app_json")"
graph -X POST "$AZURE_GRAPH_ENDPOINT/v1.0/servicePrincipals" -d "{\"appId\": \"$app_client_id\"}" > /dev/null
echo "application billing-service: object id $app_object_id, client id $app_client_id"
app_passwords() {
  state | python3 -c '
import json, sys
s = json.load(sys.stdin)
for a in s["applications"]:
    if a["id"] == sys.argv[1]:
        for p in a["passwordCredentials"]:
            print("  password", p["keyId"], p.get("displayName"), "ends", p["endDateTime"])
' "$app_object_id"
}

step "Write a static role (rotated every 30 days, 5 minutes of overlap)"
"$bao" write azure/static-roles/billing application_object_id="$app_object_id" \
  rotation_period=720h rotation_grace_period=5m metadata=team=billing
"$bao" read azure/static-roles/billing

step "Read its credentials (no lease) and get an access token with them"
show_creds() {
  "$bao" read -format=json azure/static-creds/billing | python3 -c '
import json, sys
c = json.load(sys.stdin); d = c["data"]
print("lease_id       %r (none)" % c["lease_id"])
print("client_id      " + d["client_id"])
print("secret_id      " + d["secret_id"])
print("client_secret  %s... (%d characters)" % (d["client_secret"][:3], len(d["client_secret"])))
print("expiration     " + d["expiration"])
print("metadata       %s" % d["metadata"])
'
}
show_creds
"$bao" write -format=json azure/static-creds/billing/token scope="$AZURE_GRAPH_ENDPOINT/.default" | python3 -c '
import json, sys
d = json.load(sys.stdin)["data"]
print("token_type %s, expires_in %ss, access_token %s..." % (d["token_type"], d["expires_in"], d["access_token"][:12]))
'
app_passwords

step "Rotate it now: the new secret is proven before it becomes current; the old one overlaps for 5 minutes"
"$bao" write -f azure/rotate-role/billing
show_creds
app_passwords

step "Delete the static role: only the passwords the engine made go"
"$bao" delete azure/static-roles/billing
app_passwords
echo
echo "Demo finished."
