#!/usr/bin/env python3
"""A tiny weights file for trying `gpu.weights` by hand, with the Python
standard library only (no numpy or torch): one f32 tensor `proj` of 4x3,
row-major, values 0.0, 0.5, 1.0, ..., 5.5, written as safetensors (a
little-endian u64 header length, the JSON header padded to 8 bytes, then
the tensor's bytes).

    python3 examples/weights/tiny.py /tmp/tiny.safetensors   # the weights
    python3 examples/weights/tiny.py --input 1 0 0 1          # weights_gemm's input for x

`--input X...` writes to stdout the input `examples/guests/weights_gemm.wat`
takes for the row vector x (4 values): the weights' name (`tiny`), the
tensor's (`proj`), n = 3, k = 4, then x. The job answers x·proj as three
little-endian f32.
"""

import json
import struct
import sys

ROWS, COLS = 4, 3


def weights() -> bytes:
    values = [i / 2 for i in range(ROWS * COLS)]
    data = struct.pack(f"<{len(values)}f", *values)
    header = json.dumps(
        {"proj": {"dtype": "F32", "shape": [ROWS, COLS], "data_offsets": [0, len(data)]}},
        separators=(",", ":"),
    )
    header += " " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header.encode() + data


def job_input(x: list) -> bytes:
    if len(x) != ROWS:
        sys.exit(f"x must have {ROWS} values")
    name = lambda s: struct.pack("<I", len(s)) + s.encode()
    return name("tiny") + name("proj") + struct.pack("<II", COLS, ROWS) + struct.pack(f"<{ROWS}f", *x)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--input":
        sys.stdout.buffer.write(job_input([float(v) for v in sys.argv[2:]]))
    elif len(sys.argv) == 2:
        with open(sys.argv[1], "wb") as f:
            f.write(weights())
    else:
        sys.exit(__doc__)
