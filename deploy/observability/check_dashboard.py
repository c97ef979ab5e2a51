#!/usr/bin/env python3
"""Checks deploy/observability/dashboard.json without Grafana: it is JSON
with the shape Grafana imports (a title, a uid, unique panel ids, every
panel placed on the grid and reading the dashboard's Prometheus data
source), and every query is PromQL that promtool accepts (each becomes a
recording rule, Grafana's variables replaced, and `promtool check rules`
parses them). That the metrics they name exist is checked against live
hosts by cli/tests/metrics.rs.

Usage: deploy/observability/check_dashboard.py
"""
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FILE = os.path.join(HERE, "dashboard.json")
VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "1m", "$job": "spillway"}


def fail(message):
    sys.exit(f"{FILE}: {message}")


def main():
    with open(FILE) as f:
        dash = json.load(f)
    for key in ("title", "uid", "panels", "templating"):
        if key not in dash:
            fail(f"no {key}")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        fail("panel ids repeat")
    variables = {v["name"] for v in dash["templating"]["list"]}
    if "datasource" not in variables:
        fail("no datasource variable")
    exprs = []
    for p in dash["panels"]:
        grid = p.get("gridPos", {})
        if not all(k in grid for k in ("x", "y", "w", "h")):
            fail(f"panel {p['id']} ({p.get('title')}) is not placed")
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"panel {p['id']} ({p['title']}) does not read the dashboard's data source")
        if not p.get("targets"):
            fail(f"panel {p['id']} ({p['title']}) has no query")
        for t in p["targets"]:
            expr = t["expr"]
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            if "$" in expr:
                fail(f"panel {p['id']}: an unknown variable in {t['expr']}")
            exprs.append((p["id"], t["refId"], expr))
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel{pid}_{ref}", "expr": expr} for pid, ref, expr in exprs]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    try:
        out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        fail("a query promtool does not accept:\n" + out.stdout + out.stderr)
    names = sorted({n for _, _, e in exprs for n in re.findall(r"\bspillway_[a-z_]+", e)})
    print(f"deploy/observability: dashboard.json has {len(exprs)} queries over "
          f"{len(names)} series, all PromQL promtool accepts")


if __name__ == "__main__":
    main()
