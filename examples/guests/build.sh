#!/usr/bin/env bash
# Builds the example guests written in Python and JavaScript from source
# into OUT (default: target/guests), with the toolchains from PyPI and npm:
#   componentize-py (pip install componentize-py==0.25.1)
#   componentize-js (npm ci in examples/guests/javascript)
# A guest is rebuilt only when its source or wit/ is newer than its
# component. scripts/test installs the toolchains and runs this first.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/target/guests}
mkdir -p "$out"

stale() { # stale OUTPUT SOURCE...: whether OUTPUT is missing or older
  local output=$1; shift
  [ -e "$output" ] || return 0
  for s in "$@" "$root"/wit/*.wit; do
    [ "$s" -nt "$output" ] && return 0
  done
  return 1
}

# The console script, or the module where pip put the script off PATH.
componentize_py() {
  if command -v componentize-py >/dev/null; then
    componentize-py "$@"
  else
    python3 -c 'import sys; from componentize_py import script; sys.argv[0] = "componentize-py"; sys.exit(script())' "$@"
  fi
}
python3 -c 'import componentize_py' 2>/dev/null || command -v componentize-py >/dev/null || {
  echo "componentize-py is not installed: pip install componentize-py==0.25.1 (scripts/test does)" >&2
  exit 1
}
cd "$root/examples/guests/python"
for guest in matmul probe tensor; do
  if stale "$out/$guest-py.wasm" "$guest.py"; then
    echo "building $guest-py.wasm (componentize-py)"
    componentize_py -d "$root/wit" -w job-guest componentize "$guest" -o "$out/$guest-py.wasm.tmp" >/dev/null
    mv "$out/$guest-py.wasm.tmp" "$out/$guest-py.wasm"
  fi
done

# The example language model's guest (examples/models/tiny_lm).
cd "$root/examples/models/tiny_lm/guest"
if stale "$out/tiny-lm-py.wasm" lm.py; then
  echo "building tiny-lm-py.wasm (componentize-py)"
  componentize_py -d "$root/wit" -w job-guest componentize lm -o "$out/tiny-lm-py.wasm.tmp" >/dev/null
  mv "$out/tiny-lm-py.wasm.tmp" "$out/tiny-lm-py.wasm"
fi

cd "$root/examples/guests/javascript"
[ -x node_modules/.bin/componentize-js ] || {
  echo "componentize-js is not installed: npm ci in examples/guests/javascript (scripts/test does)" >&2
  exit 1
}
for guest in matmul; do
  if stale "$out/$guest-js.wasm" "$guest.js"; then
    echo "building $guest-js.wasm (componentize-js)"
    node_modules/.bin/componentize-js --wit "$root/wit" --world-name job-guest \
      -o "$out/$guest-js.wasm.tmp" "$guest.js" >/dev/null
    mv "$out/$guest-js.wasm.tmp" "$out/$guest-js.wasm"
  fi
done
ls -la "$out"/*.wasm
