#!/usr/bin/env python3
"""The example language model in numpy, in float64: the reference the guest
(guest/lm.py, run by Spillway over the `gpu` interface) must agree with.

    python3 reference.py tiny-lm.safetensors --prompt "Spillway " --max-tokens 16

prints JSON: {"tokens": [...], "text": ..., "prompt_tokens": N,
"min_margin": M}. Decoding is greedy; `min_margin` is the smallest gap
between the best and second-best logit over the steps, so a reader can see
how far from a tie each choice was (the guest computes in f32, this in
f64; with gaps far above f32's rounding both must pick the same tokens).

The same model as the guest, written independently of it: RMSNorm
(x / sqrt(mean(x^2) + eps) * w), grouped-query causal attention with
rotary positions (the two halves of each head rotated by
pos * theta^(-2i/head_dim)), SwiGLU (silu(x.Wg) * (x.Wu)) . Wd, residual
connections around both, a final RMSNorm and the output projection; the
weights and hyperparameters come from the safetensors file.
"""

import argparse
import json
import struct

import numpy as np

DTYPES = {"F32": "<f4", "F16": "<f2"}


def load(path: str):
    """The file's tensors (as float64) and its metadata."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        raw = np.frombuffer(data[base + start : base + end], dtype=DTYPES[info["dtype"]])
        tensors[name] = raw.reshape(info["shape"]).astype(np.float64)
    return tensors, meta


class Model:
    def __init__(self, tensors: dict, meta: dict):
        self.t = tensors
        ints = ("vocab", "dim", "layers", "heads", "kv_heads", "head_dim", "ffn", "max_seq")
        for key in ints:
            setattr(self, key, int(meta[key]))
        self.theta = float(meta["rope_theta"])
        self.eps = float(meta["norm_eps"])
        shape = (self.layers, self.max_seq, self.kv_heads, self.head_dim)
        self.k_cache, self.v_cache = np.zeros(shape), np.zeros(shape)

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos0):
        """x: [rows, heads, head_dim]; row r is at position pos0 + r."""
        half = self.head_dim // 2
        inv = self.theta ** (-2.0 * np.arange(half) / self.head_dim)
        angle = (pos0 + np.arange(x.shape[0]))[:, None] * inv[None, :]
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def attention(self, q, layer, pos0):
        """q: [rows, heads, head_dim] over the cache's keys 0..=pos."""
        rows, group = q.shape[0], self.heads // self.kv_heads
        out = np.zeros_like(q)
        for r in range(rows):
            seen = pos0 + r + 1
            for h in range(self.heads):
                k = self.k_cache[layer, :seen, h // group]
                v = self.v_cache[layer, :seen, h // group]
                s = k @ q[r, h] / np.sqrt(self.head_dim)
                p = np.exp(s - s.max())
                out[r, h] = (p / p.sum()) @ v
        return out

    def forward(self, ids: list, pos0: int):
        """The logits after the last of `ids`, which sit at pos0, pos0+1, ..."""
        t, rows = self.t, len(ids)
        x = t["embed"][ids]
        for i in range(self.layers):
            p = f"layers.{i}."
            h = self.rmsnorm(x, t[p + "attn_norm"])
            q = self.rope((h @ t[p + "wq"]).reshape(rows, self.heads, self.head_dim), pos0)
            k = self.rope((h @ t[p + "wk"]).reshape(rows, self.kv_heads, self.head_dim), pos0)
            v = (h @ t[p + "wv"]).reshape(rows, self.kv_heads, self.head_dim)
            self.k_cache[i, pos0 : pos0 + rows] = k
            self.v_cache[i, pos0 : pos0 + rows] = v
            att = self.attention(q, i, pos0).reshape(rows, self.heads * self.head_dim)
            x = x + att @ t[p + "wo"]
            h = self.rmsnorm(x, t[p + "ffn_norm"])
            g, u = h @ t[p + "w_gate"], h @ t[p + "w_up"]
            x = x + (g / (1.0 + np.exp(-g)) * u) @ t[p + "w_down"]
        return self.rmsnorm(x[-1], t["norm"]) @ t["lm_head"]


def chat_prompt(messages: list) -> str:
    """A conversation as the model reads it (as guest/lm.py makes it):
    "ROLE: CONTENT\\n" per message, then "assistant: "."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def generate(path: str, prompt: bytes, max_tokens: int) -> dict:
    model = Model(*load(path))
    ids = list(prompt)
    if not ids or len(ids) >= model.max_seq:
        raise SystemExit(f"the prompt must be 1 to {model.max_seq - 1} bytes")
    logits, out, margins = model.forward(ids, 0), [], []
    while len(out) < max_tokens:
        order = np.argsort(logits)
        best = int(order[-1])
        margins.append(float(logits[best] - logits[order[-2]]))
        out.append(best)
        pos = len(ids) + len(out) - 1
        if pos + 1 >= model.max_seq or len(out) == max_tokens:
            break
        logits = model.forward([best], pos)
    return {
        "tokens": out,
        "text": bytes(out).decode("utf-8", "replace"),
        "prompt_tokens": len(ids),
        "min_margin": min(margins) if margins else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--prompt", default="Spillway ")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(generate(args.weights, args.prompt.encode(), args.max_tokens)))


if __name__ == "__main__":
    main()
