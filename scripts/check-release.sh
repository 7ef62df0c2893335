#!/usr/bin/env bash
# Verifies what scripts/release.sh wrote to dist/ (`make release-check`):
#   - SHA256SUMS verifies;
#   - the binary is statically linked and, run without OpenBao's handshake, refuses with the
#     go-plugin message;
#   - the SBOM is CycloneDX and lists our crates and tokio with versions and purls;
#   - the OCI archive is a valid layout: every blob matches its digest, the index names the
#     tag, the config's entrypoint is the binary at /, the layer holds exactly that binary
#     (same SHA-256 as the release binary), and the binary extracted from the image runs;
#   - the OpenBao stanza names the manifest digest and the binary's SHA-256.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dist="${DIST_DIR:-$root/dist}"
pkg="vault-plugin-secrets-azure"
fail() { echo "check-release: $*" >&2; exit 1; }

[ -d "$dist" ] || fail "no $dist (run make release)"
version="$("$root/scripts/release-version.sh")"

bin="$dist/${pkg}_${version}_linux_amd64"
image="$bin.oci.tar"
sbom="$dist/${pkg}_${version}.cdx.json"
stanza="$dist/openbao-plugin_${version}.hcl"
for f in "$bin" "$image" "$sbom" "$stanza" "$dist/SHA256SUMS"; do
  [ -f "$f" ] || fail "missing $f"
done

(cd "$dist" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not verify"
grep -q " ${pkg}_${version}_linux_amd64\$" "$dist/SHA256SUMS" || fail "SHA256SUMS lacks the binary"

if readelf -lW "$bin" | grep -q 'program interpreter' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
  fail "$bin is dynamically linked"
fi

refusal_check() { # <binary>
  local out code=0
  out="$(env -i "$1" 2>&1)" || code=$?
  [ "$code" -ne 0 ] || fail "$1 ran without the handshake cookie and exited 0"
  grep -q "This binary is a plugin" <<<"$out" || fail "$1 did not print the go-plugin refusal: $out"
}
refusal_check "$bin"

python3 - "$sbom" "$version" <<'EOF' || fail "SBOM check failed"
import json, sys
path, version = sys.argv[1:]
bom = json.load(open(path))
assert bom["bomFormat"] == "CycloneDX", "not CycloneDX"
assert bom["metadata"]["component"]["purl"] == f"pkg:cargo/vault-plugin-secrets-azure@{version}"
by_name = {c["name"]: c for c in bom["components"]}
for name in ["vault-plugin-sdk", "azure-clients", "tokio", "tonic", "reqwest", "rustls"]:
    c = by_name.get(name)
    assert c, f"SBOM lacks {name}"
    assert c["version"] and c["purl"] == f"pkg:cargo/{name}@{c['version']}", f"bad purl for {name}"
assert "azure-emulator" not in by_name, "the emulator is not part of the plugin"
assert by_name["tokio"].get("hashes"), "no Cargo.lock checksum for tokio"
print(f"check-release: SBOM lists {len(bom['components'])} crates", file=sys.stderr)
EOF

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
tar -xf "$image" -C "$work"
python3 - "$work" "$pkg" "v$version" "$bin" "$stanza" <<'EOF' || fail "OCI image check failed"
import gzip, hashlib, io, json, os, re, sys, tarfile
layout, pkg, tag, binary, stanza = sys.argv[1:]
def blob(digest):
    algo, hexd = digest.split(":")
    data = open(os.path.join(layout, "blobs", algo, hexd), "rb").read()
    assert hashlib.sha256(data).hexdigest() == hexd, f"blob {digest} does not match its digest"
    return data
assert json.load(open(os.path.join(layout, "oci-layout")))["imageLayoutVersion"] == "1.0.0"
for name in os.listdir(os.path.join(layout, "blobs", "sha256")):
    blob("sha256:" + name)
index = json.load(open(os.path.join(layout, "index.json")))
[desc] = [m for m in index["manifests"]
          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
manifest_raw = blob(desc["digest"])
assert len(manifest_raw) == desc["size"]
manifest = json.loads(manifest_raw)
config = json.loads(blob(manifest["config"]["digest"]))
assert config["os"] == "linux" and config["architecture"] == "amd64"
assert config["config"]["Entrypoint"] == ["/" + pkg], config["config"]
[layer] = manifest["layers"]
raw = gzip.decompress(blob(layer["digest"]))
assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw).hexdigest()]
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    members = t.getmembers()
    assert [m.name for m in members] == [pkg], [m.name for m in members]
    assert members[0].isfile() and members[0].mode & 0o111
    content = t.extractfile(members[0]).read()
want = hashlib.sha256(open(binary, "rb").read()).hexdigest()
assert hashlib.sha256(content).hexdigest() == want, "the image's binary is not the release binary"
out = os.path.join(layout, "extracted-" + pkg)
open(out, "wb").write(content)
os.chmod(out, 0o755)
text = open(stanza).read()
assert re.search(r'image\s*=\s*"[^"]+@' + re.escape(desc["digest"]) + '"', text), "stanza lacks the manifest digest"
assert re.search(r'sha256sum\s*=\s*"' + want + '"', text), "stanza lacks the binary sha256"
assert re.search(r'binary_name\s*=\s*"' + pkg + '"', text)
assert re.search(r'version\s*=\s*"' + tag + '"', text)
EOF
refusal_check "$work/extracted-$pkg"

echo "check-release: dist/ for $pkg $version is consistent" >&2
