#!/bin/sh
# A sidecar's entry point under an orchestrator (the Helm chart, the Nomad
# job): rejoin the cluster this host's state directory belongs to; on the
# founder's machine, found it; on any other, join it with a ticket made
# through the API with the admin token, which the host itself never gets.
#
# From the environment: HOST_IP, NODE_NAME (this machine), SPILLWAY_FOUNDER
# (the machine that founds), SPILLWAY_POOL, SPILLWAY_STATE (the state
# directory), SPILLWAY_CONFIG (sidecar.toml), SPILLWAY_API_PORT,
# SPILLWAY_PEER_PORT, SPILLWAY_TICKET_ENDPOINT (a member's API, https), and
# for joining SPILLWAY_TOKEN and SPILLWAY_CA. SPILLWAY_ROLE is `sidecar`
# (the default: the node runs apart) or `host` (the sidecar starts the
# node processes itself, as SPILLWAY_CONFIG's `executors` says).
set -eu
state="$SPILLWAY_STATE/sidecar"
set -- "${SPILLWAY_ROLE:-sidecar}" --config "$SPILLWAY_CONFIG" \
  --listen "$HOST_IP:$SPILLWAY_API_PORT" --peer-listen "$HOST_IP:$SPILLWAY_PEER_PORT" \
  --label "machine=$NODE_NAME" --label "pool=$SPILLWAY_POOL"
if [ -f "$state/membership.json" ]; then
  unset SPILLWAY_TOKEN
  exec spillway "$@"
elif [ "$NODE_NAME" = "$SPILLWAY_FOUNDER" ]; then
  unset SPILLWAY_TOKEN
  exec spillway "$@" --init --admin-token-file "$state/admin-token"
fi
: "${SPILLWAY_TOKEN:?no admin token yet: found the cluster, then store its admin token (deploy/kubernetes/README.md, deploy/nomad/README.md)}"
SPILLWAY_JOIN_TICKET=$(spillway ticket create --ttl 10m --endpoint "$SPILLWAY_TICKET_ENDPOINT")
export SPILLWAY_JOIN_TICKET
unset SPILLWAY_TOKEN
exec spillway "$@"
