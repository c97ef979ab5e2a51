#!/usr/bin/env bash
# Makes a host's state directory as a given build writes it, for the
# upgrade test (cli/tests/upgrade.rs): a one-host cluster with a tenant, a
# scoped token, an artifact and a function, its control log partly in a
# snapshot (--snapshot-every 4), stopped gracefully. Run it with
# the build of the format being frozen (the previous release) and commit
# its output:
#
#   scripts/make-state-fixture.sh ./spillway-OLD cli/tests/fixtures/state-vN
#
# writes state-vN.tar.gz (the host's directory, less caches) and
# state-vN.json (the tokens and what the test expects to find).
set -euo pipefail
bin=$(realpath "$1")
out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" host --init --dir "$work/host" --listen 127.0.0.1:0 --peer-listen 127.0.0.1:0 \
  --slots 2 --snapshot-every 4 --admin-token-file "$work/admin-token" > "$work/stdout" 2> "$work/host.log" &
pid=$!
for _ in $(seq 300); do
  grep -q '^listening on ' "$work/stdout" && break
  sleep 0.1
done
endpoint=$(sed -n 's/^listening on //p' "$work/stdout")
[ -n "$endpoint" ] || { cat "$work/host.log" >&2; exit 1; }
export SPILLWAY_ENDPOINT=$endpoint
export SPILLWAY_TOKEN=$(cat "$work/admin-token")
"$bin" tenant create acme > /dev/null
acme=$(SPILLWAY_TOKEN=$SPILLWAY_TOKEN "$bin" token create --tenant acme --scope publish --scope invoke --scope read --label fixture)
SPILLWAY_TOKEN=$acme "$bin" artifact push upper "$root/examples/guests/uppercase.wat" > /dev/null
SPILLWAY_TOKEN=$acme "$bin" fn create upper --artifact upper > /dev/null
answer=$(printf 'fixture' | SPILLWAY_TOKEN=$acme "$bin" invoke upper)
[ "$answer" = "FIXTURE" ] || { echo "invoke answered $answer" >&2; exit 1; }
kill -TERM "$pid"
wait "$pid" || true
pid=
# Caches a new build remakes, and what only the running host had.
rm -rf "$work/host/node/compiled" "$work/host/node/ptx" "$work/host/node.sock"
tar czf "$out.tar.gz" -C "$work" host
cat > "$out.json" <<JSON
{
  "made_by": "$("$bin" --version), at commit $(git -C "$root" rev-parse --short HEAD)",
  "admin_token": "$SPILLWAY_TOKEN",
  "tenant": "acme",
  "tenant_token": "$acme",
  "function": "upper",
  "input": "fixture",
  "output": "FIXTURE"
}
JSON
echo "wrote $out.tar.gz ($(du -h "$out.tar.gz" | cut -f1)) and $out.json"
