#!/usr/bin/env python3
"""Builds a `FROM scratch` OCI image holding one static binary at the image root, without a
container engine: the layer tar, the image config, the manifest and the index are written
here and addressed by their SHA-256 digests (OCI image-layout 1.0.0).

Output: an OCI layout directory and the same layout as a tar archive (what `skopeo copy
oci-archive:<tar>:<tag> docker://...` and `oras`/`crane` understand). Byte-for-byte
reproducible: every timestamp is SOURCE_DATE_EPOCH (default 0), owners are 0:0, gzip carries
no name or time.

Prints one JSON object: the binary's sha256 (what OpenBao's `sha256sum` checks), the manifest
digest (what an `image = "...@sha256:..."` pin names), the layer digest and the archive path.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(binary: bytes, name: str, mtime: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(binary)
        info.mode = 0o755
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(binary))
    return buf.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    # OCI_IMAGE_GZIP_LEVEL: 9 (default) for releases; tests packing a debug build use 1.
    level = int(os.environ.get("OCI_IMAGE_GZIP_LEVEL", "9"))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=level) as gz:
        gz.write(data)
    return buf.getvalue()


def build(args) -> dict:
    with open(args.binary, "rb") as f:
        binary = f.read()
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")

    uncompressed = layer_tar(binary, args.name, mtime)
    layer = gzip_deterministic(uncompressed)
    labels = {
        "org.opencontainers.image.title": args.name,
        "org.opencontainers.image.version": args.version,
    }
    if args.source:
        labels["org.opencontainers.image.source"] = args.source
    config = canonical_json({
        "architecture": args.arch,
        "os": "linux",
        "created": created,
        "config": {"Entrypoint": ["/" + args.name], "Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256_hex(uncompressed)]},
        "history": [{"created": created, "created_by": "scripts/oci-image.py: the static binary at /"}],
    })
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + sha256_hex(config),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": "sha256:" + sha256_hex(layer),
                    "size": len(layer)}],
        "annotations": labels,
    })
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": "sha256:" + sha256_hex(manifest),
            "size": len(manifest),
            "platform": {"architecture": args.arch, "os": "linux"},
            "annotations": {"org.opencontainers.image.ref.name": args.tag},
        }],
    })
    blobs = [layer, config, manifest]
    files = {"oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for blob in blobs:
        files["blobs/sha256/" + sha256_hex(blob)] = blob

    os.makedirs(os.path.join(args.out_dir, "blobs", "sha256"), exist_ok=True)
    for path, data in files.items():
        with open(os.path.join(args.out_dir, path), "wb") as f:
            f.write(data)

    if args.archive:
        with tarfile.open(args.archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for dirname in ["blobs/", "blobs/sha256/"]:
                info = tarfile.TarInfo(dirname)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                info.mtime = mtime
                tar.addfile(info)
            for path in sorted(files):
                info = tarfile.TarInfo(path)
                info.size = len(files[path])
                info.mode = 0o644
                info.mtime = mtime
                tar.addfile(info, io.BytesIO(files[path]))

    return {
        "binary_name": args.name,
        "binary_sha256": sha256_hex(binary),
        "manifest_digest": "sha256:" + sha256_hex(manifest),
        "layer_digest": "sha256:" + sha256_hex(layer),
        "tag": args.tag,
        "layout": os.path.abspath(args.out_dir),
        "archive": os.path.abspath(args.archive) if args.archive else None,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--binary", required=True, help="the static binary to put at the image root")
    p.add_argument("--name", required=True, help="its file name in the image (= OpenBao's binary_name)")
    p.add_argument("--version", required=True, help="the image's version label, e.g. 0.1.0")
    p.add_argument("--tag", required=True, help="the tag in index.json, e.g. v0.1.0")
    p.add_argument("--arch", default="amd64", help="OCI architecture (amd64, arm64)")
    p.add_argument("--source", default="", help="org.opencontainers.image.source label")
    p.add_argument("--out-dir", required=True, help="the OCI layout directory to write")
    p.add_argument("--archive", default="", help="also write the layout as this tar archive")
    args = p.parse_args()
    try:
        result = build(args)
    except OSError as e:
        print(f"oci-image: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
