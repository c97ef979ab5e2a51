"""Spillway's example language model as a guest: greedy decoding of the
model in ../make_weights.py, on the host's GPU or the CPU reference backend,
with every weight read where it is resident (`gpu.weights`), never copied
into the guest.

Input: JSON {"prompt": TEXT, "max_tokens": N (default 16), "weights": NAME
(default "tiny-lm": the name the function's weights were pushed under)}.
Output: JSON {"tokens": [...], "text", "prompt_tokens", "backend"}; tokens
are bytes of UTF-8 (the model's vocabulary is the 256 byte values).

Served through the OpenAI-compatible API (a request with a "model"): the
request's JSON is the input. The prompt is "prompt", or the chat
"messages" as "ROLE: CONTENT\n" each, then "assistant: "; the weights are
"weights" if given, else the model's name; "max_completion_tokens" or
"max_tokens" (default 16) bound the answer. Each token is emitted as it is
chosen (one byte: the sidecar joins UTF-8), and the returned JSON is
{"finish_reason": "length", "usage": {"prompt_tokens",
"completion_tokens"}} (a byte model has no stop token).

One forward pass runs the prompt's tokens together (the prefill), then one
pass per new token reuses the keys and values cached per layer. Each layer
is RMSNorm, q/k/v projections (`gemm`), rotary positions (`rope`), the
new keys and values appended to the cache (`copy`), causal grouped-query
`attention`, the output projection added onto the residual stream (`gemm`
with beta = 1), RMSNorm, the SwiGLU feed-forward (`gemm`, `swiglu`,
`gemm` with beta = 1). ../reference.py is the same model in numpy.

Build: examples/guests/build.sh (componentize-py) makes target/guests/tiny-lm-py.wasm.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import gpu, job

Buf, F32, U32 = gpu.KernelArg_Buf, gpu.KernelArg_F32, gpu.KernelArg_U32


def launch(kernel, *args):
    wrapped = []
    for a in args:
        if isinstance(a, gpu.Buffer):
            wrapped.append(Buf(a))
        elif isinstance(a, float):
            wrapped.append(F32(a))
        else:
            wrapped.append(U32(a))
    gpu.launch(kernel, wrapped)


class Model:
    def __init__(self, name: str):
        meta = dict(gpu.weights_metadata(name))
        if meta.get("architecture") != "spillway-tiny-lm":
            raise Err(f"weights {name!r} are not a spillway-tiny-lm model: {meta.get('architecture')!r}")
        for key in ("vocab", "dim", "layers", "heads", "kv_heads", "head_dim", "ffn", "max_seq"):
            setattr(self, key, int(meta[key]))
        self.theta, self.eps = float(meta["rope_theta"]), float(meta["norm_eps"])
        tensor = lambda t: gpu.weights(name, t)
        self.embed, self.norm, self.lm_head = tensor("embed"), tensor("norm"), tensor("lm_head")
        names = ("attn_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w_gate", "w_up", "w_down")
        self.blocks = [{n: tensor(f"layers.{i}.{n}") for n in names} for i in range(self.layers)]
        seq, q_width, kv_width = self.max_seq, self.heads * self.head_dim, self.kv_heads * self.head_dim
        new = gpu.Buffer.create
        self.k_cache = [new(seq * kv_width) for _ in range(self.layers)]
        self.v_cache = [new(seq * kv_width) for _ in range(self.layers)]
        self.ids, self.x, self.h = new(seq), new(seq * self.dim), new(seq * self.dim)
        self.q, self.att = new(seq * q_width), new(seq * q_width)
        self.k, self.v = new(seq * kv_width), new(seq * kv_width)
        self.gate, self.up = new(seq * self.ffn), new(seq * self.ffn)
        self.last, self.logits = new(self.dim), new(self.vocab)

    def forward(self, tokens: list, pos0: int) -> list:
        """The logits after the last of `tokens`, which sit at pos0, pos0+1, ..."""
        rows, dim, hd = len(tokens), self.dim, self.head_dim
        q_width, kv_width = self.heads * hd, self.kv_heads * hd
        self.ids.write(0, [float(t) for t in tokens])
        launch("embedding", self.embed, self.ids, self.x, rows, self.vocab, dim)
        for b, k_cache, v_cache in zip(self.blocks, self.k_cache, self.v_cache):
            launch("rmsnorm", self.x, b["attn_norm"], self.h, rows, dim, self.eps)
            gpu.gemm(rows, q_width, dim, 1.0, self.h, b["wq"], 0.0, self.q)
            gpu.gemm(rows, kv_width, dim, 1.0, self.h, b["wk"], 0.0, self.k)
            gpu.gemm(rows, kv_width, dim, 1.0, self.h, b["wv"], 0.0, self.v)
            launch("rope", self.q, rows, self.heads, hd, pos0, self.theta)
            launch("rope", self.k, rows, self.kv_heads, hd, pos0, self.theta)
            launch("copy", self.k, k_cache, rows * kv_width, 0, pos0 * kv_width)
            launch("copy", self.v, v_cache, rows * kv_width, 0, pos0 * kv_width)
            scale = float(hd) ** -0.5
            launch("attention", self.q, k_cache, v_cache, self.att,
                   rows, pos0 + rows, self.heads, self.kv_heads, hd, pos0, scale)
            gpu.gemm(rows, dim, q_width, 1.0, self.att, b["wo"], 1.0, self.x)
            launch("rmsnorm", self.x, b["ffn_norm"], self.h, rows, dim, self.eps)
            gpu.gemm(rows, self.ffn, dim, 1.0, self.h, b["w_gate"], 0.0, self.gate)
            gpu.gemm(rows, self.ffn, dim, 1.0, self.h, b["w_up"], 0.0, self.up)
            launch("swiglu", self.gate, self.up, self.gate, rows * self.ffn)
            gpu.gemm(rows, dim, self.ffn, 1.0, self.gate, b["w_down"], 1.0, self.x)
        launch("copy", self.x, self.last, dim, (rows - 1) * dim, 0)
        launch("rmsnorm", self.last, self.norm, self.h, 1, dim, self.eps)
        gpu.gemm(1, self.vocab, dim, 1.0, self.h, self.lm_head, 0.0, self.logits)
        return self.logits.read(0, self.vocab)


def argmax(values: list) -> int:
    return max(range(len(values)), key=values.__getitem__)


def generate(model: Model, prompt: list, max_tokens: int, on_token=None) -> list:
    """Greedy decoding: the prefill, then one pass per token, until
    max_tokens or the model's context is full."""
    if not 1 <= len(prompt) < model.max_seq:
        raise Err(f"the prompt must be 1 to {model.max_seq - 1} bytes; it is {len(prompt)}")
    logits, out = model.forward(prompt, 0), []
    while len(out) < max_tokens:
        out.append(argmax(logits))
        if on_token:
            on_token(out[-1])
        pos = len(prompt) + len(out) - 1
        if pos + 1 >= model.max_seq or len(out) == max_tokens:
            break
        logits = model.forward([out[-1]], pos)
    return out


