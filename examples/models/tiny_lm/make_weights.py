#!/usr/bin/env python3
"""Makes the weights of Spillway's example language model, deterministically
from a seed, as one safetensors file (numpy only).

    python3 make_weights.py tiny-lm.safetensors                 # 2 layers, 0.4 MB
    python3 make_weights.py --preset bench bench-lm.safetensors # 8 layers, 380 MB
    python3 make_weights.py --seed 7 other.safetensors          # other weights, same shape

The model is a Llama-shaped decoder over bytes (vocabulary 256, a token is a
byte of UTF-8): an embedding, `layers` blocks of RMSNorm, grouped-query
attention with rotary positions and a SwiGLU feed-forward, a final RMSNorm
and an output projection. Its hyperparameters travel in the file's
`__metadata__`, where the guest (guest/lm.py) and the reference
(reference.py) read them. Matrices are stored [in, out] (y = x . W), f32,
little-endian; the weights are uniform in +-1/sqrt(fan_in) (PyTorch's
default for a linear layer) from numpy's PCG64 generator with the seed, the
output projection four times wider so that greedy decoding has clear
winners, and a tenth as wide for bytes outside printable ASCII, so that it
mostly writes text.
"""

import argparse
import json
import struct

import numpy as np

PRESETS = {
    "tiny": dict(vocab=256, dim=64, layers=2, heads=4, kv_heads=2, head_dim=16, ffn=128, max_seq=256),
    "bench": dict(vocab=256, dim=1024, layers=8, heads=16, kv_heads=8, head_dim=64, ffn=2816, max_seq=512),
}
ROPE_THETA = 10000.0
NORM_EPS = 1e-5


def tensors(config: dict, seed: int) -> dict:
    """The model's tensors by name, made in a fixed order from `seed`."""
    rng = np.random.Generator(np.random.PCG64(seed))

    def uniform(shape, bound):
        return ((rng.random(shape) * 2.0 - 1.0) * bound).astype("<f4")

    dim, heads, kv, hd, ffn = (config[k] for k in ("dim", "heads", "kv_heads", "head_dim", "ffn"))
    out = {"embed": uniform((config["vocab"], dim), 3**0.5)}
    for i in range(config["layers"]):
        p = f"layers.{i}."
        out[p + "attn_norm"] = (1.0 + uniform((dim,), 0.1)).astype("<f4")
        out[p + "wq"] = uniform((dim, heads * hd), dim**-0.5)
        out[p + "wk"] = uniform((dim, kv * hd), dim**-0.5)
        out[p + "wv"] = uniform((dim, kv * hd), dim**-0.5)
        out[p + "wo"] = uniform((heads * hd, dim), (heads * hd) ** -0.5)
        out[p + "ffn_norm"] = (1.0 + uniform((dim,), 0.1)).astype("<f4")
        out[p + "w_gate"] = uniform((dim, ffn), dim**-0.5)
        out[p + "w_up"] = uniform((dim, ffn), dim**-0.5)
        out[p + "w_down"] = uniform((ffn, dim), ffn**-0.5)
    out["norm"] = (1.0 + uniform((dim,), 0.1)).astype("<f4")
    lm_head = uniform((dim, config["vocab"]), 4 * dim**-0.5)
    # Tokens outside printable ASCII get a tenth of the weight, so the
    # model mostly writes text (a byte-level model may write any byte).
    printable = np.zeros(config["vocab"], dtype=bool)
    printable[32:127] = True
    lm_head[:, ~printable] *= 0.1
    out["lm_head"] = lm_head.astype("<f4")
    return out


def metadata(config: dict, seed: int) -> dict:
    meta = {k: str(v) for k, v in config.items()}
    meta.update(
        architecture="spillway-tiny-lm",
        tokenizer="bytes",
        rope_theta=str(ROPE_THETA),
        norm_eps=str(NORM_EPS),
        seed=str(seed),
    )
    return meta


def write_safetensors(path: str, named: dict, meta: dict) -> None:
    """The safetensors layout: a little-endian u64 header length, the JSON
    header (padded with spaces to 8 bytes), then the tensors' bytes."""
    header, offset = {"__metadata__": meta}, 0
    for name in sorted(named):
        size = named[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(named[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        for name in sorted(named):
            f.write(named[name].tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="the safetensors file to write")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = PRESETS[args.preset]
    named = tensors(config, args.seed)
    write_safetensors(args.output, named, metadata(config, args.seed))
    params = sum(t.size for t in named.values())
    print(f"wrote {args.output}: {args.preset}, seed {args.seed}, {params} parameters, {len(named)} tensors")


if __name__ == "__main__":
    main()
