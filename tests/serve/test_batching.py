"""Eight concurrent clients share engine steps, and each reply equals the same request served alone
(oracle: `Engine.generate` of that request by itself), greedy and seeded, plain and streamed."""

from __future__ import annotations

import threading

from mixtral_trt.runtime.chat import chat_prompt
from support.serving import MODEL, openai_client, start

QUESTIONS = ["Hi", "What is a mixture of experts?", "Bonjour, comment ça va ?", "Count to five.",
             "日本語で話しましょう", "Tell me a story about a dragon and a knight", "2 + 2 = ?", "Why is the sky blue?"]


def test_eight_concurrent_requests_each_equal_their_solo_reply(serve_engine, slow_engine):
    eng = serve_engine  # the oracle; the server runs slow_engine (same weights, 20 ms more per call, so the
    # eight requests certainly overlap)
    requests = []
    for n, question in enumerate(QUESTIONS):
        settings = dict(max_tokens=8 + 3 * n, stream=n % 2 == 1)
        settings |= dict(temperature=0) if n % 3 == 0 else dict(temperature=0.9, top_p=0.95, seed=100 + n)
        requests.append(([{"role": "user", "content": question}], settings))
    expected = []
    for messages, s in requests:
        sampling = {"temperature": s["temperature"], "top_p": s.get("top_p", 1.0), "seed": s.get("seed"),
                    "max_new_tokens": s["max_tokens"], "ignore_eos": True}
        expected.append(eng.generate(chat_prompt(eng.tokenizer, messages), **sampling).text)

    with start(slow_engine) as served:
        client = openai_client(served.url)
        replies: list[str | None] = [None] * len(requests)
        barrier = threading.Barrier(len(requests))

        def call(n):
            messages, s = requests[n]
            barrier.wait()
            got = client.chat.completions.create(model=MODEL, messages=messages, extra_body={"ignore_eos": True},
                                                 **s)
            if s["stream"]:
                replies[n] = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
            else:
                replies[n] = got.choices[0].message.content

        threads = [threading.Thread(target=call, args=(n,)) for n in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        sizes = served.scheduler.stats.batch_sizes
    for n, (got, want) in enumerate(zip(replies, expected, strict=True)):
        assert got == want, f"request {n} ({requests[n][1]}): {got!r} != alone {want!r}"
    assert max(sizes) >= 6, f"requests did not share steps: steps by batch size {sizes}"
