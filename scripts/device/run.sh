#!/bin/bash
# On the GPU machine, from the repository root, with .device/bin.tar.xz
# carried (scripts/device/pack.sh makes it):
#   scripts/device/run.sh PART...
# PARTs: env (the machine, a wake-up's cost), ab (the no-op GPU job, this
# build's bench against .device/gpu-bench-base, alternating), bench (the
# whole GPU bench), noop3, tests (every GPU test), tenants, demo
# (`spillway up --hosts 1 --executors 0,0 --demo`). Prints a summary and
# the tail of each failing test's log; logs go to $OUT/logs.tgz.
cd "$(dirname "$0")/../.."
ROOT=$PWD
mkdir -p /work && ln -sfn "$ROOT" /work/main
[ -d .device/bin ] || tar -C .device -xJf .device/bin.tar.xz
mkdir -p target/release && cp .device/bin/spillway target/release/
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=$ROOT/target/release:$PATH
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOGS=/tmp/logs; mkdir -p $LOGS
FAILED=""
B=.device/bin
SUMMARY=$OUT/summary.txt
t() { # name, command...
  local name=$1; shift
  local s=$SECONDS
  timeout 280 "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
  local res=$(grep -E "^test result:" "$LOGS/$name.log" | tail -1)
  printf '%-34s rc=%-3s %4ss %s\n' "$name" "$rc" "$((SECONDS - s))" "$res" | tee -a "$SUMMARY"
  if [ "$rc" != 0 ]; then FAILED="$FAILED $name"; fi
}
for part in "$@"; do case $part in
env)
  nvidia-smi -L | tee -a $SUMMARY
  echo "clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" | tee -a $SUMMARY
  nproc | tee -a $SUMMARY
  $B/notify-cost 2>&1 | tee -a $SUMMARY ;;
ab)
  for i in 1 2 3 4; do
    for v in gpu-bench-base gpu-bench; do
      $B/$v noop > $LOGS/ab-$v-$i.log 2>&1
      echo "$v run $i: $(grep -E 'raw cudarc \(to|to its answer|CPU backend' $LOGS/ab-$v-$i.log | sed 's/  */ /g' | tr '\n' '|')" | tee -a $SUMMARY
    done
  done ;;
bench)
  $B/gpu-bench > $LOGS/bench-full.log 2>&1; echo "full bench rc=$?" | tee -a $SUMMARY
  grep -E "torch|x raw|copy|teardown|CPU backend|instances" $LOGS/bench-full.log | tee -a $SUMMARY ;;
tests)
  t node-lib $B/node-lib --test-threads 1 cuda
  t node-gpu $B/node-gpu
  t node-gpu_fault $B/node-gpu_fault
  t node-gpu_pack_fault $B/node-gpu_pack_fault
  t node-gpu_watchdog $B/node-gpu_watchdog --nocapture
  t node-gpu_pools $B/node-gpu_pools
  t node-gpu_isolation $B/node-gpu_isolation --nocapture
  t node-suite $B/node-suite --skip toolchains
  t cli-gpu_tenants $B/cli-suite gpu_tenants:: --nocapture
  t cli-gpu_executors $B/cli-suite gpu_executors:: --nocapture
  t cli-executors $B/cli-suite executors::
  t cli-gpu_fault $B/cli-suite gpu_fault::
  t cli-gpu_weights $B/cli-suite gpu_weights::
  t cli-http_api $B/cli-suite http_api::
  t cli-tokens $B/cli-suite tokens::kernel
  # Two or more GPUs only (each skips, saying so, with fewer):
  t cli-gpu_burst $B/cli-suite gpu_burst:: --nocapture ;;
noop3)
  for i in 1 2 3; do
    $B/gpu-bench noop > $LOGS/noop-$i.log 2>&1
    echo "gpu-bench noop run $i: $(grep -E 'raw cudarc|to its answer|teardown|CPU backend' $LOGS/noop-$i.log | sed 's/  */ /g' | tr '\n' '|')" | tee -a $SUMMARY
  done ;;
tenants)
  t cli-gpu_tenants $B/cli-suite gpu_tenants:: --nocapture
  t node-lib $B/node-lib --test-threads 1 cuda ;;
demo)
  t demo-0-0 timeout 240 spillway up --hosts 1 --executors 0,0 --demo
  [ "$(spillway gpu-count 2>/dev/null || echo 1)" -ge 2 ] && t demo-pinned timeout 240 spillway up --hosts 2 --pin-gpus --demo
  tail -5 $LOGS/demo-0-0.log | tee -a $SUMMARY ;;
esac; done
echo "=== summary"; cat $SUMMARY
for f in $FAILED; do echo "=== $f"; grep -v "^test .* ok$" $LOGS/$f.log | tail -60; done
tar -C /tmp -czf $OUT/logs.tgz logs
