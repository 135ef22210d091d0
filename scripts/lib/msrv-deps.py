#!/usr/bin/env python3
"""Fails when a locked dependency declares a newer `rust-version` than the workspace's.

Reads `cargo metadata` (the locked tree, every platform) on stdin; prints each offender.
Crates that declare no rust-version cannot be checked and are counted, not failed.
"""
import json
import sys


def version(text):
    return tuple(int(part) for part in text.split(".")[:3]) + (0,) * (3 - len(text.split(".")[:3]))


metadata = json.load(sys.stdin)
members = set(metadata["workspace_members"])
ours = {p["rust_version"] for p in metadata["packages"] if p["id"] in members and p.get("rust_version")}
if len(ours) != 1:
    sys.exit(f"error: the workspace's crates declare {len(ours)} rust-versions: {sorted(ours)}")
msrv = ours.pop()
newer, undeclared, checked = [], 0, 0
for package in metadata["packages"]:
    if package["id"] in members:
        continue
    declared = package.get("rust_version")
    if not declared:
        undeclared += 1
        continue
    checked += 1
    if version(declared) > version(msrv):
        newer.append(f"{package['name']} {package['version']} needs Rust {declared}")
if newer:
    print(f"error: dependencies newer than our rust-version {msrv}:", file=sys.stderr)
    for line in newer:
        print(f"  {line}", file=sys.stderr)
    sys.exit(1)
print(f"rust-version {msrv}: {checked} dependencies declare one, none newer ({undeclared} declare none)")
