"""A Spillway guest in Python: multiplies two matrices on the host's GPU
(or the CPU reference backend) and answers in JSON.

Input: a JSON object {"m", "n", "k", "a", "b"} with `a` (m*k) and `b` (k*n)
in row-major order; an empty input multiplies a 2x3 by a 3x2 example.
Output: {"c": [...], "m", "n", "backend", "device", "python"}.

Build: componentize-py -d ../../../wit -w job-guest componentize matmul -o matmul.wasm
(see examples/guests/build.sh, which the tests run).
"""

import json
import sys

import wit_world
from componentize_py_types import Err
from wit_world.imports import gpu, job

EXAMPLE = {"m": 2, "n": 2, "k": 3, "a": [1, 2, 3, 4, 5, 6], "b": [7, 8, 9, 10, 11, 12]}


def buffer(values):
    buf = gpu.Buffer.create(len(values))
    buf.write(0, [float(v) for v in values])
    return buf


class WitWorld(wit_world.WitWorld):
    def run(self, input: bytes) -> bytes:
        try:
            spec = json.loads(input) if input.strip() else EXAMPLE
            m, n, k = int(spec["m"]), int(spec["n"]), int(spec["k"])
            a, b = spec["a"], spec["b"]
        except (ValueError, KeyError, TypeError) as e:
            raise Err(f"input must be JSON with m, n, k, a and b: {e}")
        if len(a) != m * k or len(b) != k * n:
            raise Err(f"a needs m*k={m * k} values and b k*n={k * n}; got {len(a)} and {len(b)}")
        job.log(job.Level.INFO, f"matmul {m}x{k} by {k}x{n}")
        print(f"python {sys.version_info.major}.{sys.version_info.minor} multiplying", flush=True)
        try:
            with buffer(a) as ba, buffer(b) as bb, gpu.Buffer.create(m * n) as bc:
                gpu.gemm(m, n, k, 1.0, ba, bb, 0.0, bc)
                c = bc.read(0, m * n)
        except Err as e:
            raise Err(f"gpu: {e.value.code.name}: {e.value.message}")
        device = gpu.device_info()
        return json.dumps(
            {
                "m": m,
                "n": n,
                "c": c,
                "backend": device.backend.name.lower(),
                "device": device.name,
                "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            }
        ).encode()
