"""logprobs through the real `openai` client: chat `logprobs` / `top_logprobs` and completions `logprobs` / `echo`
in OpenAI's shapes, every figure equal (1e-4) to the log-softmax of the reference model's (mixtral_ref) logits
at the same position, streamed equal to non-streamed, the echoed prompt's first token null."""

from __future__ import annotations

import numpy as np

from mixtral_trt.runtime.chat import chat_prompt
from support.logprobs import reference_logprobs
from support.serving import MODEL, openai_client

TOL = 1e-4  # fp32 engine vs fp32 reference, in nats
MESSAGES = [{"role": "user", "content": "Name three colours."}]


def _token_bytes(engine) -> list[bytes]:
    return engine.tokenizer.token_bytes()


def _check_top(got: dict[bytes, float], ref_row: np.ndarray, k: int, tb: list[bytes], where: str) -> None:
    """`got`: token bytes -> logprob of the top tokens the server gave; equal to the reference's top k."""
    want = np.argsort(-ref_row, kind="stable")[:k]
    assert set(got) >= {tb[t] for t in want}, f"{where}: top tokens {sorted(got)} vs {[tb[t] for t in want]}"
    for t in want:
        err = abs(got[tb[t]] - ref_row[t])
        assert err < TOL, f"{where}: top token {t} logprob {got[tb[t]]:.6f} vs reference {ref_row[t]:.6f}"


def test_chat_logprobs_equal_the_reference_streamed_and_not(server, tiny_reference):
    client, eng = openai_client(server.url), server.engine
    prompt = chat_prompt(eng.tokenizer, MESSAGES)
    ids = eng.generate(prompt, max_new_tokens=8, ignore_eos=True).token_ids  # greedy: the server's tokens
    ref = reference_logprobs(tiny_reference, prompt + ids[:-1])
    tb = _token_bytes(eng)
    got = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, logprobs=True,
                                         top_logprobs=5, extra_body={"ignore_eos": True})
    content = got.choices[0].logprobs.content
    assert len(content) == len(ids) == 8
    for j, (entry, token) in enumerate(zip(content, ids, strict=True)):
        row = ref[len(prompt) - 1 + j]
        assert bytes(entry.bytes) == tb[token] and entry.token == tb[token].decode("utf-8", "backslashreplace")
        assert abs(entry.logprob - row[token]) < TOL, f"token {j}: {entry.logprob:.6f} vs {row[token]:.6f}"
        assert len(entry.top_logprobs) == 5
        assert [bytes(t.bytes) for t in entry.top_logprobs] == [tb[t] for t in np.argsort(-row, kind="stable")[:5]]
        _check_top({bytes(t.bytes): t.logprob for t in entry.top_logprobs}, row, 5, tb, f"token {j}")

    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0,
                                                 logprobs=True, top_logprobs=5, stream=True,
                                                 extra_body={"ignore_eos": True}))
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.model_dump() for e in streamed] == [e.model_dump() for e in content]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == got.choices[0].message.content

    plain = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0,
                                           logprobs=True, extra_body={"ignore_eos": True})
    assert [e.top_logprobs for e in plain.choices[0].logprobs.content] == [[]] * 4  # top_logprobs defaults to 0
    none = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=2, temperature=0)
    assert none.choices[0].logprobs is None


def test_completions_echo_gives_the_prompts_logprobs(server, tiny_reference):
    client, eng = openai_client(server.url), server.engine
    text = "The quick brown fox jumps over"
    prompt = eng.tokenizer.encode(text)
    ids = eng.generate(prompt, max_new_tokens=4, ignore_eos=True).token_ids
    ref = reference_logprobs(tiny_reference, prompt + ids[:-1])
    tb = _token_bytes(eng)
    got = client.completions.create(model=MODEL, prompt=text, max_tokens=4, temperature=0, logprobs=3, echo=True,
                                    extra_body={"ignore_eos": True})
    choice = got.choices[0]
    lp = choice.logprobs
    everything = prompt + ids
    assert choice.text == text + eng.tokenizer.decode(ids)
    assert lp.tokens == [tb[t].decode("utf-8", "backslashreplace") for t in everything]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # nothing predicts the first token
    assert lp.text_offset == np.cumsum([0] + [len(t) for t in lp.tokens[:-1]]).tolist()
    for t in range(1, len(everything)):
        row = ref[t - 1]
        assert abs(lp.token_logprobs[t] - row[everything[t]]) < TOL, f"position {t}"
        top = lp.top_logprobs[t]
        assert len(top) in (3, 4) and top[lp.tokens[t]] == lp.token_logprobs[t]  # the chosen token is always there
        _check_top({k.encode(): v for k, v in top.items()}, row, 3, tb, f"position {t}")
    assert got.usage.prompt_tokens == len(prompt) and got.usage.completion_tokens == 4

    chunks = list(client.completions.create(model=MODEL, prompt=text, max_tokens=4, temperature=0, logprobs=3,
                                            echo=True, stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == got.usage.model_dump()
    chunks = chunks[:-1]
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    joined: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for c in chunks:
        for key in joined:
            joined[key] += getattr(c.choices[0].logprobs, key) if c.choices[0].logprobs else []
    assert joined == {key: getattr(lp, key) for key in joined}

    # lm-eval's scoring request: ids, echo, the prompt's logprobs only (max_tokens 0), as vLLM allows
    scored = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, logprobs=1, echo=True,
                                       temperature=0).choices[0]
    assert scored.logprobs.token_logprobs[: len(prompt)] == lp.token_logprobs[: len(prompt)]
    assert len(scored.logprobs.tokens) == len(prompt) and scored.text == eng.tokenizer.decode(prompt)
    plain = client.completions.create(model=MODEL, prompt=text, max_tokens=4, temperature=0, logprobs=0,
                                      extra_body={"ignore_eos": True}).choices[0].logprobs
    assert plain.token_logprobs == lp.token_logprobs[len(prompt):] and plain.text_offset[0] == 0
    assert [list(t) for t in plain.top_logprobs] == [[tok] for tok in plain.tokens]  # k = 0: the chosen one only
