#!/usr/bin/env bash
# Installs what the OCI install test (tests/oci_install.rs) and `make release` need to serve and
# push an OCI image without a container engine: the CNCF distribution registry (Debian's
# `docker-registry`, 2.8) and `skopeo`. Idempotent: does nothing when both are there.
set -euo pipefail

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-registry: need ${missing[*]} (Debian/Ubuntu packages); no apt-get here" >&2
  exit 1
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "installing ${missing[*]}" >&2
# The Debian package ships a service; this project never starts it (tests run their own
# registry on loopback with a generated config).
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
  || { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
