#!/usr/bin/env python3
"""The example model in PyTorch (eager, f32, on CUDA), as a peer for
`spillway bench model`: the same weights, prompt and greedy decoding with a
key/value cache, timed the same way (first-token latency: a one-token
generation; decode rate: a `--tokens` generation less a one-token one,
medians of `--runs`). Prints its tokens so they can be compared with the
guest's. Needs torch, numpy and a GPU; not run by the tests.

    python3 torch_bench.py bench.safetensors --tokens 64 --runs 5
"""

import argparse
import json
import statistics
import time

import torch

from reference import load


class TorchModel:
    def __init__(self, path: str, device: str):
        tensors, meta = load(path)
        self.t = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in tensors.items()}
        for key in ("vocab", "dim", "layers", "heads", "kv_heads", "head_dim", "ffn", "max_seq"):
            setattr(self, key, int(meta[key]))
        self.theta, self.eps, self.device = float(meta["rope_theta"]), float(meta["norm_eps"]), device
        half = self.head_dim // 2
        self.inv = self.theta ** (-2.0 * torch.arange(half, dtype=torch.float64, device=device) / self.head_dim)

    def rmsnorm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x, pos0):
        half = self.head_dim // 2
        angle = (pos0 + torch.arange(x.shape[0], device=self.device, dtype=torch.float64))[:, None] * self.inv
        cos, sin = angle.cos().float()[:, None, :], angle.sin().float()[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    @torch.inference_mode()
    def generate(self, ids, max_tokens):
        t, group = self.t, self.heads // self.kv_heads
        shape = (self.layers, self.max_seq, self.kv_heads, self.head_dim)
        kc = torch.zeros(shape, device=self.device)
        vc = torch.zeros(shape, device=self.device)

        def forward(tokens, pos0):
            rows = len(tokens)
            x = t["embed"][torch.tensor(tokens, device=self.device)]
            mask = torch.full((rows, pos0 + rows), float("-inf"), device=self.device)
            mask = torch.triu(mask, diagonal=pos0 + 1)
            for i in range(self.layers):
                p = f"layers.{i}."
                h = self.rmsnorm(x, t[p + "attn_norm"])
                q = self.rope((h @ t[p + "wq"]).view(rows, self.heads, self.head_dim), pos0)
                k = self.rope((h @ t[p + "wk"]).view(rows, self.kv_heads, self.head_dim), pos0)
                kc[i, pos0 : pos0 + rows] = k
                vc[i, pos0 : pos0 + rows] = (h @ t[p + "wv"]).view(rows, self.kv_heads, self.head_dim)
                keys = kc[i, : pos0 + rows].repeat_interleave(group, 1)
                values = vc[i, : pos0 + rows].repeat_interleave(group, 1)
                s = torch.einsum("rhd,khd->hrk", q, keys) / self.head_dim**0.5 + mask
                att = torch.einsum("hrk,khd->rhd", s.softmax(-1), values).reshape(rows, -1)
                x = x + att @ t[p + "wo"]
                h = self.rmsnorm(x, t[p + "ffn_norm"])
                g = h @ t[p + "w_gate"]
                x = x + (torch.nn.functional.silu(g) * (h @ t[p + "w_up"])) @ t[p + "w_down"]
            return self.rmsnorm(x[-1], t["norm"]) @ t["lm_head"]

        logits, out = forward(ids, 0), []
        while len(out) < max_tokens:
            out.append(int(logits.argmax()))
            pos = len(ids) + len(out) - 1
            if pos + 1 >= self.max_seq or len(out) == max_tokens:
                break
            logits = forward([out[-1]], pos)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("--prompt", default="Spillway ")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    model = TorchModel(args.weights, "cuda")
    ids = list(args.prompt.encode())

    def timed(n):
        torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = model.generate(ids, n)
        torch.cuda.synchronize()
        return time.perf_counter() - start, tokens

    timed(args.tokens)  # warm-up: kernels, allocator
    first = statistics.median(timed(1)[0] for _ in range(args.runs))
    long = statistics.median(timed(args.tokens)[0] for _ in range(args.runs))
    tokens = timed(args.tokens)[1]
    print(f"torch {torch.__version__} eager f32 on {torch.cuda.get_device_name()}:"
          f" first_token_ms {first * 1e3:.1f}, decode_tok/s {(args.tokens - 1) / (long - first):.1f}")
    print(json.dumps({"tokens": tokens}))


if __name__ == "__main__":
    main()
