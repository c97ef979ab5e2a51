#!/usr/bin/env bash
# Checks the deployment files with the ecosystem's own validators:
#   deploy/systemd: `systemd-analyze verify` on spillway-host.service with
#   its GPU drop-in (any warning fails the check), pointed at the built
#   binary (SPILLWAY_BIN, default target/debug/spillway).
# The test command (scripts/test) runs it after the tests; .ci/run installs
# systemd (for systemd-analyze) where it is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SPILLWAY_BIN:-$root/target/debug/spillway}
[ -x "$bin" ] || { echo "deploy/check.sh: no binary at $bin (cargo build first)" >&2; exit 1; }
command -v systemd-analyze >/dev/null || {
  echo "deploy/check.sh: systemd-analyze is not installed (apt-get install systemd)" >&2
  exit 1
}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The unit as installed, but with the binary and the environment file
# where this checkout has them.
sed -e "s#/usr/local/bin/spillway#$bin#" \
    -e "s#^EnvironmentFile=/etc/spillway/host.env#EnvironmentFile=$root/deploy/systemd/host.env.example#" \
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