def chat_prompt(messages: list) -> str:
    """The conversation as the model reads it: "ROLE: CONTENT\n" per
    message, then "assistant: " (a content given as parts keeps their text)."""
    lines = []
    for m in messages:
        content = m.get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        lines.append(f"{m.get('role', 'user')}: {content}\n")
    return "".join(lines) + "assistant: "


def openai(spec: dict) -> bytes:
    """A completion for the OpenAI-compatible front end."""
    if "messages" in spec:
        prompt = chat_prompt(spec["messages"])
    else:
        prompt = spec.get("prompt", "")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt else ""
    max_tokens = int(spec.get("max_completion_tokens") or spec.get("max_tokens") or 16)
    model = Model(spec.get("weights", spec["model"]))
    tokens = list(str(prompt).encode())
    emit = lambda token: job.emit(bytes([token]))
    out = generate(model, tokens, max_tokens, emit)
    usage = {"prompt_tokens": len(tokens), "completion_tokens": len(out)}
    return json.dumps({"finish_reason": "length", "usage": usage}).encode()


class WitWorld(wit_world.WitWorld):
    def run(self, input: bytes) -> bytes:
        try:
            spec = json.loads(input)
            if "model" in spec:
                try:
                    return openai(spec)
                except Err as e:
                    if isinstance(e.value, str):
                        raise
                    raise Err(f"gpu: {e.value.code.name.lower()}: {e.value.message}")
            prompt = list(spec["prompt"].encode())
            max_tokens = int(spec.get("max_tokens", 16))
            name = spec.get("weights", "tiny-lm")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise Err(f"input must be JSON with a prompt (and max_tokens, weights): {e}")
        try:
            out = generate(Model(name), prompt, max_tokens)
        except Err as e:
            if isinstance(e.value, str):
                raise
            raise Err(f"gpu: {e.value.code.name.lower()}: {e.value.message}")
        return json.dumps(
            {
                "tokens": out,
                "text": bytes(out).decode("utf-8", "replace"),
                "prompt_tokens": len(prompt),
                "backend": gpu.device_info().backend.name.lower(),
            }
        ).encode()
