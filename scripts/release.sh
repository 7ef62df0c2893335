#!/usr/bin/env bash
# `make release`: the release artifacts in dist/, versioned from the workspace's Cargo.toml.
#
#   vault-plugin-secrets-azure_<v>_linux_amd64          static x86_64 binary (glibc, +crt-static)
#   vault-plugin-secrets-azure_<v>_linux_amd64.oci.tar  OCI image (layout archive): the binary at /
#   vault-plugin-secrets-azure_<v>.cdx.json             CycloneDX 1.5 SBOM of the binary's crates
#   openbao-plugin_<v>.hcl                              the OpenBao `plugin` stanza (image digest + sha256)
#   SHA256SUMS                                          checksums of the above
#
# OCI_REPOSITORY names where the image will be pushed (it goes into the stanza); the push itself
# is the operator's: `skopeo copy oci-archive:<tar>:v<v> docker://$OCI_REPOSITORY:v<v>`.
# aarch64 is built only when its Rust std and a cross linker are installed (rustup target
# aarch64-unknown-linux-gnu + gcc-aarch64-linux-gnu); otherwise it is skipped with a notice.
# scripts/check-release.sh verifies everything written here.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
CARGO="${CARGO:-cargo}"
dist="${DIST_DIR:-$root/dist}"
pkg="vault-plugin-secrets-azure"
repo="${OCI_REPOSITORY:-localhost:5000/$pkg}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

version="$("$root/scripts/release-version.sh")"
tag="v$version"
echo "release $pkg $version -> $dist" >&2

rm -rf "$dist"
mkdir -p "$dist"

build_static() { # <rust target> <oci arch>
  local target="$1" arch="$2"
  # Static glibc: no musl target can be installed here (rustup cannot download one). The
  # plugin resolves no host names through NSS at run time that a static glibc could not
  # handle: endpoints are URLs and the go-plugin socket is a Unix socket.
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static" \
    "$CARGO" build --locked --release --target "$target" -p "$pkg" --bin "$pkg" >&2
  local bin="$root/target/$target/release/$pkg"
  # Static: no program interpreter, no shared-library dependency (`ldd` exits 0 on static-pie).
  if readelf -lW "$bin" | grep -q 'program interpreter' || readelf -dW "$bin" | grep -q '(NEEDED)'; then
    echo "release: $bin is dynamically linked" >&2
    readelf -dW "$bin" | grep '(NEEDED)' >&2 || true
    exit 1
  fi
  local out="$dist/${pkg}_${version}_linux_${arch}"
  cp "$bin" "$out"
  chmod 0755 "$out"
  python3 "$root/scripts/oci-image.py" --binary "$out" --name "$pkg" --version "$version" \
    --tag "$tag" --arch "$arch" --out-dir "$dist/.oci-layout-$arch" \
    --archive "$out.oci.tar" > "$dist/.oci-$arch.json"
  rm -rf "$dist/.oci-layout-$arch"
}

build_static x86_64-unknown-linux-gnu amd64

if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu \
   && command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
    build_static aarch64-unknown-linux-gnu arm64
else
  echo "release: aarch64 skipped (needs: rustup target add aarch64-unknown-linux-gnu; apt-get install gcc-aarch64-linux-gnu)" >&2
fi

python3 "$root/scripts/sbom.py" --package "$pkg" --target x86_64-unknown-linux-gnu \
  --out "$dist/${pkg}_${version}.cdx.json"

# The stanza: the image pinned by its manifest digest, the binary by its SHA-256.
python3 - "$dist" "$repo" "$tag" "$pkg" "$version" <<'EOF'
import json, sys
dist, repo, tag, pkg, version = sys.argv[1:]
img = json.load(open(f"{dist}/.oci-amd64.json"))
stanza = f'''# {pkg} {version}: OpenBao 2.5+ declarative plugin (linux/amd64).
# Push the image first:
#   skopeo copy oci-archive:{pkg}_{version}_linux_amd64.oci.tar:{tag} docker://{repo}:{tag}
# The image is pinned by its manifest digest; OpenBao also checks the extracted binary
# against sha256sum before it registers and runs it.

plugin_directory     = "/opt/openbao/plugins"
plugin_auto_download = true
plugin_auto_register = true

plugin "secret" "azure" {{
  image       = "{repo}@{img["manifest_digest"]}"
  version     = "{tag}"
  binary_name = "{img["binary_name"]}"
  sha256sum   = "{img["binary_sha256"]}"
}}
'''
open(f"{dist}/openbao-plugin_{version}.hcl", "w").write(stanza)
EOF
rm -f "$dist"/.oci-*.json

(cd "$dist" && sha256sum -- * > SHA256SUMS)
echo "release: wrote" >&2
ls -l "$dist" >&2
