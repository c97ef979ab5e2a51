#!/usr/bin/env python3
"""Checks deploy/nomad/spillway.nomad.hcl without a Nomad binary (none
installs from this project's registries): the file parses as HCL2
(python-hcl2), the job is a system job whose group runs the node and the
sidecar with the docker driver on host networking, the node asks for GPUs,
the sidecar's entry point is a file that exists, and each task's TOML
passes `spillway config check` for its command.

Usage: deploy/nomad/check.py SPILLWAY_BINARY
"""
import os
import re
import subprocess
import sys
import tempfile

import hcl2

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
JOB = os.path.join(ROOT, "deploy", "nomad", "spillway.nomad.hcl")


def unquote(value):
    """python-hcl2 keeps a string's quotes."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def one(blocks, what):
    if not isinstance(blocks, list) or len(blocks) != 1:
        sys.exit(f"{JOB}: expected one {what}, found {blocks!r}")
    return blocks[0]


def named(block, what):
    (name, body), = block.items()
    return unquote(name), body


def main(binary):
    with open(JOB) as f:
        job_file = hcl2.load(f)
    name, job = named(one(job_file.get("job"), "job"), "job")
    if unquote(job.get("type")) != "system":
        sys.exit(f"{JOB}: job {name} must be a system job (one host per client)")
    _, group = named(one(job.get("group"), "group"), "group")
    network = one(group.get("network"), "network block")
    if unquote(network.get("mode")) != "host":
        sys.exit(f"{JOB}: the group must use host networking")
    tasks = dict(named(t, "task") for t in group.get("task", []))
    if set(tasks) != {"node", "sidecar"}:
        sys.exit(f"{JOB}: expected tasks node and sidecar, found {sorted(tasks)}")
    for task_name, task in tasks.items():
        if unquote(task.get("driver")) != "docker":
            sys.exit(f"{JOB}: task {task_name} must use the docker driver")
        config = one(task.get("config"), f"config of {task_name}")
        if unquote(config.get("network_mode")) != "host":
            sys.exit(f"{JOB}: task {task_name} must use host networking")
    resources = one(tasks["node"].get("resources"), "resources of node")
    devices = [named(d, "device")[0] for d in resources.get("device", [])]
    if devices != ["nvidia/gpu"]:
        sys.exit(f"{JOB}: the node task must ask for nvidia/gpu devices, asks for {devices}")

    checked = 0
    for task_name, task in tasks.items():
        for template in task.get("template", []):
            destination = unquote(template.get("destination"))
            data = template.get("data", "")
            source = re.fullmatch(r'"?\$\{file\("([^"]+)"\)\}"?', str(data))
            if source:
                path = os.path.join(ROOT, source.group(1))
                if not os.path.isfile(path):
                    sys.exit(f"{JOB}: {destination} comes from {source.group(1)}, which does not exist")
                continue
            if not destination.endswith(".toml"):
                continue
            text = unquote(data) if not data.startswith("<<") else data
            text = re.sub(r"^<<-?EOT\n|\n?\s*EOT$", "", text)
            text = "\n".join(line.strip() for line in text.splitlines()) + "\n"
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(text)
            try:
                out = subprocess.run(
                    [binary, "config", "check", "--command", task_name, f.name],
                    capture_output=True, text=True)
            finally:
                os.unlink(f.name)
            if out.returncode != 0:
                sys.exit(f"{JOB}: task {task_name}'s {destination}: {out.stderr.strip()}")
            checked += 1
    if checked != 2:
        sys.exit(f"{JOB}: expected a TOML file for each task, checked {checked}")
    print("deploy/nomad: spillway.nomad.hcl parses (python-hcl2), its shape holds, "
          "and both tasks' TOML pass spillway config check")


if __name__ == "__main__":
    main(sys.argv[1])
