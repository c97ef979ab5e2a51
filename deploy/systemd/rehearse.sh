#!/usr/bin/env bash
# Follows deploy/systemd/README.md as a new user would, on three network
# namespaces standing in for machines A (10.0.0.1), B (10.0.0.2) and C
# (10.0.0.3) joined by a bridge: the guide's openssl commands make the CA
# and the hosts' certificates, host.toml.example is edited as the guide
# says, each host is started with the unit's ExecStart command line (and B
# and C with host.env's join ticket), tickets are made with the CLI over
# TLS, and `spillway status` must show three members, one leader, all
# healthy; then a function is published and invoked over TLS.
#
# What it cannot do here: run systemd (no init system in this sandbox), so
# the unit's user, hardening and restart policy are checked by
# `systemd-analyze verify` (deploy/check.sh), not exercised; files go under
# a temporary root instead of /etc and /var/lib.
#
# Needs root (network namespaces), ip, openssl. Usage:
#   deploy/systemd/rehearse.sh [SPILLWAY_BINARY]
set -euo pipefail
root_dir=$(cd "$(dirname "$0")/../.." && pwd)
guide="$root_dir/deploy/systemd/README.md"
unit="$root_dir/deploy/systemd/spillway-host.service"
bin=$(realpath "${1:-$root_dir/target/debug/spillway}")
tag="swg$$"
fake=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for i in 1 2 3; do ip netns del "${tag}h$i" 2>/dev/null || true; done
  ip link del "${tag}br" 2>/dev/null || true
  rm -rf "$fake"
}
trap cleanup EXIT
fail() { echo "rehearse: $*" >&2; exit 1; }

# The steps below are the guide's: each command taken from it must still
# be in it, word for word.
in_guide() { grep -qF -- "$1" "$guide" || fail "the guide no longer says: $1"; }

# Three machines on one network.
ip link add "${tag}br" type bridge
ip link set "${tag}br" up
for i in 1 2 3; do
  ns="${tag}h$i"
  ip netns add "$ns"
  ip link add "${tag}v$i" type veth peer name eth0 netns "$ns"
  ip link set "${tag}v$i" master "${tag}br" up
  ip -n "$ns" addr add "10.0.0.$i/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done
on() { local i=$1; shift; ip netns exec "${tag}h$i" "$@"; }

# "On every machine": the binary and the configuration folders (under a
# temporary root for each machine).
in_guide 'spillway completions bash | sudo tee /usr/share/bash-completion/completions/spillway > /dev/null'
in_guide 'sudo spillway man --out /usr/local/share/man/man1'
for i in 1 2 3; do
  m="$fake/m$i"
  install -d -m 0755 "$m/usr/local/bin" "$m/etc/spillway" "$m/usr/share/bash-completion/completions"
  install -d -m 0750 "$m/etc/spillway/tls"
  install -d -m 0700 "$m/var/lib/spillway"
  install -m 0755 "$bin" "$m/usr/local/bin/spillway"
  "$m/usr/local/bin/spillway" completions bash > "$m/usr/share/bash-completion/completions/spillway"
  "$m/usr/local/bin/spillway" man --out "$m/usr/local/share/man/man1" > /dev/null
  [ -s "$m/usr/local/share/man/man1/spillway-host.1" ] || fail "no man page for spillway host"
done

# "Certificates for the API", on a machine that keeps the CA's key.
ca="$fake/ca"
mkdir -p "$ca"
cmd_ca='openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650'
in_guide "$cmd_ca"
in_guide 'openssl x509 -req -in a.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825'
(
  cd "$ca"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=spillway CA" -keyout ca.key -out ca.pem 2>/dev/null
  names=(x a b c)
  for i in 1 2 3; do
    h=${names[$i]}
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -subj "/CN=spillway-$h" -keyout "$h.key" -out "$h.csr" 2>/dev/null
    printf 'subjectAltName=IP:10.0.0.%s,DNS:spillway-%s\nextendedKeyUsage=serverAuth\n' "$i" "$h" > "$h.ext"
    openssl x509 -req -in "$h.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
      -extfile "$h.ext" -out "$h.crt" 2>/dev/null
    install -m 0644 "$h.crt" "$fake/m$i/etc/spillway/tls/host.crt"
    install -m 0640 "$h.key" "$fake/m$i/etc/spillway/tls/host.key"
  done
)
export SPILLWAY_CA="$ca/ca.pem"
in_guide 'export SPILLWAY_CA=$PWD/ca.pem'

# The unit's command line, as systemd would run it on machine i.
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
[ "$exec_start" = "/usr/local/bin/spillway host --config /etc/spillway/host.toml" ] ||
  fail "the unit's ExecStart changed: $exec_start"
