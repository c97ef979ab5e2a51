"""The official `openai` Python client against a Spillway host, run by
cli/tests/openai.rs (which started the host and served the example model as
"tiny-lm"): models.list, chat and text completions with and without
streaming, each answer's text checked against the numpy reference's tokens
for the same prompt, and the client's own errors for an unknown model and a
bad key. Exits non-zero (with the assertion) on the first mismatch.

    python3 openai_client.py BASE_URL API_KEY WEIGHTS_FILE
"""

import os
import sys

from openai import AuthenticationError, NotFoundError, OpenAI

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "models", "tiny_lm"))
import reference  # noqa: E402

base_url, api_key, weights = sys.argv[1:4]
client = OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0)
N = 24


def expected(prompt: str) -> dict:
    want = reference.generate(weights, prompt.encode(), N)
    assert want["min_margin"] > 1e-3, f"{prompt!r} comes within {want['min_margin']} of a tie"
    return want


ids = [m.id for m in client.models.list()]
assert ids == ["tiny-lm"], ids

# Chat, whole and streamed.
messages = [{"role": "system", "content": "You are a pool."}, {"role": "user", "content": "Say something"}]
prompt = reference.chat_prompt(messages)
want = expected(prompt)
r = client.chat.completions.create(model="tiny-lm", messages=messages, max_tokens=N)
assert r.object == "chat.completion", r
assert r.choices[0].message.role == "assistant", r
assert r.choices[0].message.content == want["text"], (r.choices[0].message.content, want["text"])
assert r.choices[0].finish_reason == "length", r
assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prompt.encode()), N), r.usage
print(f"chat: {r.choices[0].message.content!r} (the reference's {N} tokens)")

stream = client.chat.completions.create(
    model="tiny-lm", messages=messages, max_tokens=N, stream=True, stream_options={"include_usage": True}
)
pieces, finish, usage = [], None, None
for chunk in stream:
    assert chunk.object == "chat.completion.chunk", chunk
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
text = "".join(pieces)
assert text == want["text"], (text, want["text"])
assert len([p for p in pieces if p]) > 1, f"the answer came in one piece: {pieces}"
assert finish == "length" and usage.completion_tokens == N, (finish, usage)
print(f"chat, streamed: {len([p for p in pieces if p])} pieces, the same text")

# Text completions, whole and streamed.
want = expected("Spillway ")
r = client.completions.create(model="tiny-lm", prompt="Spillway ", max_tokens=N)
assert r.choices[0].text == want["text"], (r.choices[0].text, want["text"])
assert r.usage.completion_tokens == N, r.usage
streamed = "".join(c.choices[0].text for c in client.completions.create(
    model="tiny-lm", prompt="Spillway ", max_tokens=N, stream=True) if c.choices)
assert streamed == want["text"], (streamed, want["text"])
print(f"completion, whole and streamed: {want['text']!r}")

# The client's own errors.
try:
    client.chat.completions.create(model="no-such-model", messages=messages, max_tokens=2)
    raise AssertionError("an unknown model was served")
except NotFoundError as e:
    assert e.code == "model_not_found", e
try:
    OpenAI(base_url=f"{base_url}/v1", api_key="swk_not_a_key", max_retries=0).models.list()
    raise AssertionError("a bad key was let in")
except AuthenticationError:
    pass
print("errors: NotFoundError for an unknown model, AuthenticationError for a bad key")
print("ok")
