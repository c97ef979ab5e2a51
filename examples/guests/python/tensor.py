"""A Spillway guest in Python that reads the weights its function names:
it opens one tensor as a resident buffer, reports its shape, dtype and
values, and multiplies a row vector by it on the host's GPU (or the CPU
reference backend) with `gemm`, the tensor read where it is resident.

Input: JSON {"weights": NAME, "tensor": NAME, "x": [...] (optional: a row
vector as long as the tensor's first dimension), "write": bool (optional:
also try to write into the tensor, which must be refused)}.
Output: JSON {"shape", "dtype", "writable", "values", "xw" (when "x" was
given), "write" (when asked: the refusal's code and message)}.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import gpu


def refusal(f):
    try:
        f()
        return {"refused": False}
    except Err as e:
        return {"refused": True, "code": e.value.code.name.lower(), "message": e.value.message}


class WitWorld(wit_world.WitWorld):
    def run(self, input: bytes) -> bytes:
        try:
            spec = json.loads(input)
            name, tensor = spec["weights"], spec["tensor"]
        except (ValueError, KeyError, TypeError) as e:
            raise Err(f"input must be JSON with weights and tensor: {e}")
        try:
            with gpu.weights(name, tensor) as w:
                shape = list(w.shape())
                answer = {
                    "shape": shape,
                    "dtype": w.dtype().name.lower(),
                    "writable": w.writable(),
                    "values": w.read(0, w.len()),
                }
                if "x" in spec:
                    x = [float(v) for v in spec["x"]]
                    k = shape[0]
                    n = w.len() // k
                    with gpu.Buffer.create(len(x)) as bx, gpu.Buffer.create(n) as out:
                        bx.write(0, x)
                        gpu.gemm(1, n, k, 1.0, bx, w, 0.0, out)
                        answer["xw"] = out.read(0, n)
                if spec.get("write"):
                    answer["write"] = refusal(lambda: w.write(0, [0.0]))
        except Err as e:
            raise Err(f"gpu: {e.value.code.name.lower()}: {e.value.message}")
        return json.dumps(answer).encode()