start_host() {
  local i=$1 m="$fake/m$1"
  (
    # EnvironmentFile=-/etc/spillway/host.env
    if [ -f "$m/etc/spillway/host.env" ]; then set -a; . "$m/etc/spillway/host.env"; set +a; fi
    exec ip netns exec "${tag}h$i" "$m/usr/local/bin/spillway" host --config "$m/etc/spillway/host.toml"
  ) > "$fake/host$i.out" 2> "$fake/host$i.log" &
  pids+=($!)
  for _ in $(seq 300); do
    grep -q '^listening on https://10.0.0' "$fake/host$i.out" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$fake/host$i.log" >&2; fail "host $i exited"; }
    sleep 0.1
  done
  cat "$fake/host$i.log" >&2
  fail "host $i did not serve"
}

# host.toml from the example, edited as the guide says; paths moved under
# the machine's temporary root.
host_toml() {
  local i=$1 m="$fake/m$1"
  sed -e "s#10\.0\.0\.1#10.0.0.$i#g" \
      -e "s#/etc/spillway#$m/etc/spillway#g" \
      -e "s#/var/lib/spillway#$m/var/lib/spillway#g" \
      "$root_dir/deploy/systemd/host.toml.example" > "$m/etc/spillway/host.toml"
}

# "A: found the cluster".
in_guide '# edit: listen and peer-listen (10.0.0.1), slots, label; keep init = true'
host_toml 1
"$bin" config check "$fake/m1/etc/spillway/host.toml" > /dev/null
start_host 1
token_file="$fake/m1/var/lib/spillway/admin-token"
[ -s "$token_file" ] || fail "no admin token at $token_file"
[ "$(stat -c %a "$token_file")" = 600 ] || fail "the admin token file is not 0600"
grep -q 'admin token written to' "$fake/host1.out" || fail "host 1 did not say where the token went"
if grep -q 'swt_' "$fake/host1.out" "$fake/host1.log"; then fail "the admin token reached the host's output"; fi
export SPILLWAY_TOKEN
SPILLWAY_TOKEN=$(cat "$token_file")
rm "$token_file"
export SPILLWAY_ENDPOINT=https://10.0.0.1:7070
in_guide 'export SPILLWAY_ENDPOINT=https://10.0.0.1:7070 SPILLWAY_TOKEN=swt_… SPILLWAY_CA=$PWD/ca.pem'

# "B and C: join".
in_guide '# edit: listen and peer-listen (10.0.0.2), slots, label; delete init and admin-token-file'
in_guide 'spillway ticket create            # prints the ticket'
for i in 2 3; do
  m="$fake/m$i"
  host_toml "$i"
  sed -i -e '/^init = true$/d' -e '/^admin-token-file = /d' "$m/etc/spillway/host.toml"
  ticket=$(on 1 "$bin" ticket create 2>/dev/null)
  sed "s#^SPILLWAY_JOIN_TICKET=.*#SPILLWAY_JOIN_TICKET=$ticket#" \
    "$root_dir/deploy/systemd/host.env.example" > "$m/etc/spillway/host.env"
  chmod 0600 "$m/etc/spillway/host.env"
  start_host "$i"
done

# "Check": three members, one leader, all healthy (seen from C).
for _ in $(seq 150); do
  status=$(SPILLWAY_ENDPOINT=https://10.0.0.3:7070 on 3 "$bin" status 2>&1 || true)
  ok=$(printf '%s\n' "$status" | grep -cE '^n[0-9]+ +(leader|voter|learner) +active +ok' || true)
  leaders=$(printf '%s\n' "$status" | grep -cE '^n[0-9]+ +leader ' || true)
  [ "$ok" = 3 ] && [ "$leaders" = 1 ] && break
  sleep 0.2
done
[ "$ok" = 3 ] && [ "$leaders" = 1 ] || fail "spillway status: $status"
# And the tour's first steps, over TLS, through B.
export SPILLWAY_ENDPOINT=https://10.0.0.2:7070
on 2 "$bin" artifact push upper "$root_dir/examples/guests/uppercase.wat" > /dev/null
on 2 "$bin" fn create upper --artifact upper > /dev/null
answer=$(printf 'rehearsed' | on 3 env SPILLWAY_ENDPOINT=https://10.0.0.3:7070 "$bin" invoke upper)
[ "$answer" = REHEARSED ] || fail "invoke answered: $answer"
echo "deploy/systemd: the guide followed on three network namespaces: a CA and host certificates with openssl, A founded from host.toml (token to a file), B and C joined with tickets in host.env, status shows three healthy members and one leader over TLS, a function published and invoked"
