#!/bin/bash
# Builds, on the build machine, the release binaries the GPU machine runs
# (which has no Rust toolchain) and packs them, stripped, into
# .device/bin.tar.xz (ignored by git: add `.device/` to .git/info/exclude).
# Carry that file to the device (the `device` tool's `carry`, 64 MiB in
# all) and run scripts/device/run.sh there; docs/gpu.md, "Running them on
# a GPU machine". A binary to compare with (an earlier commit's gpu bench)
# goes in as .device/gpu-bench-base if present.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .device/bin && mkdir -p .device/bin
list() { python3 -c '
import json,sys
for l in sys.stdin:
    try: m=json.loads(l)
    except Exception: continue
    if m.get("reason")=="compiler-artifact" and m.get("executable"): print(m["target"]["name"], m["target"]["kind"][0], m["profile"]["test"], m["manifest_path"].split("/")[-2], m["executable"])
'; }
cargo test --release --no-run -p spillway-node -p spillway --message-format=json | list > .device/tests.list
cargo bench -p spillway-node --bench gpu --no-run --message-format=json | list > .device/bench.list
cargo build --release -p spillway
while read -r name kind test crate exe; do
  case "$name/$kind/${test,,}" in
    spillway_node/lib/true) cp "$exe" .device/bin/node-lib ;;
    suite/test/true) cp "$exe" ".device/bin/$crate-suite" ;;
    gpu/bench/*) cp "$exe" .device/bin/gpu-bench ;;
    gpu/test/true|gpu_fault/test/true|gpu_pack_fault/test/true|gpu_watchdog/test/true|gpu_pools/test/true|gpu_isolation/test/true) cp "$exe" ".device/bin/node-$name" ;;
  esac
done < <(cat .device/tests.list .device/bench.list)
cp target/release/spillway .device/bin/
if [ -f .device/gpu-bench-base ]; then cp .device/gpu-bench-base .device/bin/; fi
rustc -O scripts/notify_cost.rs -o .device/bin/notify-cost
strip .device/bin/*
ls -la .device/bin
# One solid stream with a large dictionary: the test binaries share most
# of their code, so this is about 26 MB where `tar -J` makes 63.
tar -C .device -cf - bin | xz -T2 -9 --lzma2=dict=256MiB > .device/bin.tar.xz.part
mv .device/bin.tar.xz.part .device/bin.tar.xz
ls -la .device/bin.tar.xz
