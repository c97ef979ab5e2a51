#!/usr/bin/env bash
# Checks the deployment files with the ecosystem's own validators, against
# the built binary (SPILLWAY_BIN, default target/debug/spillway):
#   deploy/systemd: `systemd-analyze verify` on spillway-host.service with
#     its GPU drop-in (any warning fails the check); the example host.toml
#     through `spillway config check`; the install guide followed on three
#     network namespaces (rehearse.sh).
#   deploy/helm, deploy/kubernetes: `helm lint --strict`; the chart
#     rendered with its defaults must equal deploy/kubernetes/spillway.yaml;
#     renders (defaults, mutual TLS without a ServiceMonitor, and the GPU
#     pool with a node process per GPU) validated
#     with `kubernetes-validate --strict` against the Kubernetes schemas
#     (any message but the ServiceMonitor's missing schema fails); the
#     hosts' TOML in the ConfigMaps through `spillway config check`; the
#     Dockerfile through hadolint.
#   deploy/nomad: parsed and checked by deploy/nomad/check.py (no Nomad
#     binary installs from the registries here).
#   deploy/observability: the alert rules through promtool check rules and
#     their unit tests through promtool test rules; the Grafana dashboard's
#     shape and every query's PromQL (check_dashboard.py, via promtool).
# The test command (scripts/test) installs the validators and runs this
# after the tests; .ci/run installs systemd where it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPILLWAY_BIN:-$root/target/debug/spillway}
[ -x "$bin" ] || { echo "deploy/check.sh: no binary at $bin (cargo build first)" >&2; exit 1; }
for tool in systemd-analyze helm kubernetes-validate hadolint promtool; do
  command -v "$tool" >/dev/null || {
    echo "deploy/check.sh: $tool is not installed (scripts/test installs it)" >&2
    exit 1
  }
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The unit as installed, but with the binary and the environment file
# where this checkout has them.
sed -e "s#/usr/local/bin/spillway#$bin#" \
    -e "s#^EnvironmentFile=-/etc/spillway/host.env#EnvironmentFile=-$root/deploy/systemd/host.env.example#" \
    "$root/deploy/systemd/spillway-host.service" > "$dir/spillway-host.service"
mkdir "$dir/spillway-host.service.d"
cp "$root/deploy/systemd/gpu.conf" "$dir/spillway-host.service.d/"
out=$(SYSTEMD_UNIT_PATH="$dir:" systemd-analyze verify --man=no "$dir/spillway-host.service" 2>&1) || {
  echo "$out" >&2
  exit 1
}
if [ -n "$out" ]; then
  echo "deploy/systemd: systemd-analyze verify warned:" >&2
  echo "$out" >&2
  exit 1
fi
echo "deploy/systemd: systemd-analyze verify clean (spillway-host.service, gpu.conf)"
"$bin" config check "$root/deploy/systemd/host.toml.example" >/dev/null
echo "deploy/systemd: host.toml.example passes spillway config check"
# The install guide, followed on network namespaces (root only: CI runs as
# root; elsewhere say so).
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && command -v openssl >/dev/null; then
  "$root/deploy/systemd/rehearse.sh" "$bin"
else
  echo "deploy/systemd: NOT rehearsing the install guide: it needs root, ip and openssl" >&2
fi

# Helm and Kubernetes.
helm lint --strict --quiet "$root/deploy/helm/spillway"
helm template spillway "$root/deploy/helm/spillway" -n spillway > "$dir/default.yaml"
if ! diff -u "$root/deploy/kubernetes/spillway.yaml" "$dir/default.yaml" >&2; then
  echo "deploy/kubernetes/spillway.yaml is not the chart's render: run" >&2
  echo "  helm template spillway deploy/helm/spillway -n spillway > deploy/kubernetes/spillway.yaml" >&2
  exit 1
fi
helm template spillway "$root/deploy/helm/spillway" -n spillway \
  --set tls.requireClientCertificates=true --set serviceMonitor.enabled=false > "$dir/mtls.yaml"
grep -q 'tls-client-ca = "/etc/spillway-tls/ca.crt"' "$dir/mtls.yaml"
grep -q 'kind: ServiceMonitor' "$dir/mtls.yaml" && { echo "serviceMonitor.enabled=false still renders one" >&2; exit 1; }
# The GPU pool with a node process per GPU: one `host` container with the
# GPUs, no node container, and a host.toml.
helm template spillway "$root/deploy/helm/spillway" -n spillway \
  -f "$root/deploy/kubernetes/values-executors.yaml" > "$dir/executors.yaml"
python3 - "$dir/executors.yaml" <<'PY'
import sys, yaml
objs = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o]
gpu = next(o for o in objs if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "spillway-gpu")
containers = gpu["spec"]["template"]["spec"]["containers"]
assert [c["name"] for c in containers] == ["host"], [c["name"] for c in containers]
env = {e["name"]: e.get("value") for e in containers[0]["env"]}
assert env["SPILLWAY_ROLE"] == "host" and env["SPILLWAY_CONFIG"] == "/etc/spillway/host.toml", env
resources = containers[0]["resources"]
assert resources["limits"] == {"nvidia.com/gpu": 8, "memory": "68Gi"}, resources
config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "spillway-gpu")
host = config["data"]["host.toml"]
assert 'executors = "per-gpu"' in host and "slots = 2" in host and "node-socket" not in host, host
assert "sidecar.toml" not in config["data"], config["data"].keys()
PY
out=$(kubernetes-validate --strict --quiet "$root/deploy/kubernetes/namespace.yaml" "$dir/default.yaml" "$dir/mtls.yaml" "$dir/executors.yaml" 2>&1)
unexpected=$(printf '%s\n' "$out" | grep -v "Couldn't find schema for kind ServiceMonitor" | grep -v '^$' || true)
if [ -n "$unexpected" ]; then
  echo "deploy/kubernetes: kubernetes-validate:" >&2
  echo "$out" >&2
  exit 1
fi
echo "deploy/kubernetes: the chart lints and renders as spillway.yaml; kubernetes-validate --strict passes (ServiceMonitor: no schema)"
python3 "$root/deploy/kubernetes/check_config.py" "$bin" "$dir/default.yaml" "$dir/mtls.yaml" "$dir/executors.yaml"
hadolint "$root/deploy/kubernetes/Dockerfile"
echo "deploy/kubernetes: hadolint passes on the Dockerfile"

# Nomad.
python3 "$root/deploy/nomad/check.py" "$bin"

# Alert rules.
promtool check rules "$root/deploy/observability/alerts.yml" >/dev/null
(cd "$root/deploy/observability" && promtool test rules alerts_test.yml >/dev/null)
echo "deploy/observability: promtool check rules and promtool test rules pass"
python3 "$root/deploy/observability/check_dashboard.py"
