// A Spillway guest in JavaScript: multiplies two matrices on the host's GPU
// (or the CPU reference backend) and answers in JSON, like
// ../python/matmul.py.
//
// Input: a JSON object {"m", "n", "k", "a", "b"} (row-major); an empty
// input multiplies a 2x3 by a 3x2 example.
// Output: {"c": [...], "m", "n", "backend", "device", "engine"}.
//
// Build: npx componentize-js --wit ../../../wit --world-name job-guest -o matmul.wasm matmul.js
// (see ../build.sh, which the tests run).

import { log } from 'spillway:runtime/job@0.1.0';
import { Buffer, gemm, deviceInfo } from 'spillway:runtime/gpu@0.1.0';

const EXAMPLE = { m: 2, n: 2, k: 3, a: [1, 2, 3, 4, 5, 6], b: [7, 8, 9, 10, 11, 12] };

function buffer(values) {
  const buf = Buffer.create(values.length);
  buf.write(0, Float32Array.from(values));
  return buf;
}

function gpuError(e) {
  // A `result` error from an import is thrown with the error in `payload`.
  const p = e && e.payload;
  return p ? `gpu: ${p.code}: ${p.message}` : `gpu: ${e}`;
}

export function run(input) {
  const text = new TextDecoder().decode(input);
  let spec;
  try {
    spec = text.trim() === '' ? EXAMPLE : JSON.parse(text);
  } catch (e) {
    throw `input must be JSON with m, n, k, a and b: ${e}`;
  }
  const { m, n, k, a, b } = spec;
  if (!Array.isArray(a) || !Array.isArray(b) || a.length !== m * k || b.length !== k * n) {
    throw `a needs m*k=${m * k} values and b k*n=${k * n}`;
  }
  log('info', `matmul ${m}x${k} by ${k}x${n}`);
  console.log(`javascript multiplying`);
  let c;
  try {
    const ba = buffer(a);
    const bb = buffer(b);
    const bc = Buffer.create(m * n);
    gemm(m, n, k, 1.0, ba, bb, 0.0, bc);
    c = Array.from(bc.read(0, m * n));
  } catch (e) {
    throw gpuError(e);
  }
  const device = deviceInfo();
  return new TextEncoder().encode(
    JSON.stringify({ m, n, c, backend: device.backend, device: device.name, engine: 'starlingmonkey' }),
  );
}
