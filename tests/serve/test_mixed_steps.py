"""`serve` on a `build --ragged` engine runs the Scheduler's mixed steps by itself: concurrent clients (greedy,
seeded, streamed, n = 2) get the replies of the same export's engine without --ragged (oracle: `Engine.generate` of
each request alone), echo's prompt logprobs those of the reference (1e-4), in one engine call per step."""

from __future__ import annotations

import threading

import numpy as np
import torch

from mixtral_trt.runtime.chat import chat_prompt
from mixtral_trt.runtime.scheduler import DEFAULT_MIXED_CHUNK
from support.serving import MODEL, openai_client, start

QUESTIONS = ["Hi", "What is a mixture of experts?", "Tell me a story about a dragon", "Why is the sky blue?"]


def test_concurrent_clients_on_mixed_steps(tiny_engine, tiny_ragged_engine, tiny_reference):
    eng = tiny_engine  # the oracle: the same export without --ragged
    settings = [dict(max_tokens=6 + 3 * n, stream=n % 2 == 1, seed=100 + n, temperature=0.9 if n % 2 else 0.0)
                for n in range(len(QUESTIONS))]
    expected = [eng.generate(chat_prompt(eng.tokenizer, [{"role": "user", "content": q}]), ignore_eos=True,
                             max_new_tokens=s["max_tokens"], temperature=s["temperature"], seed=s["seed"]).text
                for q, s in zip(QUESTIONS, settings, strict=True)]
    with start(tiny_ragged_engine) as served:
        assert served.scheduler._batch is not None and served.scheduler.prefill_chunk == DEFAULT_MIXED_CHUNK
        client = openai_client(served.url)
        replies: list[str | None] = [None] * len(QUESTIONS)
        barrier = threading.Barrier(len(QUESTIONS))

        def call(n):
            barrier.wait()
            got = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTIONS[n]}],
                                                 extra_body={"ignore_eos": True}, **settings[n])
            replies[n] = ("".join(c.choices[0].delta.content or "" for c in got if c.choices) if settings[n]["stream"]
                          else got.choices[0].message.content)

        threads = [threading.Thread(target=call, args=(n,)) for n in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert replies == expected
        assert max(served.scheduler.stats.batch_sizes) >= 2  # they shared steps

        text = "The quick brown fox jumps over"
        prompt = eng.tokenizer.encode(text)
        two = client.completions.create(model=MODEL, prompt=text, max_tokens=5, temperature=1.0, seed=7, n=2,
                                        logprobs=1, echo=True, extra_body={"ignore_eos": True})
    for i, choice in enumerate(sorted(two.choices, key=lambda c: c.index)):
        alone = eng.generate(prompt, max_new_tokens=5, temperature=1.0, seed=7 + i, ignore_eos=True)
        assert choice.text == text + alone.text
        with torch.no_grad():
            want = torch.log_softmax(tiny_reference(torch.tensor([prompt]))[0].double(), -1)  # [T, V]
        got = choice.logprobs.token_logprobs[1 : len(prompt)]
        ref = [float(want[j - 1, prompt[j]]) for j in range(1, len(prompt))]
        assert np.abs(np.array(got) - ref).max() <= 1e-4, (got, ref)
