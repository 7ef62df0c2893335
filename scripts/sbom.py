#!/usr/bin/env python3
"""Writes a CycloneDX 1.5 JSON SBOM of one workspace package's binary from `cargo metadata`:
every crate linked into it (normal dependencies, resolved for the target platform; build
scripts' and proc-macros' own dependencies are left out, dev-dependencies too), with its
version, package URL (pkg:cargo/<name>@<version>), licence expression, the SHA-256 that
Cargo.lock records for registry crates, and the dependency graph.

Usage: sbom.py --package vault-plugin-secrets-azure --target x86_64-unknown-linux-gnu --out sbom.json
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import uuid

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None


def cargo_metadata(target: str) -> dict:
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def lock_checksums(workspace_root: str) -> dict:
    """(name, version) -> sha256 from Cargo.lock (registry crates only)."""
    if tomllib is None:
        return {}
    with open(os.path.join(workspace_root, "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p["checksum"]
            for p in lock.get("package", []) if "checksum" in p}


def purl(pkg: dict) -> str:
    return f"pkg:cargo/{pkg['name']}@{pkg['version']}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--package", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    meta = cargo_metadata(args.target)
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    roots = [p for p in meta["packages"]
             if p["name"] == args.package and p["id"] in meta["workspace_members"]]
    if len(roots) != 1:
        print(f"sbom: no workspace package {args.package}", file=sys.stderr)
        return 1
    root = roots[0]

    def normal_deps(pkg_id: str) -> list:
        deps = []
        for dep in nodes[pkg_id]["deps"]:
            if any(k.get("kind") is None for k in dep["dep_kinds"]):
                deps.append(dep["pkg"])
        return deps

    # Everything reachable from the binary's package through normal dependencies.
    seen, stack, graph = set(), [root["id"]], {}
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        graph[pid] = sorted(set(normal_deps(pid)))
        stack.extend(graph[pid])

    checksums = lock_checksums(meta["workspace_root"])

    def component(pid: str) -> dict:
        pkg = packages[pid]
        c = {
            "type": "application" if pid == root["id"] else "library",
            "bom-ref": purl(pkg),
            "name": pkg["name"],
            "version": pkg["version"],
            "purl": purl(pkg),
        }
        if pkg.get("description"):
            c["description"] = " ".join(pkg["description"].split())
        if pkg.get("license"):
            c["licenses"] = [{"expression": pkg["license"]}]
        sha = checksums.get((pkg["name"], pkg["version"]))
        if sha:
            c["hashes"] = [{"alg": "SHA-256", "content": sha}]
        if pkg.get("repository"):
            c["externalReferences"] = [{"type": "vcs", "url": pkg["repository"]}]
        c["scope"] = "required"
        return c

    ordered = sorted(seen - {root["id"]}, key=lambda i: (packages[i]["name"], packages[i]["version"]))
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        # Reproducible: the serial number is derived from the root package and version.
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, purl(root))),
        "version": 1,
        "metadata": {
            "timestamp": datetime.datetime.fromtimestamp(
                epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "scripts/sbom.py"}]},
            "component": component(root["id"]),
            "properties": [{"name": "cargo:target", "value": args.target}],
        },
        "components": [component(i) for i in ordered],
        "dependencies": [
            {"ref": purl(packages[pid]), "dependsOn": [purl(packages[d]) for d in deps]}
            for pid, deps in sorted(graph.items(), key=lambda kv: purl(packages[kv[0]]))
        ],
    }
    with open(args.out, "w") as f:
        json.dump(bom, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"sbom: {len(ordered)} crates in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
