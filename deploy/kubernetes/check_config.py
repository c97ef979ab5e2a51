#!/usr/bin/env python3
"""Checks the hosts' settings in rendered Kubernetes objects: every
ConfigMap's sidecar.toml and node.toml (or host.toml, for a pool run with
executors) passes `spillway config check` for its command, and every
ConfigMap carries start.sh.

Usage: deploy/kubernetes/check_config.py SPILLWAY_BINARY RENDERED.yaml...
"""
import os
import subprocess
import sys
import tempfile

import yaml


def main(binary, files):
    checked = 0
    for path in files:
        with open(path) as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        for obj in objects:
            if obj.get("kind") != "ConfigMap":
                continue
            name = obj["metadata"]["name"]
            data = obj.get("data", {})
            if "start.sh" not in data:
                sys.exit(f"{path}: ConfigMap {name} has no start.sh")
            # A pool runs a sidecar and a node apart, or one host (executors).
            if "host.toml" in data:
                files = (("host.toml", "host"),)
            else:
                files = (("sidecar.toml", "sidecar"), ("node.toml", "node"))
            for key, command in files:
                if key not in data:
                    sys.exit(f"{path}: ConfigMap {name} has no {key}")
                with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as t:
                    t.write(data[key])
                try:
                    out = subprocess.run(
                        [binary, "config", "check", "--command", command, t.name],
                        capture_output=True, text=True)
                finally:
                    os.unlink(t.name)
                if out.returncode != 0:
                    sys.exit(f"{path}: ConfigMap {name}, {key}: {out.stderr.strip()}")
                checked += 1
    if checked == 0:
        sys.exit(f"{files}: no ConfigMap with a host's settings")
    print(f"deploy/kubernetes: {checked} TOML files in ConfigMaps pass spillway config check")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
